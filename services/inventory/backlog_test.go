package inventory_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/services/inventory"
)

// With no sweeper running, a hold past its deadline shows in the backlog gauge for as long as
// it stays open (what the HandoffHoldsPastDeadline alert watches); a sweep puts it back to
// zero. Holds not yet due count nothing.
func TestBacklogShowsHoldsLeftOpenPastTheirDeadline(t *testing.T) {
	e := newEnv(t) // no sweeper
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "SCONE", 10, 0)
	gauges := backlog.New(e.pool, e.schema, inventory.Backlog(), nil)
	overdue := func() float64 {
		t.Helper()
		v, err := gauges.Read(e.ctx())
		if err != nil {
			t.Fatalf("read the backlog: %v", err)
		}
		return v["handoff_inventory_holds_overdue_seconds"]
	}

	e.mustReserve(order("later", "s1", "SCONE", 1)) // its deadline is far off
	short := order("short", "s1", "SCONE", 2)
	short.ExpireTime = timestamppb.New(time.Now().Add(300 * time.Millisecond))
	e.mustReserve(short)
	if got := overdue(); got != 0 {
		t.Errorf("no hold past its deadline: %v s overdue, want 0", got)
	}
	time.Sleep(800 * time.Millisecond)
	if got := overdue(); got < 0.4 || got > 60 {
		t.Errorf("a hold 500 ms past its deadline and no sweeper: %v s overdue, want at least 0.4", got)
	}
	if n, err := e.copies[0].SweepExpiredHolds(e.ctx()); err != nil || n != 1 {
		t.Fatalf("sweep: %d released, %v; want 1", n, err)
	}
	if got := overdue(); got != 0 {
		t.Errorf("after the sweep: %v s overdue, want 0", got)
	}
}
