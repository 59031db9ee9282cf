package checkout_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// A checkout answered PENDING (inventory not answering) marks its cart checked out. When the
// recovery loop later rejects the order (the stock gone meanwhile), the cart opens again, as
// after a checkout rejected at once (TestRejectedCheckoutLeavesTheCartOpenToChange): the
// shopper lowers the short line and checks out again, instead of building the cart anew.
func TestACartWhosePendingOrderIsRejectedLaterOpensAgain(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(2)
	c := e.filledCart("alice", 2, skus...)

	if err := e.invRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "pending-then-rejected"})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	if res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_PENDING || res.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("checkout with inventory away = %v, cart %v; want PENDING and the cart checked out", res.GetOrder().GetState(), res.GetCart().GetState())
	}
	orderID := res.GetOrder().GetId()

	// The stock is gone meanwhile; inventory comes back and the recovery loop rejects the order.
	e.setStock(skus[1], 1)
	e.serveNATS("inventory", e.inventory.RegisterNATS)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		o, err := e.orders.GetOrder(e.as("alice"), &fulfilmentv1.GetOrderRequest{OrderId: orderID})
		if err != nil {
			return err
		}
		if o.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
			return fmt.Errorf("order %s", o.GetOrder().GetState())
		}
		return nil
	})

	var got *cartv1.GetCartResponse
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error { // the rejected event heard
		var err error
		if got, err = e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
			return err
		}
		if st := got.GetCart().GetState(); st != cartv1.CartState_CART_STATE_OPEN {
			return fmt.Errorf("the cart of rejected order %s is %v", orderID, st)
		}
		return nil
	})
	line := got.GetCart().GetLines()[1]
	if _, err := e.carts.UpdateLine(e.as("alice"), &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: line.GetLineId(), Quantity: 1}); err != nil {
		t.Fatalf("lowering the short line: %v", err)
	}
	again, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "pending-then-rejected-2"})
	if err != nil || again.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("checking out again with the short line lowered: %v, %v; want CONFIRMED", again.GetOrder().GetState(), err)
	}
}
