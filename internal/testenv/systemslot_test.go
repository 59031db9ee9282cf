package testenv

import (
	"context"
	"fmt"
	"strings"
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
