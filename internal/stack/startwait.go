package stack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/pgdb"
)

// DefaultStartWait is how long a start waits for an external NATS or PostgreSQL that does not
// answer yet. Parts started together (compose, a Kubernetes rollout) come up in no set order:
// without a wait, each would exit and be restarted until its dependencies answer, and a part
// run by hand would not come back at all.
const DefaultStartWait = time.Minute

// untilAnswered runs try until it succeeds, fails in a way waiting cannot mend (retry false),
// or the start wait is over, pausing 250 ms and up to 5 s between tries, and saying once that
// it waits for what. The last try is made as the wait ends: what answers within it is taken.
func (s *system) untilAnswered(ctx context.Context, what string, try func() (retry bool, err error)) error {
	deadline := time.Now().Add(s.cfg.StartWait)
	pause := 250 * time.Millisecond
	for said := false; ; said = true {
		retry, err := try()
		left := time.Until(deadline)
		if err == nil || !retry || left <= 0 {
			return err
		}
		if !said {
			s.log.Warn("waiting for "+what+" to answer", "for_up_to", s.cfg.StartWait.Round(time.Second), "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(pause, left)):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// connectNATS connects to url, waiting while no server there answers; a server that answers
// and refuses (credentials, say) fails at once.
func (s *system) connectNATS(ctx context.Context, url string, opts ...nats.Option) (*nats.Conn, error) {
	var nc *nats.Conn
	err := s.untilAnswered(ctx, "NATS at "+RedactURL(url), func() (bool, error) {
		var err error
		nc, err = nats.Connect(url, opts...)
		return errors.Is(err, nats.ErrNoServers), err
	})
	return nc, err
}

// waitForPostgres waits while the server at url does not answer, or answers that it cannot
// take connections yet (starting up: crash recovery after a restart, a standby not yet
// consistent; or shutting down for a restart); one that answers otherwise, even with a refusal
// (a wrong password, a missing database), is left to the pools to report.
func (s *system) waitForPostgres(ctx context.Context, url string) error {
	cfg, err := pgdb.ConnConfig(url)
	if err != nil {
		return nil // the pool reports a bad URL without echoing it
	}
	what := fmt.Sprintf("PostgreSQL at %s:%d", cfg.Host, cfg.Port)
	return s.untilAnswered(ctx, what, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(cctx, cfg)
		if err == nil {
			_ = conn.Close(cctx)
			return false, nil
		}
		if pe, answered := errors.AsType[*pgconn.PgError](err); answered {
			if !notReady[pe.Code] {
				return false, nil
			}
			return true, fmt.Errorf("%s is not ready: %w", what, err)
		}
		return true, fmt.Errorf("%s does not answer: %w", what, err)
	})
}

// notReady are the SQLSTATEs of a server that will take connections in a moment: 57P03
// cannot_connect_now (starting up), 57P01 admin_shutdown and 57P02 crash_shutdown (going down
// for a restart).
var notReady = map[string]bool{"57P03": true, "57P01": true, "57P02": true}
