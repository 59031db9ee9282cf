package fulfilment_test

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/streams"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// setHoursExceptions replaces store s1's exceptions to its weekly hours.
func (e *env) setHoursExceptions(exceptions ...*inventoryv1.HoursException) {
	e.t.Helper()
	if _, err := e.inv.UpdateStore(e.ctx, &inventoryv1.Store{Id: "s1", HoursExceptions: exceptions}, []string{"hours_exceptions"}, 0); err != nil {
		e.t.Fatal(err)
	}
}

// closeTomorrow makes tomorrow a holiday at s1, today's hours kept (closing at closes), and
// returns the start of the day after, when s1 opens again (all day from 00:00).
func (e *env) closeTomorrow(loc *time.Location, closes time.Time) (dayAfter time.Time) {
	today := time.Now().In(loc)
	tomorrow := today.AddDate(0, 0, 1)
	e.setHoursExceptions(
		&inventoryv1.HoursException{Date: today.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
		&inventoryv1.HoursException{Date: tomorrow.Format(time.DateOnly), Closed: true, Reason: "holiday"},
	)
	return time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day()+1, 0, 0, 0, 0, loc)
}

// deadlines reads an order's pickup deadline and abandon time as stored.
func (e *env) deadlines(id string) (pickup, abandon time.Time) {
	e.t.Helper()
	var p, a *time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT pickup_deadline, abandon_at FROM orders WHERE id = $1`, id).Scan(&p, &a); err != nil {
		e.t.Fatal(err)
	}
	if p != nil {
		pickup = *p
	}
	if a != nil {
		abandon = *a
	}
	return pickup, abandon
}

// A holiday closure added for tomorrow, after a READY order was given a pickup window that runs
// on into tomorrow's opening: the window moves on to the next day the store opens, as the hours
// it was given would have counted it, the order's holds with it; an order not yet ready gets its
// abandon time moved the same way. Each is rescheduled in its history, by inventory, and its
// shopper's watch sees it. Hours that would end a window sooner move nothing: the shopper keeps
// the time they were given.
func TestStoreHoursChangedMoveOpenOrdersDeadlinesOnlyLater(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	ready := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.accept("s1", ready.GetId())
	readyAt := time.Now()
	e.markReady("s1", ready.GetId())
	preparing := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)
	e.accept("s1", preparing.GetId())

	pickup, _ := e.deadlines(ready.GetId())
	if want := opens.Add(time.Hour - closes.Sub(readyAt)); pickup.Sub(want).Abs() > 2*time.Second {
		t.Fatalf("made ready at %s, the store closing at %s: pickup by %s; want about %s, the rest of the hour from tomorrow's opening",
			readyAt.In(loc).Format(time.RFC3339), closes.Format(time.RFC3339), pickup.In(loc).Format(time.RFC3339), want.Format(time.RFC3339))
	}
	_, abandon := e.deadlines(preparing.GetId())

	// Tomorrow is made a holiday: the store next opens the day after, all day from 00:00.
	today := time.Now().In(loc)
	tomorrow := today.AddDate(0, 0, 1)
	e.setHoursExceptions(
		&inventoryv1.HoursException{Date: today.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
		&inventoryv1.HoursException{Date: tomorrow.Format(time.DateOnly), Closed: true, Reason: "holiday"},
	)
	e.eventsHandled("fulfilment-store-hours", 1)
	dayAfter := time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day()+1, 0, 0, 0, 0, loc)
	newPickup, _ := e.deadlines(ready.GetId())
	if got, want := newPickup.Sub(dayAfter), pickup.Sub(opens); (got - want).Abs() > time.Second {
		t.Fatalf("pickup by %s (was %s) after tomorrow became a holiday; want the rest of the hour from the day after's opening, %s, and %s on",
			newPickup.In(loc).Format(time.RFC3339), pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339), want)
	}
	if _, newAbandon := e.deadlines(preparing.GetId()); !newAbandon.After(dayAfter) || !newAbandon.After(abandon) {
		t.Errorf("the order being prepared expires at %s if not made ready (was %s); want after the day after's opening, %s",
			newAbandon.In(loc).Format(time.RFC3339), abandon.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
	e.waitHoldsExpireAfter(ready.GetId(), newPickup)
	e.waitEvents(ready.GetId(), "confirmed", "preparing", "ready", "rescheduled")
	e.waitEvents(preparing.GetId(), "confirmed", "preparing", "rescheduled")
	got, err := e.orders.GetOrder(e.asCustomer("ann"), &fulfilmentv1.GetOrderRequest{OrderId: ready.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetOrder().GetPickupDeadline().AsTime().Equal(newPickup) {
		t.Errorf("the shopper sees pickup by %s; want %s", got.GetOrder().GetPickupDeadline().AsTime(), newPickup)
	}
	h := got.GetOrder().GetHistory()
	if last := h[len(h)-1]; last.GetActor().GetKind() != commonv1.ActorKind_ACTOR_KIND_SYSTEM || last.GetActor().GetId() != "inventory" ||
		last.GetToState() != fulfilmentv1.OrderState_ORDER_STATE_READY || last.GetReason() != "the store's opening hours changed" {
		t.Errorf("the order's last transition: %v; want READY → READY by inventory, the hours changed", last)
	}

	// The holiday called off: tomorrow's hours would end the window sooner. Nothing moves.
	e.setHoursExceptions(&inventoryv1.HoursException{Date: today.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")})
	e.eventsHandled("fulfilment-store-hours", 2)
	if again, _ := e.deadlines(ready.GetId()); !again.Equal(newPickup) {
		t.Errorf("pickup by %s after hours that would end it sooner; want it kept, %s", again.In(loc).Format(time.RFC3339), newPickup.In(loc).Format(time.RFC3339))
	}
	if evs := e.events.of(ready.GetId()); slices.Index(evs, "rescheduled") != len(evs)-1 || len(evs) != 4 {
		t.Errorf("events %v; want one rescheduling only", evs)
	}

	// An update older than the store as it is now, read again (or late), with hours that would
	// move the window later still (two days closed): counted in the store's hours as they are
	// now, which move nothing.
	cur, err := e.inv.GetStore(e.ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	stale := proto.CloneOf(cur)
	stale.Version--
	stale.HoursExceptions = []*inventoryv1.HoursException{
		{Date: today.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
		{Date: tomorrow.Format(time.DateOnly), Closed: true}, {Date: dayAfter.Format(time.DateOnly), Closed: true}}
	data, err := proto.Marshal(&inventoryv1.StoreChanged{Store: stale})
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: streams.EventSubject("inventory", "store", "updated"), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "stale-store-update")
	if _, err := e.js.PublishMsg(e.ctx, msg); err != nil {
		t.Fatal(err)
	}
	e.eventsHandled("fulfilment-store-hours", 3)
	if again, _ := e.deadlines(ready.GetId()); !again.Equal(newPickup) {
		t.Errorf("pickup by %s after a stale update was read; want it kept, %s", again.In(loc).Format(time.RFC3339), newPickup.In(loc).Format(time.RFC3339))
	}
	e.checkInvariants()
}

// An hours change whose event fulfilment handles only after the store was paused and resumed
// (a consumer a moment behind): the pause moved the store's version on, and its event is not
// one this consumer reads, so no later update will come. The orders are still counted in the
// hours the store has now, the holiday among them.
func TestStoreHoursChangedThenPausedStillMoveDeadlines(t *testing.T) {
	e := newEnv(t, envOptions{})
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	ready := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.accept("s1", ready.GetId())
	e.markReady("s1", ready.GetId())
	pickup, _ := e.deadlines(ready.GetId())

	dayAfter := e.closeTomorrow(loc, closes)
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "short-staffed"})
	e.setStoreState("s1", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_OPEN})
	e.relayInventory() // only now does fulfilment hear of the hours change
	e.eventsHandled("fulfilment-store-hours", 1)

	if got, _ := e.deadlines(ready.GetId()); !got.After(dayAfter) {
		t.Errorf("pickup by %s (was %s) though tomorrow is now a holiday; want it moved past %s",
			got.In(loc).Format(time.RFC3339), pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
	e.checkInvariants()
}
