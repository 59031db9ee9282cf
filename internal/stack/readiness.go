package stack

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// stopping is set once a stop has begun (Config.DrainDelay).
	stopping bool
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
func (r *readiness) serving() bool { return len(r.down) == 0 && !r.starting && !r.stopping }

// setStopping turns the servers NOT_SERVING for good: a stop has begun.
func (r *readiness) setStopping() {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.serving()
	r.stopping = true
	r.changed(was)
}

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

// How a service's PostgreSQL is watched: pinged every dbCheckEvery on a connection of its own
// (through the service's pool, a ping would wait behind the work of a busy moment and take
// every copy out of rotation at once, the database answering all along), each ping and
// connection given dbCheckTimeout, down after dbDownAfter failures in a row.
const (
	dbCheckEvery   = 5 * time.Second
	dbCheckTimeout = 5 * time.Second
	dbDownAfter    = 2
)

// watchDatabase is a loop that keeps readiness told whether the database of pool answers.
func (s *system) watchDatabase(dep string, pool *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error {
		var conn *pgx.Conn // the check's own, kept between checks; nil after a failure
		defer func() {
			if conn != nil {
				_ = conn.Close(context.WithoutCancel(ctx))
			}
		}()
		check := func(ctx context.Context) error {
			if conn == nil {
				cfg := pool.Config().ConnConfig.Copy()
				cfg.ConnectTimeout = dbCheckTimeout
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					return err
				}
				conn = c
			}
			if err := conn.Ping(ctx); err != nil {
				_ = conn.Close(context.WithoutCancel(ctx))
				conn = nil
				return err
			}
			return nil
		}
		t := time.NewTicker(dbCheckEvery)
		defer t.Stop()
		fails := 0
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			cctx, cancel := context.WithTimeout(ctx, dbCheckTimeout)
			err := check(cctx)
			cancel()
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil || atConnectionLimit(err) && pool.Stat().TotalConns() > 0:
				// A server at its connection limit answers: it is full, not down, while the
				// service's own pool has connections to work with (none: this copy can do
				// nothing, and is not ready).
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

// atConnectionLimit reports whether err is PostgreSQL refusing a connection for its limit
// (server-wide or the role's): too_many_connections.
func atConnectionLimit(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53300" // too_many_connections
}

// natsDown (given the connection's error) and natsBack keep readiness told of the NATS
// connection. Back, the streams are
// declared again: a server that came back without its JetStream store (a pod without its
// volume, a store reset) has none, and every relay and consumer would fail until a restart.
func (s *system) natsDown(err error) {
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
