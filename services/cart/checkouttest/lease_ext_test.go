package checkout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// A checkout whose order the real fulfilment writes late, or never, because its orders table
// is locked against writes (reads go on): the cart stops waiting (Unavailable) and stays
// frozen; once its lease lapses it is checked out as the order written late, or opened again
// when none was. Sampled all along: the cart is never open, with no checkout under way, while
// an order of it that was not rejected exists. Each cart gets at most one such order.
func TestACheckoutWhoseOrderIsWrittenLateOrNeverMakesAtMostOneOrder(t *testing.T) {
	e := newEnv(t, func(c *cart.Config) { c.CheckoutTimeout = time.Second })
	sku := e.skus(1)[0]

	// Sampled every few milliseconds: orders first, then carts, so an order seen is one that
	// existed when its cart was read (orders are never removed).
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	var violation error
	sampling.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			rows, err := e.fulfilmentDB.Query(context.Background(), `SELECT cart_id FROM orders WHERE state <> $1`, int16(fulfilmentv1.OrderState_ORDER_STATE_REJECTED))
			if err != nil {
				violation = err
				return
			}
			var carts []string
			for rows.Next() {
				var id string
				_ = rows.Scan(&id)
				carts = append(carts, id)
			}
			rows.Close()
			var open []string
			if err := e.cartDB.QueryRow(context.Background(), `SELECT coalesce(array_agg(id), '{}') FROM carts
				WHERE id = ANY($1) AND state = 'open' AND checkout_until IS NULL`, carts).Scan(&open); err != nil {
				violation = err
				return
			}
			if len(open) > 0 {
				violation = fmt.Errorf("carts %v are open, with no checkout under way, while an order of theirs exists", open)
				return
			}
		}
	})
	defer func() {
		close(stop)
		sampling.Wait()
		if violation != nil {
			t.Error(violation)
		}
	}()

	// lockOrders holds fulfilment's orders table against writes until the returned func runs.
	lockOrders := func() func() {
		t.Helper()
		tx, err := e.fulfilmentDB.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		unlock := func() { once.Do(func() { _ = tx.Rollback(context.Background()) }) }
		t.Cleanup(unlock) // a test that fails while the lock is held must not hang the services' shutdown
		if _, err := tx.Exec(t.Context(), `LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		return unlock
	}
	lapse := func(cartID string) {
		t.Helper()
		if _, err := e.cartDB.Exec(t.Context(), `UPDATE carts SET checkout_until = now() - interval '1 second' WHERE id = $1`, cartID); err != nil {
			t.Fatal(err)
		}
	}
	ordersOf := func(cartID string) (n int) {
		t.Helper()
		if err := e.fulfilmentDB.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE cart_id = $1 AND state <> $2`,
			cartID, int16(fulfilmentv1.OrderState_ORDER_STATE_REJECTED)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := func(what string, err error, code codes.Code) {
		t.Helper()
		if status.Code(err) != code {
			t.Fatalf("%s: %v; want %s", what, err, code)
		}
	}

	// Written late: the write waits 2.5 s for the lock, after the cart stopped waiting.
	late := e.filledCart("amy", 1, sku)
	ctx := e.as("amy")
	unlock := lockOrders()
	_, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: late.GetId(), IdempotencyKey: "key-late-1"})
	want("checkout whose order is not written in time", err, codes.Unavailable)
	_, err = e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: late.GetId(), Sku: sku, Quantity: 1})
	want("change while the order may still be written", err, codes.Aborted)
	_, err = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: late.GetId(), IdempotencyKey: "key-late-other"})
	want("checkout with another key meanwhile", err, codes.Aborted)
	time.Sleep(1500 * time.Millisecond)
	unlock()
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := ordersOf(late.GetId()); n != 1 {
			return fmt.Errorf("%d orders of the cart", n)
		}
		return nil
	})
	lapse(late.GetId())
	// Read before anything changes it, the cart shows the order it has, not an open cart.
	got, err := e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: late.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetCart().GetOrderId() == "" {
		t.Fatalf("cart whose order was written late, read once its lease lapsed: %v, %v; want it checked out as that order", got.GetCart(), err)
	}
	_, err = e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: late.GetId(), Sku: sku, Quantity: 1})
	want("change after the lease lapsed, the order written", err, codes.FailedPrecondition)
	got, err = e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: late.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetCart().GetOrderId() == "" {
		t.Fatalf("cart whose order was written late: %v, %v; want it checked out as that order", got.GetCart(), err)
	}

	// Never written: the lock outlasts fulfilment's time to write (it gives up), so no order
	// exists; once the lease lapses the cart opens again and a new checkout makes one order.
	never := e.filledCart("ben", 1, sku)
	ctx = e.as("ben")
	unlock = lockOrders()
	began := time.Now()
	_, err = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: never.GetId(), IdempotencyKey: "key-never-1"})
	want("checkout whose order cannot be written", err, codes.Unavailable)
	time.Sleep(8*time.Second - time.Since(began))
	unlock()
	time.Sleep(time.Second) // a write that had not given up would land now
	if n := ordersOf(never.GetId()); n != 0 {
		t.Fatalf("%d orders of a cart whose order fulfilment gave up writing, want 0", n)
	}
	lapse(never.GetId())
	if _, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: never.GetId(), Sku: sku, Quantity: 1}); err != nil {
		t.Fatalf("change after the lease lapsed with no order: %v; want it made", err)
	}
	res, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: never.GetId(), IdempotencyKey: "key-again-1"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("checkout again with a new key: %v, %v; want CONFIRMED", res.GetOrder().GetState(), err)
	}
	if n := ordersOf(never.GetId()); n != 1 {
		t.Fatalf("%d orders of the cart, want 1", n)
	}
}

// A checkout whose caller gives up (a deadline, an app closed) while its claim waits for the
// cart's row: the claim's batch runs on and takes the lease, which is then left at once. Before,
// nobody left it, and the cart refused every edit (Aborted, "being checked out") until the lease
// lapsed, CheckoutTimeout + 30 s later, though no order was ever asked for.
func TestACheckoutGivenUpDuringItsClaimLeavesNoLease(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	c := e.filledCart("alice", 1, skus...)

	tx, err := e.cartDB.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM carts WHERE id = $1 FOR UPDATE`, c.GetId()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.as("alice"), 500*time.Millisecond)
	_, err = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "given-up-key-1"})
	cancel()
	if err == nil {
		t.Fatal("checkout finished although its cart row was locked")
	}
	t.Logf("checkout given up: %v", err)
	_ = tx.Rollback(t.Context()) // the claim's batch, still running, now goes through

	// The lease is left just after the claim commits: the edit goes through within moments.
	var err2 error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err2 = e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skus[0], Quantity: 1}); err2 == nil {
			break
		}
	}
	if err2 != nil {
		t.Fatalf("AddLine after a checkout that was given up before placing anything: %v", err2)
	}
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetCart().GetLines()[0].GetQuantity() != 2 {
		t.Fatalf("the cart after: %v, %v; want open, the edit applied once", got.GetCart(), err)
	}
}
