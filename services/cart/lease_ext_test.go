package cart_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
)

// A double tap: the first request starts the lease and is pricing; the second, with the same
// key, joins the lease and is placing the order. The first then fails (its catalog copy
// stuck). It must not open the cart: an edit accepted now would be lost when the second marks
// the cart checked out with the lines it claimed, and a checkout with another key would place
// a second order for the cart.
func TestAFailingFirstRequestLeavesTheLeaseToARetryThatJoinedIt(t *testing.T) {
	e := newEnv(t, func(c *cart.Config) { c.CacheTTL = -1 }) // every pricing asks the catalog
	sku, _ := e.sku(0)
	sku2, _ := e.sku(1)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	// The catalog: the first pricing hangs, then fails; the others are answered.
	if err := e.catRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	firstAsked, failFirst := make(chan struct{}), make(chan struct{})
	var catalogCalls atomic.Int32
	e.serveNATS("catalog", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, catalog.SubjectBatchGetVariants, func(ctx context.Context, req *catalogv1.BatchGetVariantsRequest) (*catalogv1.BatchGetVariantsResponse, error) {
			if catalogCalls.Add(1) == 1 {
				close(firstAsked)
				<-failFirst
				return nil, status.Error(codes.Unavailable, "catalog copy stuck")
			}
			vs, err := e.catalog.BatchGetVariants(ctx, req.GetSkus())
			if err != nil {
				return nil, err
			}
			return &catalogv1.BatchGetVariantsResponse{Variants: vs}, nil
		})
	})
	// Fulfilment: the first place_order (the retry's) is held; any other is an order of its own.
	placing, release := make(chan struct{}), make(chan struct{})
	var places atomic.Int32
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(_ context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			if places.Add(1) == 1 {
				close(placing)
				<-release
			}
			return &fulfilmentv1.PlaceOrderResponse{Order: &fulfilmentv1.Order{Id: "order-" + req.GetIdempotencyKey(), CartId: req.GetCartId(),
				State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}}, nil
		})
	})

	first := make(chan error, 1)
	go func() {
		_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-double-tap"})
		first <- err
	}()
	<-firstAsked
	retry := make(chan *cartv1.CheckoutResponse, 1)
	go func() {
		res, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-double-tap"})
		if err != nil {
			t.Errorf("the retry: %v", err)
		}
		retry <- res
	}()
	<-placing
	close(failFirst)
	if err := <-first; status.Code(err) != codes.Unavailable {
		t.Fatalf("the first request: %v, want Unavailable from its catalog", err)
	}

	_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku2, Quantity: 1})
	wantCode(t, "an edit while the retry places the order", err, codes.Aborted)
	_, err = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-another-one"})
	wantCode(t, "a checkout with another key while the retry places the order", err, codes.Aborted)

	close(release)
	if r := <-retry; r.GetOrder().GetId() != "order-key-double-tap" {
		t.Fatalf("the retry answered order %q", r.GetOrder().GetId())
	}
	got := e.get("alice", c.GetId())
	if got.GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetOrderId() != "order-key-double-tap" || len(got.GetLines()) != 1 || places.Load() != 1 {
		t.Fatalf("cart %v after %d place_order calls; want checked out as the retry's order with its one line, one order placed", got, places.Load())
	}
}

// A retry with the same key while the first request places the order, after the product was
// archived: the order under the key may exist (priced before the archive), so the retry is
// told to retry (Unavailable), not NotFound; once the order is there, a retry gets it.
func TestARetryRefusedByTodaysCatalogIsAnsweredFromItsKeysOrder(t *testing.T) {
	e := newEnv(t)
	var placed atomic.Bool
	h := e.holdCheckout(nil)
	e.serveNATS("fulfilment-find", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "find_checkout_order"), func(_ context.Context, req *fulfilmentv1.FindCheckoutOrderRequest) (*fulfilmentv1.FindCheckoutOrderResponse, error) {
			if !placed.Load() {
				return nil, status.Error(codes.NotFound, "no order under this key")
			}
			return &fulfilmentv1.FindCheckoutOrderResponse{Order: &fulfilmentv1.Order{Id: "order-1", CartId: req.GetCartId(), State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}}, nil
		})
	})
	if _, err := e.catalogAdmin.ArchiveProduct(t.Context(), &catalogv1.ArchiveProductRequest{ProductId: e.productOf(h.sku)}); err != nil {
		t.Fatal(err)
	}
	other := e.newCart("bob")
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { // the archive reached the cart's cache
		_, err := e.client.AddLine(e.as("bob"), &cartv1.AddLineRequest{CartId: other.GetId(), Sku: h.sku, Quantity: 1})
		if status.Code(err) != codes.NotFound {
			return status.Errorf(codes.Internal, "AddLine of the archived SKU: %v", err)
		}
		return nil
	})
	_, err := e.client.Checkout(h.ctx, &cartv1.CheckoutRequest{CartId: h.cartID, IdempotencyKey: "key-double-tap"})
	wantCode(t, "a retry while the order is placed", err, codes.Unavailable, "same key")

	// The order is there (written, its answer still on the way): a retry gets it.
	placed.Store(true)
	res, err := e.client.Checkout(h.ctx, &cartv1.CheckoutRequest{CartId: h.cartID, IdempotencyKey: "key-double-tap"})
	if err != nil || res.GetOrder().GetId() != "order-1" || res.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("a retry once the order exists: %v, %v; want order-1 and the cart checked out", res, err)
	}
	h.finish(t, e)
}

// A checkout is activity: a cart whose checkout was just rejected is not swept as abandoned
// because its last edit was long ago.
func TestACartJustCheckedOutIsNotSweptAsAbandoned(t *testing.T) {
	e := newEnv(t, func(c *cart.Config) { c.AbandonAfter = 3 * time.Second })
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(_ context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			return &fulfilmentv1.PlaceOrderResponse{Order: &fulfilmentv1.Order{Id: "order-rejected", CartId: req.GetCartId(), State: fulfilmentv1.OrderState_ORDER_STATE_REJECTED}}, nil
		})
	})
	time.Sleep(2 * time.Second) // the shopper looks at the cart a while
	res, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-rejected-1"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
		t.Fatalf("checkout: %v, %v", res, err)
	}
	time.Sleep(1500 * time.Millisecond) // the last edit is now older than AbandonAfter; the checkout is not
	if _, err := e.cart.DeleteAbandoned(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetCart(ctx, &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
		t.Fatalf("the cart was swept as abandoned 1.5 s after its checkout: %v", err)
	}
}

// A double tap that fulfilment refuses both times (the store closed): the last request to
// leave the lease opens the cart, so the shopper can change what the refusal asks for, at
// once rather than after the lease runs out.
func TestADoubleTapRefusedTwiceLeavesTheCartOpen(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	placing, release := make(chan struct{}), make(chan struct{})
	var places atomic.Int32
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(context.Context, *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			if places.Add(1) == 1 {
				close(placing)
				<-release
			}
			return nil, status.Error(codes.FailedPrecondition, "store is closed")
		})
	})
	checkout := func(out chan<- error) {
		_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-double-tap"})
		out <- err
	}
	first, second := make(chan error, 1), make(chan error, 1)
	go checkout(first)
	<-placing
	go checkout(second)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { // the second joined and was refused
		if places.Load() < 2 {
			return status.Error(codes.Internal, "the second request has not reached fulfilment")
		}
		return nil
	})
	close(release)
	for _, ch := range []chan error{first, second} {
		wantCode(t, "a refused checkout", <-ch, codes.FailedPrecondition, "store is closed")
	}
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.7, -122.3, 0)}); err != nil {
		t.Fatalf("both checkouts were refused, yet the cart cannot change: %v", err)
	}
}

// A checkout holds the lease under a key; a second request with that key but a stale
// expected_version gives up while its batched claim waits for a connection. Its batch then
// claims nothing for it, and it leaves nothing: the first checkout's lease stands. (The undo of
// a given-up claim once left the lease whatever the batch decided, and opened the cart while
// the first checkout was still placing its order.)
func TestAClaimGivenUpThatTookNothingLeavesNoLease(t *testing.T) {
	e := newEnv(t)
	c, version := e.cartToCheckOut("alice")
	const key = "key-of-both-requests"
	if _, err := e.cart.ClaimForCheckout(t.Context(), "alice", c.GetId(), key, 0); err != nil {
		t.Fatalf("the first checkout's claim: %v", err)
	}
	// Every connection of the cart's pool taken: the second claim's batch begins, then waits.
	var held []*pgxpool.Conn
	for range e.pool.Stat().MaxConns() {
		conn, err := e.pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := e.cart.ClaimForCheckout(ctx, "alice", c.GetId(), key, version-1)
	cancel()
	if err == nil {
		t.Fatal("a claim with a stale version succeeded")
	}
	for _, conn := range held {
		conn.Release()
	}
	time.Sleep(500 * time.Millisecond) // time for a wrong undo to be made
	var leased bool
	if err := e.pool.QueryRow(t.Context(), `SELECT checkout_until IS NOT NULL FROM carts WHERE id = $1`, c.GetId()).Scan(&leased); err != nil {
		t.Fatal(err)
	}
	if !leased {
		t.Fatal("the first checkout's lease was left by a request whose claim took nothing: the cart is open while that checkout places its order")
	}
}

// A retry that joins a checkout's lease near its end moves the lease on: it places its own order
// only now, and the lease must outlast that order's place_order and write. Left at the first
// claim's end, the lease could lapse first; the cart, settled with no order yet, would open to
// edits and another key's checkout while the retry's order landed: two orders of one cart.
func TestARetryJoiningALeaseNearItsEndMovesItOn(t *testing.T) {
	e := newEnv(t)
	c, _ := e.cartToCheckOut("alice")
	const key = "key-retried-late"
	if _, err := e.cart.ClaimForCheckout(t.Context(), "alice", c.GetId(), key, 0); err != nil {
		t.Fatalf("the first request's claim: %v", err)
	}
	// Time passing, compressed: the lease has a second left when the retry comes.
	if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET checkout_until = now() + interval '1 second' WHERE id = $1`, c.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cart.ClaimForCheckout(t.Context(), "alice", c.GetId(), key, 0); err != nil {
		t.Fatalf("the retry's claim: %v", err)
	}
	var left float64
	if err := e.pool.QueryRow(t.Context(), `SELECT extract(epoch FROM checkout_until - now()) FROM carts WHERE id = $1`, c.GetId()).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left < 30 {
		t.Fatalf("the lease has %.1f s left after a retry joined it; want at least the 30 s beyond the retry's own place_order", left)
	}
}
