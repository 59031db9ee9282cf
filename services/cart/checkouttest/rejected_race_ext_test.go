package checkout_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// fulfilmentTimings overrides fulfilment's recovery timings in newEnv (zero: the defaults).
var fulfilmentTimings struct{ pendingAfter, pendingGiveUp time.Duration }

// tracedPool gives the cart a pool of its own whose statements tracer sees.
func tracedPool(t *testing.T, tracer pgx.QueryTracer) func(*cart.Config) {
	return func(c *cart.Config) {
		cfg := c.Pool.Config()
		cfg.ConnConfig.Tracer = tracer
		pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		c.Pool = pool
	}
}

// holdMark blocks the cart's first "mark checked out" statement until release is closed;
// with later set, the first once armed.
type holdMark struct {
	later   bool
	armed   atomic.Bool
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func (h *holdMark) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if (!h.later || h.armed.Load()) && strings.Contains(d.SQL, "SET state = 'checked_out'") {
		h.once.Do(func() { close(h.reached); <-h.release })
	}
	return ctx
}
func (h *holdMark) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A checkout answered PENDING whose order is rejected, and the rejected event handed to the
// cart, before the checkout has recorded the order on its cart (the mark held here): the event
// must not be lost on the cart still open under the checkout's lease. Once the mark lands, the
// cart opens again, as rejected.go promises for a PENDING order rejected later. (The event used
// to be recorded as processed and dropped, and the cart then stayed checked out as a REJECTED
// order for ever.)
func TestAnOrderRejectedBeforeItsCartIsMarkedStillOpensTheCart(t *testing.T) {
	fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 0, 0 })
	h := &holdMark{reached: make(chan struct{}), release: make(chan struct{})}
	var released sync.Once
	release := func() { released.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	e := newEnv(t, tracedPool(t, h))
	t.Cleanup(release) // before the env's own cleanups, which wait for the held statement
	skus := e.skus(1)
	c := e.filledCart("alice", 1, skus...)
	if err := e.invRPC.Stop(); err != nil { // inventory away: fulfilment answers PENDING
		t.Fatal(err)
	}
	type result struct {
		res *cartv1.CheckoutResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "pending-rejected-before-mark"})
		done <- result{res, err}
	}()
	select {
	case <-h.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the checkout never came to mark its cart")
	}
	// Fulfilment gives the PENDING order up; the cart's consumer is handed the rejected event.
	js, err := jetstream.New(testenv.NATSConn(t, e.nats))
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		cons, err := js.Consumer(t.Context(), streams.EventsStream, "cart-rejected-orders")
		if err != nil {
			return err
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.Delivered.Consumer == 0 {
			return errors.New("the rejected event not delivered to the cart yet")
		}
		return nil
	})
	// Time for the handler to be done with it (recorded, or asked again) before the mark lands.
	for range 40 {
		var n int
		if err := e.cartDB.QueryRow(t.Context(), `SELECT count(*) FROM processed_events WHERE consumer = 'cart-rejected-orders'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("checkout: %v", r.err)
	}
	t.Logf("checkout answered order %s %v, cart %v", r.res.GetOrder().GetId(), r.res.GetOrder().GetState(), r.res.GetCart().GetState())
	o, err := e.orders.GetOrder(e.as("alice"), &fulfilmentv1.GetOrderRequest{OrderId: r.res.GetOrder().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if o.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
		t.Fatalf("order %s is %v; want it given up (REJECTED)", o.GetOrder().GetId(), o.GetOrder().GetState())
	}
	testenv.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
		if err != nil {
			return err
		}
		if st := got.GetCart().GetState(); st != cartv1.CartState_CART_STATE_OPEN {
			return fmt.Errorf("order %s is REJECTED but its cart stays %v (order_id %q)", o.GetOrder().GetId(), st, got.GetCart().GetOrderId())
		}
		return nil
	})
	if _, err := e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatalf("changing the cart open again: %v", err)
	}
}

// interleave orders the cart's statements: the checkout's mark starts only once the rejected
// handler's first read of the cart has ended, and any later read of the handler waits until the
// mark has committed. So the mark lands between the handler's looking and its deciding.
type interleave struct {
	handlerRead, markDone chan struct{}
	o1, o2, o3, o4        sync.Once
}

type markKey struct{}
type handlerReadKey struct{}

func (h *interleave) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch {
	case strings.Contains(d.SQL, "SET state = 'checked_out'"):
		h.o1.Do(func() {
			select {
			case <-h.handlerRead:
			case <-time.After(30 * time.Second):
			}
		})
		return context.WithValue(ctx, markKey{}, true)
	case strings.Contains(d.SQL, "checkout_until > now()") && strings.Contains(d.SQL, "FROM carts WHERE id = $1"):
		// A second look at the cart by the handler (the lease): after the mark.
		if isClosed(h.handlerRead) {
			h.o2.Do(func() {
				select {
				case <-h.markDone:
				case <-time.After(30 * time.Second):
				}
			})
			return ctx
		}
		return context.WithValue(ctx, handlerReadKey{}, true)
	case strings.Contains(d.SQL, "order_id = NULL, checkout_until = NULL") && !isClosed(h.handlerRead):
		return context.WithValue(ctx, handlerReadKey{}, true)
	}
	return ctx
}

func (h *interleave) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(markKey{}) != nil {
		h.o3.Do(func() { close(h.markDone) })
	}
	if ctx.Value(handlerReadKey{}) != nil {
		h.o4.Do(func() { close(h.handlerRead) })
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// The rejected handler decides from one locked read of the cart: a checkout's mark committing
// between its looking and its deciding cannot make it drop the event. Before, it read the cart
// twice (reopen if checked out as the order; else redeliver if leased): a mark between the two
// was seen by neither, the event was dropped, and the cart stayed checked out as a REJECTED
// order for ever.
func TestAMarkLandingWhileTheRejectedHandlerDecidesStillOpensTheCart(t *testing.T) {
	fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 0, 0 })
	h := &interleave{handlerRead: make(chan struct{}), markDone: make(chan struct{})}
	e := newEnv(t, tracedPool(t, h))
	skus := e.skus(1)
	c := e.filledCart("alice", 1, skus...)
	if err := e.invRPC.Stop(); err != nil { // inventory away: fulfilment answers PENDING, then gives up
		t.Fatal(err)
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "mark-while-deciding"})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	testenv.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		o, err := e.orders.GetOrder(e.as("alice"), &fulfilmentv1.GetOrderRequest{OrderId: res.GetOrder().GetId()})
		if err != nil {
			return err
		}
		got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
		if err != nil {
			return err
		}
		if o.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED || got.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN {
			return fmt.Errorf("order %v, cart %v (order_id %q); want the REJECTED order's cart open again",
				o.GetOrder().GetState(), got.GetCart().GetState(), got.GetCart().GetOrderId())
		}
		return nil
	})
}

// A checkout whose cart copy died after fulfilment answered PENDING leaves the cart open with a
// lapsed lease. The next read settles it: fulfilment says PENDING, and the settle marks the cart
// checked out as that order. The order rejected, and its event handled, between fulfilment's
// answer and that mark (held here) must still leave the cart open. (The handler used to leave
// a lapsed lease to the settle and drop the event, and the settle's mark then left the cart
// checked out as a REJECTED order for ever.)
func TestAnOrderRejectedWhileALapsedCheckoutIsSettledStillOpensTheCart(t *testing.T) {
	fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 100*time.Millisecond, 0
	t.Cleanup(func() { fulfilmentTimings.pendingAfter, fulfilmentTimings.pendingGiveUp = 0, 0 })
	h := &holdMark{later: true, reached: make(chan struct{}), release: make(chan struct{})}
	var released sync.Once
	release := func() { released.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	e := newEnv(t, tracedPool(t, h))
	t.Cleanup(release) // before the env's own cleanups, which wait for the held statement
	skus := e.skus(1)
	c := e.filledCart("alice", 1, skus...)
	if err := e.invRPC.Stop(); err != nil { // inventory away: fulfilment answers PENDING
		t.Fatal(err)
	}
	const key = "lapsed-settle-1"
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: key})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_PENDING {
		t.Fatalf("checkout with inventory away = %v, %v; want PENDING", res.GetOrder(), err)
	}
	orderID := res.GetOrder().GetId()
	// The cart as a copy that died between fulfilment's answer and its mark left it: claimed
	// under the key, the lease lapsed.
	if _, err := e.cartDB.Exec(t.Context(), `UPDATE carts SET state = 'open', order_id = NULL, checkout_key = $2,
		checkout_until = now() - interval '1 second', checkout_joins = 1 WHERE id = $1`, c.GetId(), key); err != nil {
		t.Fatal(err)
	}

	// The next read settles it; its mark is held once fulfilment has answered PENDING.
	h.armed.Store(true)
	readDone := make(chan error, 1)
	go func() {
		_, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
		readDone <- err
	}()
	select {
	case <-h.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the settle never came to mark the cart")
	}
	// Meanwhile inventory is back with no stock: fulfilment's recovery rejects the order, and
	// the cart hears of it.
	e.setStock(skus[0], 0)
	e.serveNATS("inventory", e.inventory.RegisterNATS)
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		o, err := e.orders.GetOrder(e.as("alice"), &fulfilmentv1.GetOrderRequest{OrderId: orderID})
		if err != nil {
			return err
		}
		if o.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
			return fmt.Errorf("order %v", o.GetOrder().GetState())
		}
		var n int
		if err := e.cartDB.QueryRow(t.Context(), `SELECT count(*) FROM processed_events WHERE consumer = 'cart-rejected-orders'`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the rejected event not handled by the cart yet")
		}
		return nil
	})
	release()
	if err := <-readDone; err != nil {
		t.Fatalf("GetCart: %v", err)
	}
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.GetCart().GetState(); st != cartv1.CartState_CART_STATE_OPEN || got.GetCart().GetOrderId() != "" {
		t.Fatalf("order %s is REJECTED but its cart is %v (order_id %q); want open again", orderID, st, got.GetCart().GetOrderId())
	}
	// And the shopper can check it out again (stock back), as a new order.
	e.setStock(skus[0], 10)
	again, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "lapsed-settle-2"})
	if err != nil || again.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("checking the reopened cart out again = %v, %v; want CONFIRMED", again.GetOrder().GetState(), err)
	}
}
