package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgdb"
)

// A process with its own embedded NATS server claims each database its services use, for as
// long as it runs. Two such processes on one database (a second `handoff` started with another
// data dir and other ports, say) would each publish the outbox rows they happen to relay to
// their own JetStream and consume only their own: orders' events, tickets and notifications
// split between two worlds, with no error anywhere. Processes that share one NATS (NATS_URL)
// take no claim: they are copies side by side, as DESIGN.md means them to be.
//
// The claim is a session-level advisory lock, held by a connection of its own: Postgres drops it
// when that session ends, however the process ends. Each claim connection's application_name
// carries this process's token, so that two URLs naming one database (a host name and an
// address) are known as one claim, not a conflict with ourselves.

// natsClaimKey is the advisory lock's key pair (pg_try_advisory_lock(int4, int4)): "HAND", "NATS".
const (
	natsClaimClass = 0x48414e44
	natsClaimObj   = 0x4e415453
)

// natsClaimRetry is how often a claim lost with its connection (the database restarted) is
// taken again.
var natsClaimRetry = 5 * time.Second // a variable for tests

// natsClaimPingTimeout bounds the check that a claim's connection is alive.
const natsClaimPingTimeout = 30 * time.Second

type natsClaim struct {
	url   string
	token string // this process's, in the claim connections' application_name
	conn  *pgx.Conn
	held  bool // this claim has held the lock itself (not through another URL's claim)
}

// errClaimedElsewhere is a claim held by another process.
var errClaimedElsewhere = errors.New("claimed by another process")

// claimDatabases claims, for this process's embedded NATS, every database its services use, and
// keeps the claims until shutdown.
func (s *system) claimDatabases(ctx context.Context) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("claim token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	seen := map[string]bool{}
	// Every part with an outbox or a consumer: the services and the pos-adapter.
	parts := []string{TargetPOSAdapter}
	for _, spec := range services() {
		parts = append(parts, spec.name)
	}
	for _, part := range parts {
		url := s.databaseURLFor(part)
		if !s.cfg.runs(part) || url == "" || seen[url] {
			continue
		}
		seen[url] = true
		c := &natsClaim{url: url, token: token}
		if err := c.take(ctx); err != nil {
			if errors.Is(err, errClaimedElsewhere) {
				return fmt.Errorf("the database of %s %w; "+
					"two processes each with its own embedded NATS on one database would split its events between them: "+
					"stop the other, give this one its own database (DATABASE_URL), or run both against one NATS server (NATS_URL)",
					part, err)
			}
			return fmt.Errorf("claim the database of %s for this process's embedded NATS: %w", part, err)
		}
		if c.conn == nil {
			continue // held by this process's claim of another URL, which keeps it
		}
		s.onClose(func(ctx context.Context) error { c.close(ctx); return nil })
		s.addLoop(part+" database claim", c.keep(s))
	}
	return nil
}

// take connects and takes the lock. A lock held by a session of this same process (another URL
// naming this database) counts as taken, with c.conn left nil. A lock let go while its holder
// is looked up (another process stopping) is tried again.
func (c *natsClaim) take(ctx context.Context) error {
	for range 3 {
		if err := c.try(ctx); !errors.Is(err, errLetGo) {
			return err
		}
	}
	return fmt.Errorf("take the claim: %w three times", errLetGo)
}

// errLetGo is a claim found held and then not, while its holder was looked up.
var errLetGo = errors.New("held, then let go")

func (c *natsClaim) try(ctx context.Context) error {
	cfg, err := pgdb.ConnConfig(c.url)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "handoff-nats-claim-" + c.token
	cfg.ConnectTimeout = dbCheckTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(natsClaimClass), int32(natsClaimObj)).Scan(&ok); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("take the claim: %w", err)
	}
	if ok {
		c.conn, c.held = conn, true
		return nil
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var holder, addr string
	var pid int32
	var since time.Time
	err = conn.QueryRow(ctx, `SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'a local socket'), a.backend_start
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2`,
		int64(natsClaimClass), int64(natsClaimObj)).Scan(&pid, &holder, &addr, &since)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errLetGo
	case err != nil:
		return fmt.Errorf("find the claim's holder: %w", err)
	case holder == cfg.RuntimeParams["application_name"] && !c.held:
		return nil // ours, through another URL
	case holder == cfg.RuntimeParams["application_name"]:
		// This claim's own session from before its connection was given up (a network cut):
		// the server has not noticed it gone. Ended, and the claim taken again.
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1, 5000)`, pid); err != nil { // waits until it has ended
			return fmt.Errorf("end this claim's stale session (backend %d): %w", pid, err)
		}
		return errLetGo
	}
	return fmt.Errorf("is %w (Postgres backend %d, from %s since %s)", errClaimedElsewhere, pid, addr, since.Format(time.RFC3339))
}

// keep takes the claim again whenever its connection is lost (the database restarted), until
// ctx ends. Meanwhile another process may have taken it: that is logged as the error it is.
func (c *natsClaim) keep(s *system) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(natsClaimRetry)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if c.conn != nil {
				// Generous: a ping cut short closes the connection, and with it the claim.
				pctx, cancel := context.WithTimeout(ctx, natsClaimPingTimeout)
				err := c.conn.Ping(pctx)
				cancel()
				if err == nil || ctx.Err() != nil {
					continue
				}
				_ = c.conn.Close(context.WithoutCancel(ctx))
				c.conn = nil
			}
			if err := c.take(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("embedded NATS: cannot claim the database again", "err", err)
			} else if err == nil {
				s.log.Info("embedded NATS: database claimed again")
			}
		}
	}
}

func (c *natsClaim) close(ctx context.Context) {
	if c.conn != nil {
		_ = c.conn.Close(ctx)
	}
}
