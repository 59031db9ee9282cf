package fulfilment_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// With fulfilment's loops stopped, the backlog gauges show the work they leave: an order's
// timer running late (the not-accepted escalation here), and a release that inventory, out of
// reach, has not carried out. Once the loops run and inventory answers, both are back at zero.
// These are what the HandoffOrderTimersLate and HandoffInventoryEffectsWaiting alerts watch.
func TestBacklogShowsLateTimersAndEffectsNotCarriedOut(t *testing.T) {
	e := newEnv(t, envOptions{noLoops: true, config: func(c *fulfilment.Config) { c.NotAcceptedAfter = 200 * time.Millisecond }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	gauges := backlog.New(e.pool, e.schema, fulfilment.Backlog(), nil)
	read := func() map[string]float64 {
		t.Helper()
		v, err := gauges.Read(e.ctx)
		if err != nil {
			t.Fatalf("read the backlog: %v", err)
		}
		return v
	}

	o := e.mustPlace(checkout("alice", "k1", "s1", line{"LATTE-16", 2}), confirmed)
	// Its confirmation recorded an extension of its holds for the effects worker, not running.
	if v := read(); v["handoff_fulfilment_timers_late_seconds"] != 0 || v["handoff_fulfilment_effects_backlog"] != 1 {
		t.Errorf("a fresh order: %v; want no timer late and its one effect waiting", v)
	}
	time.Sleep(700 * time.Millisecond)
	if late := read()["handoff_fulfilment_timers_late_seconds"]; late < 0.4 || late > 60 {
		t.Errorf("not accepted after 200 ms, 700 ms ago, no timer loop: timer %v s late, want at least 0.4", late)
	}

	_ = e.invRPC.Stop() // inventory out of reach: the cancel's release stays to do
	if _, err := e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId()}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if v := read(); v["handoff_fulfilment_effects_backlog"] != 2 || v["handoff_fulfilment_oldest_effect_age_seconds"] < 0.9 {
		t.Errorf("the extension and a release inventory could not take: %v; want 2 effects, the oldest at least 0.9 s old", v)
	}

	e.invRPC = e.serveInventory()
	e.run("fulfilment", e.svc.Run)
	testenv.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if v := read(); v["handoff_fulfilment_timers_late_seconds"] != 0 || v["handoff_fulfilment_effects_backlog"] != 0 || v["handoff_fulfilment_oldest_effect_age_seconds"] != 0 {
			return fmt.Errorf("loops running, inventory back: %v; want all 0", v)
		}
		return nil
	})
	e.waitHolds(o.GetId(), map[string]int{"released": 1})
}
