package fulfilment_test

import (
	"maps"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
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
