package posadapter_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// The webhook gauge is how late the most overdue pending delivery is: deliveries due later
// (a receiver's retry backoff) and ended ones count nothing.
func TestBacklogShowsWebhookDeliveriesPastDue(t *testing.T) {
	pool := testenv.Pool(t, "", posadapter.Migrations())
	gauges := backlog.New(pool, "pos", posadapter.Backlog(), nil)
	late := func() float64 {
		t.Helper()
		v, err := gauges.Read(t.Context())
		if err != nil {
			t.Fatalf("read the backlog: %v", err)
		}
		return v["handoff_pos_webhooks_late_seconds"]
	}
	deliver := func(state, due string) {
		t.Helper()
		if _, err := pool.Exec(t.Context(), `INSERT INTO webhook_deliveries (id, store_id, ticket_id, state, next_attempt_time)
			VALUES ($1, 's1', $2, $3, now() + $4::interval)`, uuid.New(), uuid.New(), state, due); err != nil {
			t.Fatal(err)
		}
	}
	deliver("pending", "1 minute")  // a retry not yet due
	deliver("delivered", "-1 hour") // done
	deliver("failed", "-1 hour")    // given up
	if got := late(); got != 0 {
		t.Errorf("nothing pending is due: %v s late, want 0", got)
	}
	deliver("pending", "-90 seconds")
	if got := late(); got < 90 || got > 150 {
		t.Errorf("a pending delivery due 90 s ago: %v s late, want about 90", got)
	}
}

// A store's vendor POS that refuses every ticket keeps its deliveries pending and due later
// and later for as long as they are retried (72 h), so the lateness above stays at 0 and
// nothing reaches the dead letters for days: the store prepares none of those orders meanwhile.
// How long the oldest ticket still waiting for a vendor has waited shows it, whenever its next
// attempt is due; ended deliveries count nothing.
func TestBacklogShowsHowLongTheOldestUndeliveredTicketHasWaited(t *testing.T) {
	pool := testenv.Pool(t, "", posadapter.Migrations())
	gauges := backlog.New(pool, "pos", posadapter.Backlog(), nil)
	const name = "handoff_pos_webhook_oldest_undelivered_seconds"
	waited := func() float64 {
		t.Helper()
		v, err := gauges.Read(t.Context())
		if err != nil {
			t.Fatalf("read the backlog: %v", err)
		}
		got, ok := v[name]
		if !ok {
			t.Fatalf("/metrics serves no %s (it serves %v)", name, v)
		}
		return got
	}
	deliver := func(state, queued, due string) {
		t.Helper()
		if _, err := pool.Exec(t.Context(), `INSERT INTO webhook_deliveries (id, store_id, ticket_id, state, create_time, next_attempt_time)
			VALUES ($1, 's1', $2, $3, now() - $4::interval, now() + $5::interval)`, uuid.New(), uuid.New(), state, queued, due); err != nil {
			t.Fatal(err)
		}
	}
	deliver("delivered", "3 hours", "-3 hours")
	deliver("failed", "4 days", "-1 day")
	if got := waited(); got != 0 {
		t.Errorf("no ticket waits for a vendor: the oldest has waited %v s, want 0", got)
	}
	deliver("pending", "20 minutes", "1 minute") // refused for 20 minutes, its next try not yet due
	deliver("pending", "5 seconds", "0 seconds")
	if got := waited(); got < 1200 || got > 1260 {
		t.Errorf("a ticket refused by its vendor for 20 minutes: the oldest has waited %v s, want about 1200", got)
	}
}
