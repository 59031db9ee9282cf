package cart_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// A checkout whose order was made but whose answer was lost leaves the cart under a lease that
// lapses unsettled; nothing settles it until the shopper looks at the cart again. If they never
// do (the app was closed; the order reached them by e-mail), the abandoned-cart sweep must not
// take the cart of an existing order for an abandoned one: checked-out carts are kept.
func TestTheSweepKeepsACartWhoseLapsedCheckoutMadeAnOrder(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	order := &fulfilmentv1.Order{Id: "order-lost-answer", CartId: c.GetId(), State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}
	// Fulfilment makes the order, but its answer does not reach the cart in time.
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		if err := natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(context.Context, *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			return nil, status.Error(codes.Unavailable, "the answer was lost")
		}); err != nil {
			return err
		}
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "find_checkout_order"), func(_ context.Context, req *fulfilmentv1.FindCheckoutOrderRequest) (*fulfilmentv1.FindCheckoutOrderResponse, error) {
			if req.GetCartId() != order.GetCartId() {
				return nil, status.Error(codes.NotFound, "no order under that key")
			}
			return &fulfilmentv1.FindCheckoutOrderResponse{Order: order}, nil
		})
	})
	_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-lost-answer"})
	wantCode(t, "a checkout whose answer was lost", err, codes.Unavailable)
	// Bob's checkout failed the same way but made no order: his cart is abandoned like any other.
	b := e.newCart("bob")
	e.addLine("bob", b.GetId(), sku, 1)
	if _, err := e.client.SetPickup(e.as("bob"), &cartv1.SetPickupRequest{CartId: b.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.Checkout(e.as("bob"), &cartv1.CheckoutRequest{CartId: b.GetId(), IdempotencyKey: "key-no-order"})
	wantCode(t, "a checkout that made no order", err, codes.Unavailable)

	// 31 days on, nobody having looked at the carts: their leases lapsed long ago.
	if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET create_time = now() - interval '31 days', update_time = now() - interval '31 days',
		checkout_time = now() - interval '31 days', checkout_until = now() - interval '31 days' + interval '45 seconds' WHERE id = ANY($1)`,
		[]string{c.GetId(), b.GetId()}); err != nil {
		t.Fatal(err)
	}
	// Alice's lease was taken before cart's migration 00006 kept a checkout's time.
	if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET checkout_time = NULL WHERE id = $1`, c.GetId()); err != nil {
		t.Fatal(err)
	}
	sweeper := cart.New(cart.Config{Pool: e.pool, NATS: e.natsConn(), AbandonAfter: 30 * 24 * time.Hour})
	t.Cleanup(sweeper.Close)
	if n, err := sweeper.DeleteAbandoned(t.Context()); err != nil || n != 1 {
		t.Fatalf("DeleteAbandoned = %d, %v; want bob's cart deleted", n, err)
	}
	if _, err := e.client.GetCart(e.as("bob"), &cartv1.GetCartRequest{CartId: b.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("bob's abandoned cart after the sweep: %v; want NotFound", err)
	}
	// Settled by the sweep itself, not by the look below (a look settles a lapsed lease too).
	var state string
	if err := e.pool.QueryRow(t.Context(), `SELECT state FROM carts WHERE id = $1`, c.GetId()).Scan(&state); err != nil || state == "open" {
		t.Fatalf("alice's cart after the sweep: state %q, %v; want it settled as checked out", state, err)
	}
	res, err := e.client.GetCart(ctx, &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil || res.GetCart().GetOrderId() != order.GetId() || res.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("cart of order %s after the abandoned-cart sweep: %v, %v; want it kept, checked out as that order", order.GetId(), res.GetCart(), err)
	}
}
