package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// A shopper cancelling while staff (in another copy) accept: exactly one wins, the loser is told
// FailedPrecondition, the holds are released once (cancel) or stay open (accept).
func TestCustomerCancelRacingAcceptInAnotherCopy(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 40)
	other := e.secondCopy()
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.placeAt("s1", fmt.Sprintf("c%d", i), "k", "LATTE-16", 1).GetId()
	}
	var wg sync.WaitGroup
	cancelErr, acceptErr := make([]error, n), make([]error, n)
	for i, id := range ids {
		wg.Go(func() {
			_, cancelErr[i] = e.orders.CancelOrder(e.asCustomer(fmt.Sprintf("c%d", i)), &fulfilmentv1.CancelOrderRequest{OrderId: id})
		})
		wg.Go(func() { _, acceptErr[i] = other.Accept(e.ctx, "s1", barista, id) })
	}
	wg.Wait()
	for i, id := range ids {
		c, a := status.Code(cancelErr[i]), status.Code(acceptErr[i])
		switch {
		case c == codes.OK && a == codes.FailedPrecondition:
			e.waitHolds(id, map[string]int{"released": 1})
		case a == codes.OK && c == codes.FailedPrecondition:
			e.waitHolds(id, map[string]int{"open": 1})
		default:
			t.Errorf("order %s: cancel %v, accept %v; want exactly one to win", id, cancelErr[i], acceptErr[i])
		}
	}
	e.checkInvariants()
}
