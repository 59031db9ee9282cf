package orderkey_test

import (
	"testing"

	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
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

// ConfirmSeq holds only while an order's one way on from PENDING that is not an end is its
// confirmation, with nothing recorded in between: an action that kept an order PENDING, or
// another that moved it on, would put the confirmation at another entry, and the pos-adapter
// would raise a second NEW_ORDER for it (see ConfirmedEventID).
func TestConfirmSeqIsTheConfirmationsHistoryEntry(t *testing.T) {
	if orderkey.ConfirmSeq != 2 {
		t.Fatalf("ConfirmSeq %d, want 2: the creation entry (1), then the confirmation", orderkey.ConfirmSeq)
	}
	for _, a := range domain.Actions {
		to, _, err := domain.Decide(domain.Pending, a)
		if err != nil || domain.Final(to) {
			continue
		}
		if a != domain.Confirm || to != domain.Confirmed {
			t.Errorf("action %d takes a PENDING order to %s: only the confirmation may, or its history entry is not ConfirmSeq", a, to)
		}
	}
}
