package stack

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// readiness turns the health of every server of this process NOT_SERVING while a dependency it
// cannot work without is down (NATS, a service's PostgreSQL), and SERVING again once all are
// back. A load balancer's or Kubernetes' readiness probe (grpc.health.v1 on each port) then
// takes the copy out of rotation instead of sending it calls that can only fail. Liveness
// (/healthz) stays ok: a restart would not bring the dependency back.
type readiness struct {
	log     *slog.Logger
	mu      sync.Mutex
	down    map[string]error // dependency → why it is down
	servers []servingSetter
	// starting is set until the start's last steps (the demo chain's load) are done: a probe
	// that waits for SERVING, not the ready line, must not find a chain without its stores.
	starting bool
}

// servingSetter is a server whose health readiness sets.
type servingSetter interface{ SetServing(serving bool) }

// add has readiness set s's health, now and on every change.
func (r *readiness) add(s servingSetter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.servers = append(r.servers, s)
	s.SetServing(r.serving())
}

// serving is whether the servers report SERVING; r.mu is held.
func (r *readiness) serving() bool { return len(r.down) == 0 && !r.starting }

// setStarting marks the start as under way (true) or done (false).
func (r *readiness) setStarting(starting bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.serving()
	r.starting = starting
	r.changed(was)
}

// changed tells the servers the status, if it is not was; r.mu is held.
func (r *readiness) changed(was bool) {
	if now := r.serving(); now != was {
		for _, s := range r.servers {
			s.SetServing(now)
		}
	}
}

// set records dependency dep as down (err) or up (nil).
func (r *readiness) set(dep string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.serving()
	if err != nil {
		if r.down == nil {
			r.down = map[string]error{}
		}
		if _, known := r.down[dep]; !known {
			r.log.Warn("a dependency is down: health NOT_SERVING until it is back", "dependency", dep, "err", err)
		}
		r.down[dep] = err
	} else if _, known := r.down[dep]; known {
		delete(r.down, dep)
		r.log.Info("a dependency is back", "dependency", dep, "still_down", slices.Sorted(maps.Keys(r.down)))
	}
	r.changed(was)
}

// How a service's PostgreSQL is watched: pinged every dbCheckEvery, each ping given
// dbCheckTimeout (a pool busy under load answers within it), down after dbDownAfter failures
// in a row, so a moment's stall does not take every copy out of rotation at once.
const (
	dbCheckEvery   = 5 * time.Second
	dbCheckTimeout = 5 * time.Second
	dbDownAfter    = 2
)

// watchDatabase is a loop that keeps readiness told whether pool's database answers.
func (s *system) watchDatabase(dep string, pool *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(dbCheckEvery)
		defer t.Stop()
		fails := 0
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(ctx, dbCheckTimeout)
			err := pool.Ping(pctx)
			cancel()
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil:
				fails = 0
				s.readiness.set(dep, nil)
			default:
				if fails++; fails >= dbDownAfter {
					s.readiness.set(dep, err)
				}
			}
		}
	}
}

// natsDown and natsBack keep readiness told of the NATS connection. Back, the streams are
// declared again: a server that came back without its JetStream store (a pod without its
// volume, a store reset) has none, and every relay and consumer would fail until a restart.
func (s *system) natsDown(err error) {
	if err == nil {
		err = errors.New("disconnected")
	}
	s.readiness.set("NATS", err)
}

func (s *system) natsBack() {
	s.readiness.set("NATS", nil)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StartWait)
		defer cancel()
		if err := s.ensureStreams(ctx); err != nil {
			s.log.Error("declaring the JetStream streams again after NATS came back failed; events wait until they exist", "err", err)
		}
	}()
}
