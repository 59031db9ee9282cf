package fulfilment_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// holdIDs lists the order's hold ids at inventory.
func (e *env) holdIDs(orderID string) []string {
	e.t.Helper()
	rows, err := e.invPool.Query(e.ctx, `SELECT id::text FROM holds WHERE order_id = $1 ORDER BY id`, orderID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	return ids
}

// storedEvents counts the events JetStream keeps on subject (duplicates dropped by id).
func (e *env) storedEvents(subject string) uint64 {
	e.t.Helper()
	stream, err := e.js.Stream(e.ctx, streams.EventsStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := stream.Info(e.ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func (e *env) orderCount() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// placeUntilKilled sends a checkout that the child never answers (it stops at a failpoint);
// the returned channel delivers the call's error once the child is gone.
func (e *env) placeUntilKilled(req *fulfilmentv1.PlaceOrderRequest) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := e.placeWithin(req, 1500*time.Millisecond)
		done <- err
	}()
	return done
}

func TestKilledBetweenReserveAndConfirmTheRetriedCheckoutConfirmsTheOrderExactlyOnce(t *testing.T) {
	e := newEnv(t, envOptions{noFulfilment: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	req := checkout("alice", "crash-1", "s1", line{"LATTE-16", 2})
	id := fulfilment.OrderID("alice", "crash-1")

	c := e.startChild("after_reserve")
	answered := e.placeUntilKilled(req)
	if !c.waitFor("failpoint after_reserve reached", 15*time.Second) {
		t.Fatalf("child never reached the failpoint; it said:\n%s", c.output())
	}
	c.kill()
	if err := <-answered; err == nil {
		t.Fatal("the killed process answered the checkout")
	}
	// Killed between the two steps: inventory holds the lines, no order exists.
	if got := e.holds(id); !mapsEqual(got, map[string]int{"open": 1}) {
		t.Fatalf("after the kill inventory holds %v, want the one open hold of the reserve", got)
	}
	held := e.holdIDs(id)
	if n := e.orderCount(); n != 0 {
		t.Fatalf("after the kill %d orders exist, want none yet", n)
	}
	e.checkInvariants()

	// The process is back; the shopper's app retries the checkout with the same key.
	e.startChild("")
	o := e.mustPlace(req, confirmed)
	if o.GetId() != id {
		t.Fatalf("retry made order %s, want %s", o.GetId(), id)
	}
	if n := e.orderCount(); n != 1 {
		t.Fatalf("%d orders after the retry, want 1", n)
	}
	if got := e.holdIDs(id); !slices.Equal(got, held) {
		t.Fatalf("retry holds %v, want the holds of the first attempt %v", got, held)
	}
	e.waitHolds(id, map[string]int{"open": 1})
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := e.storedEvents("handoff.fulfilment.order.confirmed"); n != 1 {
			return fmt.Errorf("%d confirmed events stored, want exactly 1", n)
		}
		return nil
	})
	var confirmations int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_state = $2`, id, int16(confirmed)).Scan(&confirmations); err != nil {
		t.Fatal(err)
	}
	if confirmations != 1 {
		t.Fatalf("order history has %d confirmations, want 1", confirmations)
	}
	if got := e.available("s1", "LATTE-16"); got != 3 {
		t.Fatalf("available %d, want 5 - 2 = 3", got)
	}
	e.checkInvariants()
}

func TestKilledBetweenReserveAndConfirmWithoutRetryTheHoldEndsAtItsDeadline(t *testing.T) {
	e := newEnv(t, envOptions{noFulfilment: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 2)
	id := fulfilment.OrderID("alice", "crash-2")

	c := e.startChild("after_reserve", envChildHoldTTL+"=3s")
	answered := e.placeUntilKilled(checkout("alice", "crash-2", "s1", line{"LATTE-16", 2}))
	if !c.waitFor("failpoint after_reserve reached", 15*time.Second) {
		t.Fatalf("child never reached the failpoint; it said:\n%s", c.output())
	}
	c.kill()
	if got := e.holds(id); got["open"]+got["expired"] != 1 {
		t.Fatalf("the reserve left holds %v, want one", got)
	}
	<-answered
	// Nobody retries. The short hold is its own compensation: inventory's sweeper ends it.
	e.waitHolds(id, map[string]int{"expired": 1})
	if got := e.available("s1", "LATTE-16"); got != 2 {
		t.Fatalf("available %d after the hold expired, want 2", got)
	}
	e.checkInvariants()
}

func TestKilledRightAfterHandOverCommitsTheHoldsAfterRestart(t *testing.T) {
	e := newEnv(t, envOptions{noFulfilment: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	// No sweeps in the first life: the hand-over's commit can only happen in the second.
	c := e.startChild("after_transition", envChildSweep+"=1h")
	o := e.mustPlace(checkout("alice", "crash-3", "s1", line{"LATTE-16", 2}), confirmed)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	// The confirmation's hold extension waits for the effects worker's next round, which
	// never comes in this life: it is still there, never taken, and runs (before the commit)
	// in the next life.
	var pending, claims int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*), coalesce(sum(claims), 0) FROM order_effects WHERE order_id = $1`, o.GetId()).Scan(&pending, &claims); err != nil {
		t.Fatal(err)
	}
	if pending != 1 || claims != 0 {
		t.Fatalf("%d effects of order %s pending, taken %d times; want its extension, not taken", pending, o.GetId(), claims)
	}
	handedOver := make(chan error, 1)
	go func() { _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); handedOver <- err }()
	if !c.waitFor("failpoint after_transition reached", 15*time.Second) {
		t.Fatalf("child never reached the failpoint; it said:\n%s", c.output())
	}
	c.kill()
	<-handedOver
	if s := e.stateOf(o.GetId()); s != collected {
		t.Fatalf("order is %s after the committed hand-over, want COLLECTED", s)
	}
	if got := e.holds(o.GetId()); !mapsEqual(got, map[string]int{"open": 1}) {
		t.Fatalf("holds %v right after the kill, want still open (the commit had not run)", got)
	}

	e.startChild("")
	e.waitHolds(o.GetId(), map[string]int{"committed": 1})
	var onHand int32
	if err := e.invPool.QueryRow(e.ctx, `SELECT on_hand FROM stock WHERE store_id = 's1' AND sku = 'LATTE-16'`).Scan(&onHand); err != nil {
		t.Fatal(err)
	}
	if onHand != 3 {
		t.Fatalf("on hand %d after selling 2 of 5, want 3", onHand)
	}
	e.checkInvariants()
}

// Killed right after a hand-over, before its commit reached inventory, and the shelf counted
// meanwhile: the count did not find the goods handed over, so the commit made after the restart
// does not take them off again (it says when they left). A SKU not counted is sold as ever.
func TestAHandOverCommittedAfterACountOfItsGoodsIsNotTakenOffTwice(t *testing.T) {
	e := newEnv(t, envOptions{noFulfilment: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 5)
	e.setStock("s1", "MUFFIN", 10)
	c := e.startChild("after_transition", envChildSweep+"=1h")
	o := e.mustPlace(checkout("alice", "crash-count", "s1", line{"LATTE-16", 2}, line{"MUFFIN", 1}), confirmed)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	handedOver := make(chan error, 1)
	go func() { _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); handedOver <- err }()
	if !c.waitFor("failpoint after_transition reached", 15*time.Second) {
		t.Fatalf("child never reached the failpoint; it said:\n%s", c.output())
	}
	c.kill()
	<-handedOver
	if got := e.holds(o.GetId()); !mapsEqual(got, map[string]int{"open": 2}) {
		t.Fatalf("holds %v right after the kill, want still open (the commit had not run)", got)
	}
	// The outage lasts: the hand-over was two minutes before the count (inventory takes one
	// within a minute of a count as after it, for the two clocks), and the stock was counted
	// last long before.
	if _, err := e.pool.Exec(e.ctx, `UPDATE order_effects SET create_time = create_time - interval '2 minutes' WHERE order_id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.invPool.Exec(e.ctx, `UPDATE stock SET count_time = count_time - interval '10 minutes' WHERE store_id = 's1'`); err != nil {
		t.Fatal(err)
	}
	e.setStock("s1", "LATTE-16", 3) // staff count the lattes: 5 less the 2 handed over

	e.startChild("")
	e.waitHolds(o.GetId(), map[string]int{"committed": 2})
	if latte, muffin := e.onHand("s1", "LATTE-16"), e.onHand("s1", "MUFFIN"); latte != 3 || muffin != 9 {
		t.Errorf("on hand after the commit: LATTE-16 %d, MUFFIN %d; want 3 (as counted after the hand-over) and 9", latte, muffin)
	}
	e.checkInvariants()
}

// Killed right after a change that releases holds commits (a staff cancel, a shopper's cancel,
// a line marked unavailable, the expiry of an overdue order staff accept), before the release
// runs: after the restart each hold it ends is released exactly once (one ledger row each), the
// order went through the change once, and its event is published once.
func TestKilledRightAfterAReleasingChangeReleasesOnceAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lines   []line
		act     func(e *env, o *fulfilmentv1.Order) error
		event   string
		state   fulfilmentv1.OrderState
		holds   map[string]int
		history int32 // the order_history to_state of the change
	}{
		{"staff cancel", []line{{"LATTE-16", 2}}, func(e *env, o *fulfilmentv1.Order) error {
			_, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: o.GetId(), Reason: "machine down"})
			return err
		}, "cancelled", cancelled, map[string]int{"released": 1}, int32(cancelled)},
		{"shopper cancel", []line{{"LATTE-16", 2}}, func(e *env, o *fulfilmentv1.Order) error {
			_, err := e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId()})
			return err
		}, "cancelled", cancelled, map[string]int{"released": 1}, int32(cancelled)},
		{"line unavailable", []line{{"LATTE-16", 2}, {"CROISSANT", 1}}, func(e *env, o *fulfilmentv1.Order) error {
			_, err := e.store.MarkLineUnavailable(e.asStaff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o.GetId(), LineId: "l2"})
			return err
		}, "line_unavailable", confirmed, map[string]int{"released": 1, "open": 1}, int32(confirmed)},
		{"expiry", []line{{"LATTE-16", 2}}, func(e *env, o *fulfilmentv1.Order) error {
			// Not made ready in time (due two hours ago) and the timer loop behind: the
			// accept expires it.
			if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '2 hours',
				abandon_at = now() - interval '45 minutes', not_accepted_at = NULL, timer_at = now() + interval '1 hour' WHERE id = $1`, o.GetId()); err != nil {
				return err
			}
			_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()})
			return err
		}, "expired", expired, map[string]int{"released": 1}, int32(expired)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noFulfilment: true})
			e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
			e.setStock("s1", "LATTE-16", 5)
			e.setStock("s1", "CROISSANT", 5)
			// No loops in the first life: the release can only run in the second.
			c := e.startChild("after_transition", envChildSweep+"=1h")
			o := e.mustPlace(checkout("alice", "crash-"+tc.name, "s1", tc.lines...), confirmed)
			acted := make(chan error, 1)
			go func() { acted <- tc.act(e, o) }()
			if !c.waitFor("failpoint after_transition reached", 15*time.Second) {
				t.Fatalf("child never reached the failpoint; it said:\n%s", c.output())
			}
			c.kill()
			<-acted
			if s := e.stateOf(o.GetId()); s != tc.state {
				t.Fatalf("order is %s after the committed change, want %s", s, tc.state)
			}
			if got := e.holds(o.GetId()); !mapsEqual(got, map[string]int{"open": len(tc.lines)}) {
				t.Fatalf("holds %v right after the kill, want all still open (the release had not run)", got)
			}

			e.startChild("")
			e.waitHolds(o.GetId(), tc.holds)
			var releases, perHold int
			if err := e.invPool.QueryRow(e.ctx, `SELECT count(*), coalesce(max(n), 0) FROM (SELECT hold_id, count(*) n FROM movements
				WHERE order_id = $1 AND kind = 'hold_released' GROUP BY hold_id) r`, o.GetId()).Scan(&releases, &perHold); err != nil {
				t.Fatal(err)
			}
			if releases != tc.holds["released"] || perHold != 1 {
				t.Fatalf("%d holds released, the most of one %d times; want %d, once each", releases, perHold, tc.holds["released"])
			}
			var changes int
			if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_state = $2 AND event = $3`,
				o.GetId(), tc.history, tc.event).Scan(&changes); err != nil {
				t.Fatal(err)
			}
			if changes != 1 {
				t.Fatalf("%d %s entries in the order's history, want 1", changes, tc.event)
			}
			testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				if n := e.storedEvents(streams.EventSubject("fulfilment", "order", tc.event)); n != 1 {
					return fmt.Errorf("%d %s events stored, want 1", n, tc.event)
				}
				return nil
			})
			e.checkInvariants()
		})
	}
}
