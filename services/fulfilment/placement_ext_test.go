package fulfilment_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/inventory"
)

const (
	confirmed = fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED
	rejected  = fulfilmentv1.OrderState_ORDER_STATE_REJECTED
	pending   = fulfilmentv1.OrderState_ORDER_STATE_PENDING
)

func TestSameCheckoutTwentyTimesConcurrentlyMakesOneOrderAndOneSetOfHolds(t *testing.T) {
	// Two copies of fulfilment share the requests, so the duplicates meet in the database and
	// at inventory, not only in one process.
	e := newEnv(t, envOptions{copies: 2})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 50)
	e.setStock("s1", "CROISSANT", 50)
	req := checkout("alice", "checkout-1", "s1", line{"LATTE-16", 2}, line{"CROISSANT", 1})

	const n = 20
	var wg sync.WaitGroup
	results := make([]*fulfilmentv1.Order, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = e.place(req) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("checkout %d: %v", i, errs[i])
		}
		if results[i].GetId() != results[0].GetId() || results[i].GetState() != confirmed || results[i].GetPickupCode() != results[0].GetPickupCode() {
			t.Fatalf("checkout %d answered %s %s, checkout 0 %s %s: want one confirmed order", i,
				results[i].GetId(), results[i].GetState(), results[0].GetId(), results[0].GetState())
		}
	}
	var orders int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders WHERE customer_id = 'alice'`).Scan(&orders); err != nil {
		t.Fatal(err)
	}
	if orders != 1 {
		t.Fatalf("%d orders for one idempotency key, want 1", orders)
	}
	e.waitHolds(results[0].GetId(), map[string]int{"open": 2})
	if got := e.available("s1", "LATTE-16"); got != 48 {
		t.Fatalf("LATTE-16 available %d after one order of 2 from 50, want 48", got)
	}
	e.checkInvariants()
	e.waitEvents(results[0].GetId(), "confirmed")
}

func TestTwoCartsRacingForTheLastUnitConfirmOneAndRejectTheOther(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	for round := range 10 {
		sku := fmt.Sprintf("LAST-%d", round)
		e.setStock("s1", sku, 1)
		var wg sync.WaitGroup
		got := make([]*fulfilmentv1.Order, 2)
		for i := range 2 {
			wg.Go(func() {
				var err error
				got[i], err = e.place(checkout(fmt.Sprintf("shopper-%d", i), "race-"+sku, "s1", line{sku, 1}))
				if err != nil {
					t.Errorf("round %d cart %d: %v", round, i, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		states := map[fulfilmentv1.OrderState]int{got[0].GetState(): 1}
		states[got[1].GetState()]++
		if states[confirmed] != 1 || states[rejected] != 1 {
			t.Fatalf("round %d: carts got %s and %s, want one CONFIRMED and one REJECTED", round, got[0].GetState(), got[1].GetState())
		}
		loser := got[0]
		if loser.GetState() != rejected {
			loser = got[1]
		}
		if sh := loser.GetShortages(); len(sh) != 1 || sh[0].GetSku() != sku || sh[0].GetRequested() != 1 || sh[0].GetAvailable() != 0 {
			t.Fatalf("round %d: rejected order shortages %v, want %s requested 1 available 0", round, sh, sku)
		}
		if loser.GetStoreId() != "" || loser.GetPickupCode() != "" {
			t.Fatalf("round %d: rejected order has store %q / a pickup code", round, loser.GetStoreId())
		}
		if h := e.holds(loser.GetId()); len(h) != 0 {
			t.Fatalf("round %d: rejected order holds %v", round, h)
		}
	}
	e.checkInvariants()
}

func TestRacingForTheLastUnitNearbyConfirmsTheLoserAtTheNextStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("near", 47.6100, -122.3300, 5*time.Minute, time.Hour)
	e.addStore("next", 47.6190, -122.3300, 5*time.Minute, time.Hour) // 1 km north
	e.setStock("near", "BAGEL", 1)
	e.setStock("next", "BAGEL", 1)
	nearby := func(customer string) *fulfilmentv1.PlaceOrderRequest {
		req := checkout(customer, "nearby", "", line{"BAGEL", 1})
		req.Near, req.RadiusMeters = &commonv1.LatLng{Latitude: 47.6100, Longitude: -122.3300}, 5000
		return req
	}
	var wg sync.WaitGroup
	got := make([]*fulfilmentv1.Order, 2)
	for i := range 2 {
		wg.Go(func() {
			var err error
			if got[i], err = e.place(nearby(fmt.Sprintf("shopper-%d", i))); err != nil {
				t.Errorf("cart %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	stores := map[string]bool{got[0].GetStoreId(): true, got[1].GetStoreId(): true}
	if got[0].GetState() != confirmed || got[1].GetState() != confirmed || !stores["near"] || !stores["next"] {
		t.Fatalf("carts got %s at %q and %s at %q, want both confirmed, one at each store",
			got[0].GetState(), got[0].GetStoreId(), got[1].GetState(), got[1].GetStoreId())
	}
	third := e.mustPlace(nearby("shopper-3"), rejected)
	if len(third.GetShortages()) == 0 {
		t.Fatal("third cart rejected without shortages")
	}
	e.checkInvariants()
}

func TestRetriedCheckoutReturnsTheSameOrderAndHoldsNothingMore(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "MOCHA-16", 10)
	req := checkout("bob", "k1", "s1", line{"MOCHA-16", 3})
	first := e.mustPlace(req, confirmed)
	again := e.mustPlace(req, confirmed)
	if again.GetId() != first.GetId() || again.GetVersion() != first.GetVersion() {
		t.Fatalf("retry gave order %s v%d, first %s v%d", again.GetId(), again.GetVersion(), first.GetId(), first.GetVersion())
	}
	if first.GetId() != fulfilment.OrderID("bob", "k1") {
		t.Fatalf("order id %s is not derived from customer and key", first.GetId())
	}
	if e.available("s1", "MOCHA-16") != 7 {
		t.Fatalf("available %d after one order of 3 from 10, want 7", e.available("s1", "MOCHA-16"))
	}
	// A new key is a new order.
	other := e.mustPlace(checkout("bob", "k2", "s1", line{"MOCHA-16", 3}), confirmed)
	if other.GetId() == first.GetId() {
		t.Fatal("a new idempotency key returned the old order")
	}
	e.waitEvents(first.GetId(), "confirmed")
}

func TestConfirmedOrderCarriesStorePickupCodeAndReadyByFromTheQueue(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 4*time.Minute, 45*time.Minute)
	e.setStock("s1", "TEA", 100)
	var readyIn []time.Duration
	for i := range 3 {
		before := time.Now()
		o := e.mustPlace(checkout("carol", fmt.Sprint("q", i), "s1", line{"TEA", 1}), confirmed)
		if o.GetStoreId() != "s1" || o.GetStoreName() != "Store s1" {
			t.Fatalf("order at %q %q, want s1 with its name", o.GetStoreId(), o.GetStoreName())
		}
		if len(o.GetPickupCode()) != 6 {
			t.Fatalf("pickup code %q, want 6 digits", o.GetPickupCode())
		}
		if o.GetTotal().GetAmountMinor() != 450 || o.GetTotal().GetCurrencyCode() != "USD" {
			t.Fatalf("total %v, want 450 USD", o.GetTotal())
		}
		readyIn = append(readyIn, o.GetReadyByTime().AsTime().Sub(before).Round(time.Minute))
	}
	// prep × (1 + orders ahead): 4, 8, 12 minutes.
	for i, want := range []time.Duration{4 * time.Minute, 8 * time.Minute, 12 * time.Minute} {
		if readyIn[i] != want {
			t.Fatalf("order %d ready in %s, want %s (ready-by estimates %v)", i, readyIn[i], want, readyIn)
		}
	}
}

func TestCheckoutWithBadInputIsRefusedNamingTheFields(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	bad := checkout("", "", "s1", line{"LATTE", 0})
	bad.Lines[0].UnitPrice = nil
	_, err := e.place(bad)
	wantCode(t, "empty checkout", err, codes.InvalidArgument, "idempotency_key", "customer_id", "lines[0].quantity", "lines[0].unit_price")

	// A price past the maximum (totals of 100 lines of 999 units must stay inside int64).
	huge := checkout("dave", "k-huge", "s1", line{"LATTE", 999})
	huge.Lines[0].UnitPrice.AmountMinor = 1 << 62
	_, err = e.place(huge)
	wantCode(t, "a price past the maximum", err, codes.InvalidArgument, "lines[0].unit_price.amount_minor")

	noWhere := checkout("dave", "k", "", line{"LATTE", 1})
	_, err = e.place(noWhere)
	wantCode(t, "no store and no location", err, codes.InvalidArgument, "near")

	_, err = e.place(checkout("dave", "k", "no-such-store", line{"LATTE", 1}))
	wantCode(t, "unknown store", err, codes.NotFound, "no-such-store")
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused checkouts left %d orders (%v)", n, err)
	}
}

func TestPausedStoreRejectsTheOrderWithTheReason(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	if _, err := e.inv.SetStoreState(e.ctx, "s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "espresso machine down"}); err != nil {
		t.Fatal(err)
	}
	o := e.mustPlace(checkout("erin", "k", "s1", line{"LATTE-16", 1}), rejected)
	if o.GetReason() == "" {
		t.Fatal("rejected without a reason")
	}
	e.waitEvents(o.GetId(), "rejected")
}

func TestPendingOrderIsDrivenOnOnceInventoryAnswers(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true})
	// Inventory's tables are there, its NATS endpoints are not: reserve gets no answer.
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	o := e.mustPlace(checkout("frank", "k", "s1", line{"LATTE-16", 2}), pending)
	if o.GetPickupCode() != "" || o.GetStoreId() != "" {
		t.Fatal("a pending order shows a store or a pickup code")
	}
	// The shopper reads why in the order's history, without the NATS client's own words.
	for _, h := range o.GetHistory() {
		if r := h.GetReason(); strings.Contains(r, "natsrpc") || strings.Contains(r, "handoff.") || strings.Contains(r, "nats:") {
			t.Errorf("the pending order's history says %q to its shopper", r)
		}
	}

	e.startInventory()

	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != confirmed {
			return fmt.Errorf("order is %s, want it driven on to CONFIRMED", s)
		}
		return nil
	})
	e.waitHolds(o.GetId(), map[string]int{"open": 1})
	again := e.mustPlace(checkout("frank", "k", "s1", line{"LATTE-16", 2}), confirmed)
	if again.GetId() != o.GetId() || again.GetPickupCode() == "" {
		t.Fatalf("retry after recovery: order %s code %q", again.GetId(), again.GetPickupCode())
	}
	e.waitEvents(o.GetId(), "confirmed")
	e.checkInvariants()
}

func TestPendingOrderIsRejectedWhenInventoryNeverAnswers(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) { c.PendingGiveUp = 500 * time.Millisecond }})
	o := e.mustPlace(checkout("gina", "k", "s1", line{"LATTE-16", 1}), pending)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != rejected {
			return fmt.Errorf("order is %s, want REJECTED after giving up", s)
		}
		return nil
	})
	e.waitEvents(o.GetId(), "rejected")
}

func TestRetryOfARejectedCheckoutAfterRestockStaysRejectedAndHoldsNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 1)
	req := checkout("hana", "k", "s1", line{"LATTE-16", 3})
	first := e.mustPlace(req, rejected)
	e.setStock("s1", "LATTE-16", 10)
	// The retry's reserve may now succeed; the key's answer is still the rejected order, and
	// what the retry held is given back.
	again := e.mustPlace(req, rejected)
	if again.GetId() != first.GetId() {
		t.Fatalf("retry gave order %s, want %s", again.GetId(), first.GetId())
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := e.available("s1", "LATTE-16"); got != 10 {
			return fmt.Errorf("available %d after the retry, want all 10", got)
		}
		return nil
	})
	e.checkInvariants()
	e.waitEvents(first.GetId(), "rejected")
}

// A shopper app sends one idempotency key with the checkouts of two carts at once, picked up
// at two stores, through two copies of fulfilment and two of inventory. One order comes of the
// key and the other checkout is refused, and nothing the refused one asked for stays held under
// the order's id: such holds would be extended with the order and sold at its hand-over, taking
// goods never sold off the other store's shelf. Which copy takes which request is up to NATS,
// so the race is run 20 times (without inventory's lock per order, about one round in four left
// the other cart's hold open).
func TestOneKeyForTwoCartsAtTwoStoresAtOnceHoldsOnlyTheOrdersLines(t *testing.T) {
	e := newEnv(t, envOptions{copies: 2})
	e.addInventoryCopy()
	for _, id := range []string{"s1", "s2"} {
		e.addStore(id, 47.61, -122.33, 5*time.Minute, time.Hour)
		e.setStock(id, "LATTE-16", 1000)
	}
	for round := range 20 {
		key := fmt.Sprintf("two-carts-%d", round)
		a := checkout("alice", key, "s1", line{"LATTE-16", 1})
		a.CartId, a.Lines[0].LineId = "cart-a", "cart-a-line-1"
		b := checkout("alice", key, "s2", line{"LATTE-16", 2})
		b.CartId, b.Lines[0].LineId = "cart-b", "cart-b-line-1"
		reqs := []*fulfilmentv1.PlaceOrderRequest{a, b}
		orders, errs := make([]*fulfilmentv1.Order, 2), make([]error, 2)
		var wg sync.WaitGroup
		for i, req := range reqs {
			wg.Go(func() { orders[i], errs[i] = e.place(req) })
		}
		wg.Wait()
		var o *fulfilmentv1.Order
		for i := range reqs {
			switch {
			case errs[i] == nil && o == nil:
				o = orders[i]
			case status.Code(errs[i]) != codes.FailedPrecondition:
				t.Fatalf("round %d, cart %s: %v, %v; want one order and one FailedPrecondition", round, reqs[i].GetCartId(), orders[i], errs[i])
			}
		}
		if o == nil {
			t.Fatalf("round %d: no order from either cart: %v / %v", round, errs[0], errs[1])
		}
		rows, err := e.invPool.Query(e.ctx, `SELECT store_id, line_id FROM holds WHERE order_id = $1 AND state = 'open'`, o.GetId())
		if err != nil {
			t.Fatal(err)
		}
		var held []string
		for rows.Next() {
			var store, lineID string
			if err := rows.Scan(&store, &lineID); err != nil {
				t.Fatal(err)
			}
			held = append(held, lineID+" at "+store)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if want := []string{o.GetLines()[0].GetLineId() + " at " + o.GetStoreId()}; !slices.Equal(held, want) {
			t.Errorf("round %d: order %s (%s, cart %s) holds %v open; want only its own line, %v", round, o.GetId(), o.GetState(), o.GetCartId(), held, want)
		}
	}
	e.checkInvariants()
}

// A key used again after the cart was edited (its first checkout rejected, say) names the
// checkout of the old lines: refused naming the key, not answered with the old order, and what
// the new attempt held is given back.
func TestAKeyUsedAgainForOtherLinesIsRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 1)
	e.setStock("s1", "MOCHA-16", 10)
	e.mustPlace(checkout("hana", "k", "s1", line{"LATTE-16", 3}), rejected)
	// The shopper swaps the latte for a mocha and checks the same cart out under the same key.
	edited := checkout("hana", "k", "s1", line{"MOCHA-16", 1})
	_, err := e.place(edited)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "idempotency_key") {
		t.Fatalf("the same key for other lines: %v; want FailedPrecondition naming idempotency_key", err)
	}
	// Refused before anything was held: not a unit of mocha was held for it even for a moment
	// (another shopper's checkout of the last one could have been turned away), and inventory's
	// ledger has no trace of it.
	if got := e.available("s1", "MOCHA-16"); got != 10 {
		t.Fatalf("MOCHA-16 available %d after the refusal, want all 10", got)
	}
	var holds, moves int
	if err := e.invPool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM holds WHERE sku = 'MOCHA-16'),
		(SELECT count(*) FROM movements WHERE sku = 'MOCHA-16' AND kind <> 'set')`).Scan(&holds, &moves); err != nil {
		t.Fatal(err)
	}
	if holds != 0 || moves != 0 {
		t.Fatalf("the refused checkout left %d mocha holds and %d ledger rows, want none", holds, moves)
	}
	// The same lines again are the same checkout: its order.
	e.mustPlace(checkout("hana", "k", "s1", line{"LATTE-16", 3}), rejected)
	e.checkInvariants()
}

// The queue count is read once for every checkout at a store that needs it meanwhile. The
// checkout that started the read giving up must not fail the others waiting on it.
func TestACheckoutGivingUpDoesNotFailOthersWaitingOnTheSameQueueCount(t *testing.T) {
	// A pool of its own for fulfilment, large enough for its loops, which wait on the lock
	// below too.
	e := newEnv(t, envOptions{config: ownPool(t, maxConns(16))})
	// Hold the count up: it cannot read orders while a transaction has the table locked.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(e.ctx) }()
	if _, err := tx.Exec(e.ctx, `LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	firstCtx, giveUp := context.WithCancel(e.ctx)
	defer giveUp()
	first := make(chan error, 1)
	go func() { _, err := e.svc.QueueAhead(firstCtx, "s1"); first <- err }()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%state IN (2, 3) LIMIT%' AND query NOT LIKE '%pg_stat_activity%'`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errNotYet
		}
		return nil
	})
	type result struct {
		n   int
		err error
	}
	second := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		defer cancel()
		n, err := e.svc.QueueAhead(ctx, "s1")
		second <- result{n, err}
	}()
	time.Sleep(100 * time.Millisecond) // the second checkout joins the read in flight

	giveUp()
	select {
	case err := <-first:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the checkout that gave up got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the checkout that gave up is still waiting for the count")
	}
	time.Sleep(100 * time.Millisecond)
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-second:
		if r.err != nil {
			t.Fatalf("a checkout waiting on the same count failed with the other's cancellation: %v", r.err)
		}
		// Both were counted in: the one that gave up may still confirm its order.
		if r.n != 0 && r.n != 1 {
			t.Fatalf("queue ahead %d, want 0 or 1", r.n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting checkout never got the count")
	}
}

// Driving PENDING orders on reads the queue count inside the transaction that locks the
// orders: with more drives at once than pool connections, none of them may wait for a second
// connection held by the others.
func TestManyPendingOrdersDrivenAtOnceDoNotExhaustThePool(t *testing.T) {
	const conns, n = 2, 8
	smallPool := ownPool(t, maxConns(conns))
	e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) {
		smallPool(c)
		c.QueueCountTTL = time.Nanosecond // every confirmation reads the count
		c.PendingAfter = time.Hour        // the retries below drive the orders, not the recovery loop
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.62, -122.33, 5*time.Minute, time.Hour)
	store := func(i int) string { return fmt.Sprintf("s%d", i%2+1) }
	reqs := make([]*fulfilmentv1.PlaceOrderRequest, n)
	for i := range n {
		e.setStock(store(i), fmt.Sprintf("SKU-%d", i), 5)
		reqs[i] = checkout(fmt.Sprintf("shopper-%d", i), "k", store(i), line{fmt.Sprintf("SKU-%d", i), 1})
		e.mustPlace(reqs[i], pending)
	}
	e.startInventory()

	// Every retry finds its order PENDING and drives it on in a transaction of its own.
	start := time.Now()
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			o, err := e.place(req)
			if err != nil {
				t.Errorf("retry of %s: %v", req.GetCustomerId(), err)
				return
			}
			if o.GetState() != confirmed {
				t.Errorf("retry of %s: order is %s (%s), want CONFIRMED", req.GetCustomerId(), o.GetState(), o.GetReason())
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("%d retries took %s with %d connections, want no waiting on the pool", n, took, conns)
	}
	e.checkInvariants()
}

// maxConns limits a pool to at most n connections.
func maxConns(n int32) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) { c.MaxConns, c.MinConns = n, 0 }
}

// ownPool configures fulfilment with a pool of its own to the same database and schema,
// configured further by configure. Call it before newEnv: the pool is closed after the env's
// loops stop.
func ownPool(t *testing.T, configure func(*pgxpool.Config)) func(*fulfilment.Config) {
	t.Helper()
	var pool *pgxpool.Pool
	t.Cleanup(func() {
		if pool != nil {
			pool.Close()
		}
	})
	return func(c *fulfilment.Config) {
		cfg := c.Pool.Config().Copy()
		configure(cfg)
		var err error
		if pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		c.Pool = pool
	}
}

// batchTracer counts the batches a pool sends with statements that match, and those
// statements.
type batchTracer struct {
	match               func(sql string) bool
	batches, statements atomic.Int64
}

func (bt *batchTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	n := 0
	for _, q := range data.Batch.QueuedQueries {
		if bt.match(strings.TrimSpace(q.SQL)) {
			n++
		}
	}
	if n > 0 {
		bt.batches.Add(1)
		bt.statements.Add(int64(n))
	}
	return ctx
}
func (*batchTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*batchTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (*batchTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (*batchTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestConcurrentCheckoutsWriteTheirOrdersTogetherAndEachOnce(t *testing.T) {
	writes := &batchTracer{match: func(sql string) bool { return strings.HasPrefix(sql, "INSERT INTO orders ") }}
	e := newEnv(t, envOptions{config: ownPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = writes })})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "SKU-1", 1000)
	placeAll := func(reqs []*fulfilmentv1.PlaceOrderRequest) []*fulfilmentv1.Order {
		orders := make([]*fulfilmentv1.Order, len(reqs))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, req := range reqs {
			wg.Go(func() {
				<-start
				o, err := e.place(req)
				if err != nil || o.GetState() != confirmed {
					t.Errorf("checkout %s of %s: %s (%s), %v; want CONFIRMED", req.GetIdempotencyKey(), req.GetCustomerId(), o.GetState(), o.GetReason(), err)
				}
				orders[i] = o
			})
		}
		close(start)
		wg.Wait()
		return orders
	}

	// New orders arriving together are written together.
	const n = 24
	var first []*fulfilmentv1.PlaceOrderRequest
	for i := range n {
		first = append(first, checkout(fmt.Sprint("shopper-", i), "k1", "s1", line{"SKU-1", 1}))
	}
	placed := placeAll(first)
	if b, ins := writes.batches.Load(), writes.statements.Load(); b >= n || ins != n {
		t.Errorf("%d concurrent checkouts wrote %d orders in %d batches; want each once, in fewer batches", n, ins, b)
	} else {
		t.Logf("%d concurrent checkouts wrote their orders in %d batches", n, b)
	}

	// Retries of placed orders among new ones: a retry's write conflicts, which fails the
	// batch it shares; then every order is written alone, the new ones once, the retries not.
	var second []*fulfilmentv1.PlaceOrderRequest
	for i := range n / 2 {
		second = append(second, checkout(fmt.Sprint("shopper-", i), "k2", "s1", line{"SKU-1", 1}))
	}
	for i := range 4 {
		second = append(second, first[i])
	}
	writes.batches.Store(0)
	writes.statements.Store(0)
	again := placeAll(second)
	t.Logf("%d new orders and 4 retries: %d order inserts sent in %d batches", n/2, writes.statements.Load(), writes.batches.Load())
	for i := range 4 {
		if got, want := again[n/2+i].GetId(), placed[i].GetId(); got != want {
			t.Errorf("retry %d got order %s; want %s", i, got, want)
		}
	}
	var orders, histories, duplicates int
	if err := e.pool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_history),
		(SELECT count(*) FROM (SELECT order_id, seq FROM order_history GROUP BY 1, 2 HAVING count(*) > 1) d)`).Scan(&orders, &histories, &duplicates); err != nil {
		t.Fatal(err)
	}
	if want := n + n/2; orders != want || histories != 2*want || duplicates != 0 {
		t.Errorf("%d orders with %d history entries (%d doubled); want %d orders, each created and confirmed once", orders, histories, duplicates, want)
	}
	if got := e.available("s1", "SKU-1"); got != 1000-n-n/2 {
		t.Errorf("available %d; want %d", got, 1000-n-n/2)
	}
	e.checkInvariants()
}

// A PENDING order that cannot be settled (an answer from inventory that fulfilment does not
// know) does not hold back the others of its recovery round: they are settled, and it is tried
// again later, instead of the whole round failing every time until the give-up.
func TestAnUnsettleablePendingOrderDoesNotHoldBackTheOthers(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) { c.PendingAfter = 50 * time.Millisecond }})
	odd := e.mustPlace(checkout("ivan", "k-odd", "s1", line{"LATTE-16", 1}), pending)
	other := e.mustPlace(checkout("jane", "k-other", "s1", line{"LATTE-16", 1}), pending)

	nc := testenv.NATSConn(t, e.ns)
	rpc, err := natsrpc.AddService(nc, "inventory", "0.0.1", "an inventory with odd answers", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rpc.Stop() })
	if err := natsrpc.Handle(rpc, natsrpc.Subject("inventory", "reserve_holds"), func(_ context.Context, req *inventoryv1.ReserveHoldsRequest) (*inventoryv1.ReserveHoldsResponse, error) {
		if req.GetOrderId() == odd.GetId() {
			return &inventoryv1.ReserveHoldsResponse{}, nil // no outcome
		}
		return &inventoryv1.ReserveHoldsResponse{Outcome: inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK, Message: "none left"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := e.stateOf(other.GetId()); s != rejected {
			return fmt.Errorf("the other order is %s, want it settled (REJECTED)", s)
		}
		return nil
	})
	if s := e.stateOf(odd.GetId()); s != pending {
		t.Fatalf("the order with the odd answer is %s, want it still PENDING", s)
	}
}

// The cart settles a checkout that got no answer by asking for its order without placing one:
// the order under the key if there is one, NotFound if none, and nothing placed either way.
func TestFindCheckoutOrderFindsWithoutPlacing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	placed := e.mustPlace(checkout("kim", "k-placed", "s1", line{"LATTE-16", 1}), confirmed)
	cart := placed.GetCartId()
	found, err := e.svc.FindCheckoutOrder(e.ctx, "kim", "k-placed", cart)
	if err != nil || found.GetId() != placed.GetId() || found.GetPickupCode() != placed.GetPickupCode() {
		t.Fatalf("the placed checkout's order: %v, %v; want %s with its pickup code", found, err, placed.GetId())
	}
	if _, err := e.svc.FindCheckoutOrder(e.ctx, "kim", "k-never", cart); status.Code(err) != codes.NotFound {
		t.Fatalf("a checkout never placed: %v; want NotFound", err)
	}
	if _, err := e.svc.FindCheckoutOrder(e.ctx, "lee", "k-placed", cart); status.Code(err) != codes.NotFound {
		t.Fatalf("another customer's key: %v; want NotFound", err)
	}
	// The key used for another cart's checkout: that order is not this cart's.
	if _, err := e.svc.FindCheckoutOrder(e.ctx, "kim", "k-placed", "another-cart"); status.Code(err) != codes.NotFound {
		t.Fatalf("the key of another cart's checkout: %v; want NotFound", err)
	}
	_, err = e.svc.FindCheckoutOrder(e.ctx, "", "", "")
	wantCode(t, "no customer, key or cart", err, codes.InvalidArgument, "customer_id", "idempotency_key", "cart_id")
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d orders after the lookups (%v); want only the placed one", n, err)
	}
}

// A checkout whose reserve is slow is answered PENDING and the shopper cancels it; the cancel's
// release runs before inventory's reserve, which it decides although its caller gave up, holds
// the stock. That hold is released too, once the reserve can have landed, not at its deadline.
func TestCancellingAPendingOrderReleasesWhatALateReserveHolds(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		// The late release must wait until the stock row is unlocked below, however slow the
		// machine: a margin of seconds.
		c.ReserveTimeout, c.LateReserve = 300*time.Millisecond, 3*time.Second
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)

	// Inventory is slow: another transaction has the stock row locked.
	tx, err := e.invPool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(e.ctx) }()
	if _, err := tx.Exec(e.ctx, `SELECT 1 FROM stock WHERE store_id = 's1' AND sku = 'LATTE-16' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	o := e.mustPlace(checkout("zoe", "k", "s1", line{"LATTE-16", 1}), pending)
	if _, err := e.orders.CancelOrder(e.asCustomer("zoe"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId()}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	// The cancel's own release has run, finding nothing; the late one waits.
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_effects WHERE order_id = $1`, o.GetId()).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d effects of the order left; want the late release alone", n)
		}
		return nil
	})
	if err := tx.Commit(e.ctx); err != nil { // the reserve goes through now
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h := e.holds(o.GetId()); h["open"] != 0 || h["released"] != 1 {
			return fmt.Errorf("holds of the cancelled order %v; want the late reserve's released", h)
		}
		return nil
	})
	if got := e.available("s1", "LATTE-16"); got != 5 {
		t.Fatalf("available %d after the cancel; want all 5", got)
	}
	e.checkInvariants()
}

// A retry of a rejected checkout whose reserve now holds stock, and whose store cannot be
// looked up just then (so the retry would write the order PENDING), gets the rejected order and
// gives back what it held.
func TestRetryOfARejectedCheckoutThatCannotReadItsStoreGivesBackWhatItHeld(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 1)
	req := checkout("hana", "k", "s1", line{"LATTE-16", 3})
	first := e.mustPlace(req, rejected)
	e.setStock("s1", "LATTE-16", 10)
	fulfilment.FailStoreLookups(e.svc, true)
	again := e.mustPlace(req, rejected)
	if again.GetId() != first.GetId() {
		t.Fatalf("retry gave order %s, want %s", again.GetId(), first.GetId())
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := e.available("s1", "LATTE-16"); got != 10 {
			return fmt.Errorf("available %d after the retry, want all 10", got)
		}
		return nil
	})
	e.checkInvariants()
}
