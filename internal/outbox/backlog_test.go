package outbox_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// The outbox's backlog gauges see what no relay has taken: events committed while none runs
// are counted and the oldest one's age grows; once relayed, both are back at zero. A stuck
// relay does nothing, so only reading the table itself can tell.
func TestBacklogShowsEventsNoRelayHasTaken(t *testing.T) {
	e := setup(t)
	gauges := backlog.New(e.pool, "test", []backlog.Query{outbox.Backlog()}, nil)
	read := func() (events, age float64) {
		t.Helper()
		v, err := gauges.Read(t.Context())
		if err != nil {
			t.Fatalf("read the backlog: %v", err)
		}
		return v["handoff_outbox_backlog_events"], v["handoff_outbox_oldest_event_age_seconds"]
	}
	if events, age := read(); events != 0 || age != 0 {
		t.Fatalf("empty outbox: %v events, oldest %v s; want 0 and 0", events, age)
	}

	enqueue(t, e.pool, "espresso", "latte")
	enqueue(t, e.pool, "mocha")
	time.Sleep(200 * time.Millisecond)
	if events, age := read(); events != 3 || age < 0.2 || age > 60 {
		t.Errorf("3 events committed 200 ms ago, no relay: %v events, oldest %v s; want 3 and at least 0.2", events, age)
	}

	if _, err := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Flush(t.Context()); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if events, age := read(); events != 0 || age != 0 {
		t.Errorf("after relaying: %v events, oldest %v s; want 0 and 0", events, age)
	}
}
