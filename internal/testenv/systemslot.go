package testenv

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SystemSlots is how many tests, across every test binary using one PostgreSQL server, may hold
// a fresh database (FreshDatabaseURL: a whole Handoff system, in-process or spawned) at once. A
// whole system takes 25 to 40 connections even with pools of TestPoolConns (each service's
// pool, its health check, the relays' LISTEN connections, the embedded NATS's claim), and make
// test runs packages side by side: three or four systems at once passed a stock server's 100
// connections ("too many clients already"), which failed tests at random.
const SystemSlots = 2

// slotLockClass is the first key of the advisory locks that are the slots (the second is the
// slot's number), taken in the server's maintenance database, which every binary shares.
const slotLockClass = 0x68_6f_74 // "hot"

// slots are the slots this binary holds, by top-level test: a test that makes several fresh
// databases (two systems side by side) holds one slot, so two such tests never wait for each
// other's second.
var slots = struct {
	sync.Mutex
	held map[string]*slot
}{held: map[string]*slot{}}

type slot struct {
	conn  *pgx.Conn // holds the advisory lock; the server ends it with the session
	users int
}

// systemSlotWait bounds the wait for a slot: a slot is held for one test's life.
const systemSlotWait = 8 * time.Minute

// takeSystemSlot holds one of SystemSlots for t's top-level test until t ends, waiting while
// others hold them all.
func takeSystemSlot(t testing.TB, serverURL string) {
	t.Helper()
	name, _, _ := strings.Cut(t.Name(), "/")
	slots.Lock()
	if s := slots.held[name]; s != nil {
		s.users++
		slots.Unlock()
		t.Cleanup(func() { releaseSystemSlot(name) })
		return
	}
	slots.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), systemSlotWait)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("testenv: connect to take a system slot: %v", err)
	}
	for {
		for i := range SystemSlots {
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(slotLockClass), int32(i)).Scan(&got); err != nil {
				_ = conn.Close(context.Background())
				t.Fatalf("testenv: take a system slot: %v", err)
			}
			if got {
				slots.Lock()
				slots.held[name] = &slot{conn: conn, users: 1}
				slots.Unlock()
				t.Cleanup(func() { releaseSystemSlot(name) })
				return
			}
		}
		select {
		case <-ctx.Done():
			_ = conn.Close(context.Background())
			t.Fatalf("testenv: no system slot free within %v: %d whole systems run at once on this server, and other tests held them", systemSlotWait, SystemSlots)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// releaseSystemSlot gives the slot of the top-level test name back once its last user is done.
func releaseSystemSlot(name string) {
	slots.Lock()
	defer slots.Unlock()
	s := slots.held[name]
	if s == nil {
		return
	}
	if s.users--; s.users > 0 {
		return
	}
	delete(slots.held, name)
	_ = s.conn.Close(context.Background()) // the session's end releases the lock
}
