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
