package fulfilment_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// A change whose write finds its order written since it was read (updateOrder's 40001; here
// made so by MakeReadsStale, as a lock ever dropped would) writes nothing, and is decided
// again on the order as it is: a combined change's failure sends it alone, and alone it is
// tried again up to three times; then staff are told Aborted, and the order is as it was.
// Each change is made once: one history entry, one event.
func TestAChangeWhoseOrderWasWrittenSinceItsReadIsDecidedAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	id := e.placeAt("s1", "c1", "k", "LATTE-16", 1).GetId()
	history := func() int {
		res, err := e.orders.GetOrder(e.asCustomer("c1"), &fulfilmentv1.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatal(err)
		}
		return len(res.GetOrder().GetHistory())
	}
	before := history()

	// Together, refused; alone, through.
	fulfilment.MakeReadsStale(e.svc, 1)
	if got := e.accept("s1", id); got.GetState() != fulfilmentv1.OrderState_ORDER_STATE_PREPARING {
		t.Fatalf("accepted after a lost race: %s", got.GetState())
	}
	// Together and twice alone, refused; the third time alone, through.
	fulfilment.MakeReadsStale(e.svc, 3)
	if got := e.markReady("s1", id); got.GetState() != fulfilmentv1.OrderState_ORDER_STATE_READY {
		t.Fatalf("made ready after three lost races: %s", got.GetState())
	}
	if n := history(); n != before+2 {
		t.Fatalf("history has %d entries after an acceptance and a ready; want %d (each change once)", n, before+2)
	}
	e.waitEvents(id, "confirmed", "preparing", "ready")

	// Together and three times alone, refused: Aborted, nothing written.
	fulfilment.MakeReadsStale(e.svc, 4)
	_, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: id, Reason: "spilt"})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("a cancellation that lost every race: %v; want Aborted", err)
	}
	if st := e.stateOf(id); st != fulfilmentv1.OrderState_ORDER_STATE_READY || history() != before+2 {
		t.Fatalf("after an Aborted cancellation: %s, %d history entries; want READY as it was", st, history())
	}
	e.waitHolds(id, map[string]int{"open": 1})
	fulfilment.MakeReadsStale(e.svc, 0)
	if _, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: id, Reason: "spilt"}); err != nil {
		t.Fatalf("the cancellation tried again: %v", err)
	}
	e.waitHolds(id, map[string]int{"released": 1})
	e.waitEvents(id, "confirmed", "preparing", "ready", "cancelled")
	e.checkInvariants()
}
