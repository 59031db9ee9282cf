package fulfilment_test

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// Orders reaching each state are counted once, when the change commits: the business at a
// glance for an operator (placed, confirmed, rejected for want of stock, collected).
func TestOrdersReachingEachStateAreCounted(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 1)
	count := func() map[string]float64 {
		return testenv.CounterSums(t, "handoff_fulfilment_order_transitions_total", nil, "state")
	}
	before := count()
	for _, st := range []string{"pending", "confirmed", "preparing", "ready", "collected", "rejected", "cancelled", "expired"} {
		if _, ok := before[st]; !ok {
			t.Errorf("no %s series before any order reached it: a rate of it would have nothing to start from", st)
		}
	}

	o := e.mustPlace(checkout("alice", "k1", "s1", line{"LATTE-16", 1}), confirmed)
	e.mustPlace(checkout("bob", "k2", "s1", line{"LATTE-16", 1}), rejected) // the one latte is held
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	if _, err := e.handOver("s1", o.GetId(), e.codeOf("alice", o.GetId())); err != nil {
		t.Fatal(err)
	}

	after := count()
	got := map[string]float64{}
	for st := range maps.Keys(after) {
		if d := after[st] - before[st]; d != 0 {
			got[st] = d
		}
	}
	want := map[string]float64{"pending": 2, "confirmed": 1, "rejected": 1, "preparing": 1, "ready": 1, "collected": 1}
	if !maps.Equal(got, want) {
		t.Fatalf("orders counted by state %v; want %v", got, want)
	}
}

// An order left PENDING (inventory not answering) is an order placed: the pending series
// ("pending: placed") must count it, as it counts the rejection it later reaches.
func TestAnOrderLeftPendingIsCountedAsPlaced(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) { c.PendingGiveUp = 500 * time.Millisecond }})
	count := func() map[string]float64 {
		return testenv.CounterSums(t, "handoff_fulfilment_order_transitions_total", nil, "state")
	}
	before := count()
	o := e.mustPlace(checkout("gina", "k", "s1", line{"LATTE-16", 1}), pending)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != rejected {
			return fmt.Errorf("order is %s, want REJECTED after giving up", s)
		}
		return nil
	})
	after := count()
	placed, rej := after["pending"]-before["pending"], after["rejected"]-before["rejected"]
	if placed != 1 || rej != 1 {
		t.Fatalf("one order placed (left PENDING) then rejected: counted pending %v, rejected %v; want 1 and 1", placed, rej)
	}
}
