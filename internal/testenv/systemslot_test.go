package testenv

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// A test running two systems (two fresh databases) holds one slot, so that two such tests can
// never each hold one and wait for the other's; the slot's lock is held by one session of the
// server's and goes with its last user.
func TestATestHoldsOneSystemSlotHoweverManySystemsItRuns(t *testing.T) {
	DatabaseURL(t) // finds or starts the server
	pg.mu.Lock()
	serverURL := pg.serverURL
	pg.mu.Unlock()
	var pid uint32
	t.Run("two systems", func(t *testing.T) {
		takeSystemSlot(t, serverURL)
		takeSystemSlot(t, serverURL)
		slots.Lock()
		name, _, _ := strings.Cut(t.Name(), "/")
		s := slots.held[name]
		slots.Unlock()
		if s == nil || s.users != 2 {
			t.Fatalf("slot of the test: %+v; want one slot with 2 users", s)
		}
		pid = s.conn.PgConn().PID()
		if n := slotLocks(t, serverURL, pid); n != 1 {
			t.Fatalf("the slot's session holds %d slot locks, want 1", n)
		}
	})
	slots.Lock()
	left := len(slots.held)
	slots.Unlock()
	if left != 0 {
		t.Fatalf("%d slots held after their test ended", left)
	}
	// The server ends the session a moment after the client closes it.
	CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := slotLocks(t, serverURL, pid); n != 0 {
			return fmt.Errorf("the slot's lock is still held by session %d", pid)
		}
		return nil
	})
}

// slotLocks counts the slot locks session pid holds.
func slotLocks(t *testing.T, serverURL string, pid uint32) int {
	t.Helper()
	conn := Connect(t, serverURL)
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND pid = $2`,
		int64(slotLockClass), int64(pid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Parallel subtests of one test, each running a system, join one slot and give it back: before,
// two starting at once each took one when neither found the other's, and the first taken was
// never given back (two such leaks held every slot on the server).
func TestParallelSubtestsOfOneTestJoinOneSlot(t *testing.T) {
	DatabaseURL(t)
	pg.mu.Lock()
	serverURL := pg.serverURL
	pg.mu.Unlock()
	var (
		mu   sync.Mutex
		pids []uint32
	)
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"a", "b", "c"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				FreshDatabaseURL(t) // takes the slot
				name, _, _ := strings.Cut(t.Name(), "/")
				slots.Lock()
				s := slots.held[name]
				slots.Unlock()
				if s == nil || s.conn == nil {
					t.Fatal("the test's slot was given back while one of its subtests still ran")
				}
				mu.Lock()
				pids = append(pids, s.conn.PgConn().PID())
				mu.Unlock()
				time.Sleep(200 * time.Millisecond) // its system runs a while
			})
		}
	})
	// Every slot this binary took is given back (a leaked one stays held by a session of this
	// binary's, whichever subtest's entry it lost).
	CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		conn := Connect(t, serverURL)
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND l.classid = $1 AND a.application_name = $2`, int64(slotLockClass), slotHolderName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			return fmt.Errorf("this binary's sessions still hold %d slots after their tests ended (sessions that held one: %v)", n, pids)
		}
		return nil
	})
}
