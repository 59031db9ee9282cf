package testenv

import (
	"context"
	"fmt"
	"os"
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
	users int
	ready chan struct{} // closed once conn holds the lock, or err says why it never will
	conn  *pgx.Conn     // holds the advisory lock; the server ends it with the session
	err   error
}

// slotHolderName is the application_name of this binary's slot sessions: pg_stat_activity
// shows which test binary holds the slots.
var slotHolderName = fmt.Sprintf("testenv-slot-%d", os.Getpid())

// systemSlotWait bounds the wait for a slot: a slot is held for one test's life.
const systemSlotWait = 8 * time.Minute

// takeSystemSlot holds one of SystemSlots for t's top-level test until t ends, waiting while
// others hold them all. The test's entry is made before the wait, so that its parallel
// subtests join one slot instead of each taking one (the second's would never be given back).
func takeSystemSlot(t testing.TB, serverURL string) {
	t.Helper()
	name, _, _ := strings.Cut(t.Name(), "/")
	slots.Lock()
	s := slots.held[name]
	first := s == nil
	if first {
		s = &slot{ready: make(chan struct{})}
		slots.held[name] = s
	}
	s.users++
	slots.Unlock()
	t.Cleanup(func() { releaseSystemSlot(name, s) })
	if first {
		s.conn, s.err = lockSystemSlot(serverURL)
		close(s.ready)
	}
	<-s.ready
	if s.err != nil {
		t.Fatalf("testenv: %v", s.err)
	}
}

// lockSystemSlot connects to the server and takes a free slot's lock, waiting while there is
// none, up to systemSlotWait.
func lockSystemSlot(serverURL string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), systemSlotWait)
	defer cancel()
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return nil, fmt.Errorf("parse the server's URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = slotHolderName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to take a system slot: %w", err)
	}
	for {
		for i := range SystemSlots {
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(slotLockClass), int32(i)).Scan(&got); err != nil {
				_ = conn.Close(context.Background())
				return nil, fmt.Errorf("take a system slot: %w", err)
			}
			if got {
				return conn, nil
			}
		}
		select {
		case <-ctx.Done():
			_ = conn.Close(context.Background())
			return nil, fmt.Errorf("no system slot free within %v: %d whole systems run at once on this server, and other tests held them", systemSlotWait, SystemSlots)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// releaseSystemSlot gives s, the slot of the top-level test name, back once its last user is
// done.
func releaseSystemSlot(name string, s *slot) {
	slots.Lock()
	s.users--
	last := s.users == 0
	if last && slots.held[name] == s {
		delete(slots.held, name)
	}
	slots.Unlock()
	if last {
		<-s.ready // closed by then: each user waits for it before its test goes on
		if s.conn != nil {
			_ = s.conn.Close(context.Background()) // the session's end releases the lock
		}
	}
}
