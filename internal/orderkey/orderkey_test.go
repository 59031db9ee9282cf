package orderkey_test

import (
	"testing"

	"github.com/handoff-dev/handoff/internal/orderkey"
)

// The id is the same for every retry of one checkout, and differs by customer and by key (the
// parts are joined with a separator no key or customer id holds, so they cannot run together).
func TestOrderIDIsOneIDPerCustomerAndKey(t *testing.T) {
	id := orderkey.OrderID("alice", "k1")
	if id != orderkey.OrderID("alice", "k1") {
		t.Fatal("one checkout's id differs between two derivations")
	}
	for _, other := range [][2]string{{"bob", "k1"}, {"alice", "k2"}, {"alicek", "1"}, {"alice", "k1 "}} {
		if orderkey.OrderID(other[0], other[1]) == id {
			t.Errorf("checkout %q by %q has alice's k1 order id", other[1], other[0])
		}
	}
}
