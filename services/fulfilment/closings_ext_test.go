package fulfilment_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/inventory"
)

// relayInventory relays inventory's outbox to JetStream, as the stack does: its store events
// reach fulfilment's consumer.
func (e *env) relayInventory() {
	e.run("inventory outbox relay", outbox.NewRelay(e.invPool, e.js, outbox.RelayConfig{PollInterval: 20 * time.Millisecond}).Run)
}

var closingAdmin = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "ops@example.com"}

func (e *env) setStoreState(store string, c inventory.StateChange) {
	e.t.Helper()
	if _, err := e.inv.SetStoreState(e.ctx, store, c); err != nil {
		e.t.Fatalf("set state of %s: %v", store, err)
	}
}

// storeEventsHandled waits until fulfilment has handled n store state events.
func (e *env) storeEventsHandled(n int) {
	e.t.Helper()
	e.eventsHandled("fulfilment-store-states", n)
}

// eventsHandled waits until fulfilment's consumer has handled n events.
func (e *env) eventsHandled(consumer string, n int) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		var got int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM processed_events WHERE consumer = $1`, consumer).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("%s handled %d events, want %d", consumer, got, n)
		}
		return nil
	})
}

// waitState waits until the order is in state want and returns it as its shopper sees it.
func (e *env) waitState(customer, id string, want fulfilmentv1.OrderState) *fulfilmentv1.Order {
	e.t.Helper()
	var o *fulfilmentv1.Order
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		res, err := e.orders.GetOrder(e.asCustomer(customer), &fulfilmentv1.GetOrderRequest{OrderId: id})
		if err != nil {
			return err
		}
		if o = res.GetOrder(); o.GetState() != want {
			return fmt.Errorf("order %s is %s, want %s", id, o.GetState(), want)
		}
		return nil
	})
	return o
}

func TestClosingAStoreWithCancellationCancelsItsOpenOrdersOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	for _, s := range []string{"s1", "s2"} {
		e.addStore(s, 47.61, -122.33, 5*time.Minute, time.Hour)
		e.setStock(s, "LATTE-16", 20)
	}
	conf := e.placeAt("s1", "ann", "k1", "LATTE-16", 2)
	prep := e.placeAt("s1", "bob", "k2", "LATTE-16", 3)
	e.accept("s1", prep.GetId())
	rdy := e.placeAt("s1", "cat", "k3", "LATTE-16", 1)
	e.accept("s1", rdy.GetId())
	e.markReady("s1", rdy.GetId())
	done := e.placeAt("s1", "dan", "k4", "LATTE-16", 1)
	e.accept("s1", done.GetId())
	e.markReady("s1", done.GetId())
	if _, err := e.handOver("s1", done.GetId(), e.codeOf("dan", done.GetId())); err != nil {
		t.Fatal(err)
	}
	other := e.placeAt("s2", "eve", "k5", "LATTE-16", 4)
	// Placed an hour ago: the closing's own handling must cancel them, not the timer loop's
	// watch for orders confirmed late, which looks at recent orders only.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET create_time = create_time - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}

	// Closed without asking: nothing is cancelled.
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "refit", Actor: closingAdmin})
	e.storeEventsHandled(1)
	time.Sleep(100 * time.Millisecond) // several sweeps (fastTimers: every 20 ms)
	for _, id := range []string{conf.GetId(), prep.GetId(), rdy.GetId()} {
		if s := e.stateOf(id); s == cancelled {
			t.Fatalf("closing without cancel_open_orders cancelled order %s", id)
		}
	}

	// Asked of the store closed already, with the same reason: the open orders are cancelled.
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "refit",
		CancelOpenOrders: true, Actor: closingAdmin})
	for customer, id := range map[string]string{"ann": conf.GetId(), "bob": prep.GetId(), "cat": rdy.GetId()} {
		o := e.waitState(customer, id, cancelled)
		if o.GetReason() != "the store has closed: refit" {
			t.Errorf("order %s cancelled with reason %q", id, o.GetReason())
		}
		last := o.GetHistory()[len(o.GetHistory())-1]
		if !proto.Equal(last.GetActor(), closingAdmin) || last.GetToState() != cancelled {
			t.Errorf("order %s's last history entry is %v", id, last)
		}
		e.waitHolds(id, map[string]int{"released": 1})
	}
	e.waitEvents(conf.GetId(), "confirmed", "cancelled")
	e.waitEvents(rdy.GetId(), "confirmed", "preparing", "ready", "cancelled")
	if s := e.stateOf(done.GetId()); s != collected {
		t.Errorf("the collected order is %s", s)
	}
	if s := e.stateOf(other.GetId()); s != confirmed {
		t.Errorf("the other store's order is %s", s)
	}
	if got := e.available("s1", "LATTE-16"); got != 19 {
		t.Errorf("s1 has %d LATTE-16 to promise, want 19 (20 less the one collected)", got)
	}
	e.checkInvariants()
}

// publishStoreState publishes a StoreStateChanged as inventory's relay would, under a fresh
// event id: fulfilment cannot tell it from a late copy of an event by its id.
func (e *env) publishStoreState(ev *inventoryv1.StoreStateChanged) {
	e.t.Helper()
	data, err := proto.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: streams.EventSubject("inventory", "store", "state_changed"), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, outbox.DeterministicID("test-store-event", fmt.Sprint(time.Now().UnixNano())))
	if _, err := e.js.PublishMsg(e.ctx, msg); err != nil {
		e.t.Fatal(err)
	}
}

// closingEvent is inventory's event of s1 closed with cancellation ("flood") at version.
func closingEvent(version int64) *inventoryv1.StoreStateChanged {
	return &inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Version: version,
		Actor: closingAdmin, ChangeTime: timestamppb.Now()}
}

func (e *env) storeVersion(store string) int64 {
	e.t.Helper()
	st, err := e.inv.GetStore(e.ctx, store)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.GetVersion()
}

// An order whose reserve raced the closing (held before it, answered after the closing was
// handled) is confirmed after the handling: the timer loop cancels it.
func TestOrderConfirmedLateAtAStoreClosedWithCancellationIsCancelled(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	// Inventory's endpoints do not answer yet: the order stays PENDING, its reserve in doubt.
	late := e.mustPlace(checkout("ann", "k1", "s1", line{"LATTE-16", 2}), pending)
	// Fulfilment hears of the closing at the store's next version, while inventory's table still
	// has the store open at this one, as the racing reserve read it; then inventory answers and
	// the order is confirmed.
	e.publishStoreState(closingEvent(e.storeVersion("s1") + 1))
	e.storeEventsHandled(1)
	e.startInventory()
	if o := e.waitState("ann", late.GetId(), cancelled); o.GetReason() != "the store has closed: flood" {
		t.Errorf("late order cancelled with reason %q", o.GetReason())
	}
	e.waitHolds(late.GetId(), map[string]int{"released": 1})
	e.checkInvariants()
}

// A closing covers the orders held before it: reopened at once, the store's new orders stand
// while the timer loop watches it, and a late copy of the closing (a consumer reading the
// stream from its start) cancels none of them either.
func TestClosingNeverCancelsOrdersHeldAfterAReopening(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	before := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Actor: closingAdmin})
	closedAt := e.storeVersion("s1")
	e.waitState("ann", before.GetId(), cancelled)
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_OPEN, Actor: closingAdmin})
	after := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)
	e.publishStoreState(closingEvent(closedAt))
	e.storeEventsHandled(3)
	time.Sleep(100 * time.Millisecond) // several sweeps (fastTimers: every 20 ms)
	if s := e.stateOf(after.GetId()); s != confirmed {
		t.Fatalf("order held after the reopening is %s", s)
	}
	e.checkInvariants()
}

// Events may be handled out of order (a failed one is retried after those behind it): a later
// closing without cancellation (a corrected reason) handled first does not undo the request.
func TestClosingWithCancellationHandledAfterALaterEventStillCancels(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 2)
	v := e.storeVersion("s1")
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_CLOSED,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood, day two", Version: v + 2, Actor: closingAdmin})
	e.publishStoreState(closingEvent(v + 1))
	if got := e.waitState("ann", o.GetId(), cancelled); got.GetReason() != "the store has closed: flood" {
		t.Errorf("cancelled with reason %q", got.GetReason())
	}
}

// insertClosing records a closing of s1 with cancellation at the store's next version as
// handled ago (inventory's table still has the store open, as a racing reserve read it).
func (e *env) insertClosing(ago time.Duration) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO store_closings (store_id, version, reason, actor_kind, actor_id, handled_at)
		VALUES ('s1', $1, 'the store has closed: flood', $2, $3, $4)`,
		e.storeVersion("s1")+1, int16(closingAdmin.GetKind()), closingAdmin.GetId(), time.Now().Add(-ago)); err != nil {
		e.t.Fatal(err)
	}
}

// age moves an order's placement into the past.
func (e *env) age(orderID string, by time.Duration) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET create_time = create_time - $2::bigint * interval '1 microsecond' WHERE id = $1`,
		orderID, by.Microseconds()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) closingsKept() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM store_closings`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// A copy stalled a day between its reserve's answer and its commit confirmed an order the
// closing covers: the last look at the closing, as it is forgotten, cancels the order.
func TestClosingIsLookedAtOnceMoreBeforeItIsForgotten(t *testing.T) {
	e := newEnv(t, envOptions{noLoops: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	e.insertClosing(25 * time.Hour)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.age(o.GetId(), 25*time.Hour)
	e.run("fulfilment", e.svc.Run)
	e.waitState("ann", o.GetId(), cancelled)
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := e.closingsKept(); n != 0 {
			return fmt.Errorf("%d closings kept, want the closing past its memory forgotten", n)
		}
		return nil
	})
	e.checkInvariants()
}

// The last look waits for an order another transaction holds (a copy stalled in a staff
// change), but not for ever, and no other timer waits with it: the closing is kept and looked
// at again once the order is free.
func TestClosingsLastLookHoldsUpNoOtherTimer(t *testing.T) {
	e := newEnv(t, envOptions{noLoops: true, config: func(c *fulfilment.Config) { c.NotAcceptedAfter = 300 * time.Millisecond }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	e.setStock("s2", "LATTE-16", 20)
	covered := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.age(covered.GetId(), 25*time.Hour)
	e.insertClosing(25 * time.Hour)
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(e.ctx) }()
	if _, err := tx.Exec(e.ctx, `SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, covered.GetId()); err != nil {
		t.Fatal(err)
	}
	other := e.placeAt("s2", "bob", "k2", "LATTE-16", 1)
	e.run("fulfilment", e.svc.Run)
	// s2's order is escalated 300 ms after its confirmation, by the timer loop.
	e.waitEvents(other.GetId(), "confirmed", "not_accepted")
	time.Sleep(2500 * time.Millisecond) // past the last look's lock timeout
	if n := e.closingsKept(); n != 1 || e.stateOf(covered.GetId()) != confirmed {
		t.Fatalf("%d closings kept, the covered order %s, while it is locked; want the closing kept", n, e.stateOf(covered.GetId()))
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitState("ann", covered.GetId(), cancelled)
}
