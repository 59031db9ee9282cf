package fulfilment_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
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

// storeVersionSeen waits until fulfilment has handled the store's state event of version v.
func (e *env) storeVersionSeen(store string, v int64) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		var got int64
		if err := e.pool.QueryRow(e.ctx, `SELECT version FROM store_closures WHERE store_id = $1`, store).Scan(&got); err != nil {
			return err
		}
		if got != v {
			return fmt.Errorf("store %s at version %d in fulfilment, want %d", store, got, v)
		}
		return nil
	})
}

func (e *env) storeVersion(store string) int64 {
	e.t.Helper()
	st, err := e.inv.GetStore(e.ctx, store)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.GetVersion()
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
	e.storeVersionSeen("s1", e.storeVersion("s1"))
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

func TestOrderConfirmedAtAStoreClosedWithCancellationIsCancelledByTheSweep(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	// Fulfilment hears of a closing with cancellation that inventory has not applied yet, as
	// when a reserve that read the store open commits after the closing: the order that reserve
	// places is confirmed after fulfilment handled the closing.
	v := e.storeVersion("s1")
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Version: v + 1, Actor: closingAdmin})
	e.storeVersionSeen("s1", v+1)
	late := e.placeAt("s1", "ann", "k1", "LATTE-16", 2)
	if o := e.waitState("ann", late.GetId(), cancelled); o.GetReason() != "the store has closed: flood" {
		t.Errorf("late order cancelled with reason %q", o.GetReason())
	}
	e.waitHolds(late.GetId(), map[string]int{"released": 1})

	// Reopened: the store's new orders stand.
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_CLOSED,
		State: inventoryv1.StoreState_STORE_STATE_OPEN, Version: v + 2, Actor: closingAdmin})
	e.storeVersionSeen("s1", v+2)
	after := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)

	// A late copy of the closing (older than the reopening) changes nothing, nor does a
	// closing that did not ask for cancellation.
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true, Version: v + 1, Actor: closingAdmin})
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_OPEN,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "storm", Version: v + 3, Actor: closingAdmin})
	e.storeVersionSeen("s1", v+3)
	time.Sleep(100 * time.Millisecond) // several sweeps (fastTimers: every 20 ms)
	if s := e.stateOf(after.GetId()); s != confirmed {
		t.Fatalf("order placed after the reopening is %s", s)
	}
	e.checkInvariants()
}

func TestStoreClosedWithCancellationStaysCancellingUntilReopened(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	v := e.storeVersion("s1")
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED,
		Reason: "flood", CancelOpenOrders: true, Version: v + 1, Actor: closingAdmin})
	// A new reason while still closed keeps the request (the closing asked once).
	e.publishStoreState(&inventoryv1.StoreStateChanged{StoreId: "s1", PreviousState: inventoryv1.StoreState_STORE_STATE_CLOSED,
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood, day two", Version: v + 2, Actor: closingAdmin})
	e.storeVersionSeen("s1", v+2)
	late := e.placeAt("s1", "ann", "k1", "LATTE-16", 2)
	if o := e.waitState("ann", late.GetId(), cancelled); o.GetReason() != "the store has closed: flood" {
		t.Errorf("late order cancelled with reason %q", o.GetReason())
	}
}
