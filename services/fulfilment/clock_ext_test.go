package fulfilment_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/inventory"
)

// A copy whose clock runs an hour ahead (a VM resumed, NTP about to step it back) neither
// expires a READY order early nor escalates a CONFIRMED one: the timer loop fires by the
// database's clock, the same for every copy (as the recovery of PENDING orders does). Before,
// it fired by the copy's own, and such a copy expired every order due within the hour.
func TestACopyWhoseClockRunsAheadFiresNoTimerEarly(t *testing.T) {
	var ahead atomic.Int64 // set once the orders are made: the copy's clock then jumps
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.Clock = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	collectable := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.accept("s1", collectable.GetId())
	e.markReady("s1", collectable.GetId())
	unaccepted := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)
	// Due in a minute by the database's clock: the pickup deadline of one, the escalation of
	// the other.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now() + interval '1 minute',
		expiring_soon_at = NULL, timer_at = now() + interval '1 minute' WHERE id = $1`, collectable.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET not_accepted_at = now() + interval '1 minute',
		timer_at = now() + interval '1 minute' WHERE id = $1`, unaccepted.GetId()); err != nil {
		t.Fatal(err)
	}
	ahead.Store(int64(time.Hour))
	time.Sleep(500 * time.Millisecond) // 25 sweeps
	if s := e.stateOf(collectable.GetId()); s != ready {
		t.Errorf("the READY order is %s after a copy's clock jumped an hour ahead; want it READY until its deadline", s)
	}
	var escalated int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_history WHERE order_id = $1 AND actor_id = 'timers'`,
		unaccepted.GetId()).Scan(&escalated); err != nil {
		t.Fatal(err)
	}
	if escalated != 0 {
		t.Errorf("the CONFIRMED order was escalated %d times before its time", escalated)
	}
}

// A staff action on a copy whose clock runs two hours ahead decides by the database's clock, as
// the timer loop does: the hand-over of a READY order inside its pickup window goes through.
// Before, the action's own look at the order's timers used the copy's clock, and such a copy
// expired the order in the shopper's face, releasing its stock.
func TestAnActionOnACopyWhoseClockRunsAheadExpiresNothingEarly(t *testing.T) {
	e := newEnv(t, envOptions{})
	ahead := e.secondStoreClient(func(c *fulfilment.Config) {
		c.Clock = func() time.Time { return time.Now().Add(2 * time.Hour) }
	})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	if _, err := ahead.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()}); err != nil {
		t.Fatalf("accept at the copy ahead: %v", err)
	}
	if _, err := ahead.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o.GetId()}); err != nil {
		t.Fatalf("mark ready at the copy ahead: %v", err)
	}
	res, err := ahead.HandOver(e.asStaff("s1"), &fulfilmentv1.HandOverRequest{StoreId: "s1", OrderId: o.GetId(), PickupCode: e.codeOf("ann", o.GetId())})
	if err != nil {
		t.Fatalf("hand-over with the right code, inside the pickup window by the database's clock, at the copy ahead: %v; the order is %s",
			err, e.stateOf(o.GetId()))
	}
	if got := res.GetOrder().GetState(); got != collected {
		t.Fatalf("order %s after its hand-over, want COLLECTED", got)
	}
}

// A copy whose clock runs an hour behind the database's tries a PENDING order it could not
// settle again once per PendingAfter, as one with a right clock does: the recovery loop picks
// orders by the database's clock and sets their next try by it. Set by the copy's clock, the
// next try lay in the database's past, and inventory was asked again every sweep (132 times in
// 3 s).
func TestASlowClockRetriesAPendingOrderNoMoreOftenThanPendingAfter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
	}{{"right clock", 0}, {"clock an hour behind", -time.Hour}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noInventory: true, config: func(c *fulfilment.Config) {
				c.PendingAfter = 2 * time.Second
				c.Clock = func() time.Time { return time.Now().Add(tc.offset) }
			}})
			odd := e.mustPlace(checkout("ivan", "k-odd", "s1", line{"LATTE-16", 1}), pending)
			nc := testenv.NATSConn(t, e.ns)
			rpc, err := natsrpc.AddService(nc, "inventory", "0.0.1", "an inventory that never settles", testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rpc.Stop() })
			var asked atomic.Int32
			if err := natsrpc.Handle(rpc, natsrpc.Subject("inventory", "reserve_holds"), func(_ context.Context, req *inventoryv1.ReserveHoldsRequest) (*inventoryv1.ReserveHoldsResponse, error) {
				if req.GetOrderId() == odd.GetId() {
					asked.Add(1)
				}
				return &inventoryv1.ReserveHoldsResponse{}, nil // no outcome: not settled, tried again later
			}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			if n := asked.Load(); n > 3 {
				t.Errorf("inventory asked %d times in 3 s for one PENDING order; want at most 3 (PendingAfter 2 s)", n)
			}
		})
	}
}

// A copy whose clock runs an hour ahead places an order and accepts it: the order's history stays
// in time order, every time written by the database's clock (as the copy last read it, where no
// statement reads it first). Before, placing wrote by the copy's clock and the action by the
// database's, and the history went back an hour between CONFIRMED and PREPARING.
func TestAnOrdersHistoryStaysInTimeOrderOnACopyWhoseClockRunsAhead(t *testing.T) {
	for _, loops := range []bool{true, false} {
		// Without its loops, the copy has not read the database's clock before the placement
		// (its timer loop's first round has not run), as just after a start.
		t.Run(fmt.Sprintf("loops %v", loops), func(t *testing.T) {
			e := newEnv(t, envOptions{noLoops: !loops, config: func(c *fulfilment.Config) {
				c.Clock = func() time.Time { return time.Now().Add(time.Hour) }
			}})
			e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
			e.setStock("s1", "LATTE-16", 4)
			o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
			e.accept("s1", o.GetId())
			e.historyInTimeOrder(o.GetId())
		})
	}
}

// A store's closing cancels an order a staff action holds once the action is done, and writes
// the cancellation at the time it got the order, not at the time it began to wait for it: the
// history stays in time order, every clock right. Before, the closing took its time before the
// wait, and CANCELLED was written a second before the PREPARING it came after.
func TestAClosingThatWaitedForAnOrderWritesItsCancellationAfterIt(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)

	holder, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(e.ctx) }()
	if _, err := holder.Exec(e.ctx, `SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	waiting := func(want int) {
		t.Helper()
		testenv.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			var n int
			if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n < want {
				return fmt.Errorf("%d transactions waiting for the order, want %d", n, want)
			}
			return nil
		})
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()})
		accepted <- err
	}()
	waiting(1)
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood",
		CancelOpenOrders: true, Actor: closingAdmin})
	waiting(2)
	time.Sleep(time.Second) // the closing's wait
	if err := holder.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Logf("accept: %v", err)
	}
	e.waitState("ann", o.GetId(), cancelled)
	e.historyInTimeOrder(o.GetId())
}

// historyInTimeOrder fails the test unless order id's history entries are in time order.
func (e *env) historyInTimeOrder(id string) {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `SELECT seq, event, time FROM order_history WHERE order_id = $1 ORDER BY seq`, id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var last time.Time
	for rows.Next() {
		var (
			seq int64
			ev  string
			at  time.Time
		)
		if err := rows.Scan(&seq, &ev, &at); err != nil {
			e.t.Fatal(err)
		}
		if at.Before(last) {
			e.t.Errorf("history entry %d (%s) at %s is %s before the entry before it", seq, ev, at.UTC(), last.Sub(at).Round(time.Millisecond))
		}
		last = at
	}
}

// A copy whose clock runs 20 minutes ahead of the database's (more than a placement hold
// lasts) confirms the orders it places: the holds' deadlines were set by the database's clock,
// and their lapse is judged by it too. Judged by the copy's clock, every fresh hold would look
// ended and every order be rejected as lapsed.
func TestACopyWhoseClockRunsAheadConfirmsWhatItPlaces(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.Clock = func() time.Time { return time.Now().Add(20 * time.Minute) }
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	if got := o.GetState(); got != confirmed {
		t.Fatalf("an order placed on a copy 20 minutes ahead is %s (%q); want CONFIRMED", got, o.GetReason())
	}
}
