package stack

import (
	"context"
	"testing"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// A claim whose connection was given up (a ping cut short by a network fault) while the server
// kept its session, and with it the lock, ends that session and takes the lock again: before,
// it took the stale session for another URL's claim of this process and reported the claim
// taken, holding nothing, again every retry.
func TestAClaimHeldByItsOwnStaleSessionIsTakenBack(t *testing.T) {
	url := testenv.FreshDatabaseURL(t)
	ctx := t.Context()
	c := &natsClaim{url: url, token: "stale0123456789a"}
	if err := c.take(ctx); err != nil || c.conn == nil {
		t.Fatalf("first claim: %v (connection %v)", err, c.conn)
	}
	stale := c.conn // its side is given up; the server keeps the session
	var stalePID uint32 = stale.PgConn().PID()
	c.conn = nil
	t.Cleanup(func() { _ = stale.Close(context.Background()) })

	if err := c.take(ctx); err != nil {
		t.Fatalf("taking the claim back: %v", err)
	}
	if c.conn == nil {
		t.Fatal("the claim was reported taken with no connection holding it")
	}
	t.Cleanup(func() { c.close(context.Background()) })
	var holder uint32
	// This database's claim: another system's on the same server (a test beside this one) takes
	// the same lock in its own database.
	if err := c.conn.QueryRow(ctx, `SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2`, int64(natsClaimClass), int64(natsClaimObj)).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if holder != c.conn.PgConn().PID() || holder == stalePID {
		t.Fatalf("the lock is held by backend %d; want the claim's new connection %d (the stale one was %d)", holder, c.conn.PgConn().PID(), stalePID)
	}
}
