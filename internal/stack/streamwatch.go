package stack

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/streams"
)

// streamCheckEvery is how often a process looks at its JetStream streams (one stream info
// request each): a stream deleted while every connection stayed up is declared again within
// about this long.
const streamCheckEvery = 5 * time.Second

// watchStreams is a loop that keeps the JetStream streams declared while NATS stays connected,
// and says when one was lost. The start and a reconnect declare them (natsBack), but a stream
// deleted with the connection up (an operator's `nats stream rm`, a reset to change a setting
// that cannot be edited) was declared by nobody: every relay round failed and every consumer
// failed to declare itself again until each process was restarted by hand. A stream found
// made anew since the last look (deleted and declared again, here or by another process, or a
// server back without its store) is logged as an error too: the events it held that a consumer
// had not read are gone from JetStream, and only what the services drive from Postgres (their
// timers, recovery and sweeps) repairs what they would have done.
func (s *system) watchStreams(ctx context.Context) error {
	created := map[string]time.Time{}
	t := time.NewTicker(streamCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.nc != nil && !s.nc.IsConnected() {
			continue // natsBack declares them when the connection is back
		}
		s.checkStreams(ctx, created)
	}
}

// checkStreams looks at each stream once, declares the topology again if one is missing, and
// logs a stream created anew since created (by name) last saw it.
func (s *system) checkStreams(ctx context.Context, created map[string]time.Time) {
	cctx, cancel := context.WithTimeout(ctx, streamCheckEvery)
	defer cancel()
	missing := false
	for _, sc := range streams.Topology(streams.Config{}) {
		st, err := s.js.Stream(cctx, sc.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			s.log.Error("JetStream stream missing (deleted, or its server lost its store): declaring it again; events it held that no consumer had read are lost, and what they would have done waits for the services' own timers and sweeps",
				"stream", sc.Name)
			missing = true
			delete(created, sc.Name)
		case err != nil:
			if ctx.Err() == nil {
				s.log.Warn("looking at a JetStream stream failed; looking again later", "stream", sc.Name, "err", err)
			}
		default:
			at := st.CachedInfo().Created
			if seen, ok := created[sc.Name]; ok && !at.Equal(seen) {
				s.log.Error("JetStream stream was created anew (deleted and declared again, or its server lost its store): events it held that no consumer had read are lost, and what they would have done waits for the services' own timers and sweeps",
					"stream", sc.Name, "was_created", seen, "created", at)
			}
			created[sc.Name] = at
		}
	}
	if missing {
		if err := streams.Ensure(cctx, s.js, streams.Config{Replicas: s.cfg.StreamReplicas, Logger: s.log}); err != nil && ctx.Err() == nil {
			s.log.Error("declaring the JetStream streams again failed; events wait until they exist", "err", err)
		}
	}
}
