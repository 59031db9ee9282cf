package cart_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// A double tap whose first request is slow: both requests, with one key, are answered the same
// PENDING order; the quick one marks the cart checked out, the order is rejected, the cart
// opens again and the shopper changes it. The slow request's mark comes last. It must not check
// the cart out again: the cart's lease under that key ended when the order was rejected, and
// the mark would put back the old lines over the shopper's edit and freeze the cart as a
// REJECTED order for ever.
func TestASlowDuplicatesMarkAfterItsOrderWasRejectedLeavesTheReopenedCartAlone(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	sku2, _ := e.sku(1)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	// Fulfilment answers every place_order with the key's one order, PENDING; the first answer
	// is held until release.
	placing, release := make(chan struct{}), make(chan struct{})
	var places atomic.Int32
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(_ context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			if places.Add(1) == 1 {
				close(placing)
				<-release
			}
			return &fulfilmentv1.PlaceOrderResponse{Order: &fulfilmentv1.Order{Id: "order-" + req.GetIdempotencyKey(), CartId: req.GetCartId(),
				State: fulfilmentv1.OrderState_ORDER_STATE_PENDING}}, nil
		})
	})
	const key = "key-slow-double-tap"
	slow := make(chan *cartv1.CheckoutResponse, 1)
	go func() {
		res, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: key})
		if err != nil {
			t.Errorf("the slow request: %v", err)
		}
		slow <- res
	}()
	<-placing
	quick, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: key})
	if err != nil || quick.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("the quick request: %v, %v; want the cart checked out", quick.GetCart().GetState(), err)
	}

	// The order is rejected: the cart opens again, and the shopper adds a line.
	if opened, err := e.cart.ReopenRejected(t.Context(), c.GetId(), "order-"+key); err != nil || !opened {
		t.Fatalf("opening the cart of the rejected order: %v, %v", opened, err)
	}
	edited := e.addLine("alice", c.GetId(), sku2, 1)

	close(release)
	if res := <-slow; res != nil && res.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN {
		t.Errorf("the slow request answered the cart %v; want it as it is, open", res.GetCart().GetState())
	}
	got := e.get("alice", c.GetId())
	if got.GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetOrderId() != "" || got.GetVersion() != edited.GetVersion() || len(got.GetLines()) != 2 {
		t.Fatalf("cart after the slow request's mark: %v, order %q, version %d, %d lines; want it open as edited, version %d, 2 lines",
			got.GetState(), got.GetOrderId(), got.GetVersion(), len(got.GetLines()), edited.GetVersion())
	}
}
