package inventory_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestCreateStoreReportsOpenStatusInItsOwnZone(t *testing.T) {
	e := newEnv(t)
	open := e.createStore(storeAt("always", 47.61, -122.33))
	if st := open.GetOpenStatus(); !st.GetOpenNow() || !st.GetAcceptingOrders() || st.GetNextOpenTime() != nil {
		t.Errorf("round-the-clock store: %v; want open and accepting, no next opening", st)
	}
	if open.GetVersion() != 1 || open.GetState() != inventoryv1.StoreState_STORE_STATE_OPEN {
		t.Errorf("new store version %d state %v", open.GetVersion(), open.GetState())
	}

	// Open only at 03:00–04:00 in Kiritimati (UTC+14) on the weekday it is not now there:
	// closed now, next opening within a week, reported as an instant.
	loc, _ := time.LoadLocation("Pacific/Kiritimati")
	there := time.Now().In(loc)
	other := there.Add(48 * time.Hour).Weekday()
	iso := inventoryv1.Weekday(int(other))
	if other == time.Sunday {
		iso = inventoryv1.Weekday_WEEKDAY_SUNDAY
	}
	st := storeAt("kiritimati", 1.87, -157.4)
	st.TimeZone = "Pacific/Kiritimati"
	st.OpeningHours = []*inventoryv1.OpeningHours{{Weekday: iso, OpenTime: "03:00", CloseTime: "04:00"}}
	closed := e.createStore(st).GetOpenStatus()
	next := closed.GetNextOpenTime().AsTime().In(loc)
	if closed.GetOpenNow() || closed.GetAcceptingOrders() || next.Weekday() != other || next.Hour() != 3 || next.Minute() != 0 {
		t.Errorf("store open %v 03:00 in Kiritimati: status %v (next %v)", other, closed, next)
	}

	got, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: "kiritimati"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetStore().GetTimeZone() != "Pacific/Kiritimati" || len(got.GetStore().GetOpeningHours()) != 1 {
		t.Errorf("GetStore: %v", got.GetStore())
	}
	// Fulfilment asks over NATS for the name, prep time and pickup window.
	var viaNATS inventoryv1.GetStoreResponse
	if err := e.call(inventory.SubjectGetStore, &inventoryv1.GetStoreRequest{StoreId: "always"}, &viaNATS); err != nil {
		t.Fatal(err)
	}
	if s := viaNATS.GetStore(); s.GetName() != "Store always" || s.GetPrepTime().AsDuration() != 5*time.Minute || s.GetPickupWindow().AsDuration() != time.Hour {
		t.Errorf("GetStore over NATS: %v", s)
	}

	_, err = e.admin.CreateStore(e.ctx(), &inventoryv1.CreateStoreRequest{Store: storeAt("always", 1, 1)})
	requireStatus(t, err, codes.AlreadyExists, "always")
	blank := storeAt("blank", 1, 1)
	blank.Name = "   "
	_, err = e.admin.CreateStore(e.ctx(), &inventoryv1.CreateStoreRequest{Store: blank})
	requireStatus(t, err, codes.InvalidArgument, "store.name")
	if n := len(e.outboxEvents(inventory.SubjectStoreCreated)); n != 2 {
		t.Errorf("%d store.created events, want 2", n)
	}
}

func TestCreateStoreAssignsAnIDAndDefaults(t *testing.T) {
	e := newEnv(t)
	st := storeAt("", 47.6, -122.3)
	st.PrepTime, st.PickupWindow = nil, nil
	got := e.createStore(st)
	if !strings.HasPrefix(got.GetId(), "store-") || got.GetPrepTime().AsDuration() != 10*time.Minute || got.GetPickupWindow().AsDuration() != time.Hour {
		t.Errorf("created %v; want a store-… id, 10m prep, 1h window", got)
	}
}

// A state change decided on a store as read (staff may resume only a store not CLOSED) names
// that version, and is refused, changing nothing, once the store has moved on.
func TestSetStoreStateRefusesAStaleExpectedVersion(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	res, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "busy", ExpectedVersion: 1})
	if err != nil || res.GetStore().GetVersion() != 2 {
		t.Fatalf("pause at version 1: %v, %v; want version 2", res, err)
	}
	// The same request again (its answer was lost): done already, not refused, nothing new.
	res, err = e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "busy", ExpectedVersion: 1})
	if err != nil || res.GetStore().GetVersion() != 2 {
		t.Fatalf("the pause retried: %v, %v; want it answered at version 2", res, err)
	}
	if n := len(e.outboxEvents(inventory.SubjectStoreStateChanged)); n != 1 {
		t.Fatalf("%d state events after a pause and its retry; want 1", n)
	}
	_, err = e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "short of staff", ExpectedVersion: 1})
	requireStatus(t, err, codes.Aborted, "expected_version")
	_, err = e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_OPEN, ExpectedVersion: 1})
	requireStatus(t, err, codes.Aborted, "expected_version")
	_, err = e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_OPEN, ExpectedVersion: -1})
	requireStatus(t, err, codes.InvalidArgument, "expected_version")
	got, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: "s1"})
	if err != nil || got.GetStore().GetState() != inventoryv1.StoreState_STORE_STATE_PAUSED || got.GetStore().GetVersion() != 2 {
		t.Fatalf("after refused changes: %v, %v; want PAUSED at version 2", got, err)
	}
}

func TestUpdateStoreChangesMaskedFieldsAndRefusesAStaleVersion(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	change := &inventoryv1.Store{Id: "s1", Name: "Renamed", PrepTime: durationpb.New(12 * time.Minute), TimeZone: "Mars/Olympus"}
	res, err := e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: change,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name", "prep_time"}}, ExpectedVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := res.GetStore()
	if got.GetName() != "Renamed" || got.GetPrepTime().AsDuration() != 12*time.Minute || got.GetTimeZone() != "America/Los_Angeles" || got.GetVersion() != 2 {
		t.Errorf("after update: %v; want name and prep time changed only, version 2", got)
	}
	// The same update again (its answer was lost): done already, not refused, nothing new.
	res, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: change,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name", "prep_time"}}, ExpectedVersion: 1})
	if err != nil || res.GetStore().GetVersion() != 2 {
		t.Fatalf("the update retried: %v, %v; want it answered at version 2", res, err)
	}
	// Another change decided on version 1 is refused.
	_, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: &inventoryv1.Store{Id: "s1", Name: "Renamed twice"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}, ExpectedVersion: 1})
	requireStatus(t, err, codes.Aborted, "expected_version")
	_, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: change,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}, ExpectedVersion: -1})
	requireStatus(t, err, codes.InvalidArgument, "expected_version")
	_, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: change,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"time_zone"}}})
	requireStatus(t, err, codes.InvalidArgument, "store.time_zone")
	_, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: change,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
	requireStatus(t, err, codes.InvalidArgument, "update_mask")
	_, err = e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{Store: &inventoryv1.Store{Id: "nowhere", Name: "Renamed"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
	requireStatus(t, err, codes.NotFound, "store.id")

	events := e.outboxEvents(inventory.SubjectStoreUpdated)
	if len(events) != 1 {
		t.Fatalf("%d store.updated events, want 1", len(events))
	}
	var ev inventoryv1.StoreChanged
	if err := proto.Unmarshal(events[0], &ev); err != nil || ev.GetStore().GetName() != "Renamed" || ev.GetStore().GetVersion() != 2 {
		t.Errorf("store.updated event %v (%v)", &ev, err)
	}
}

// A store whose next opening is more than two weeks away (a refurbishment, a seasonal closure, a
// pop-up trading on dated exceptions only) still takes its last orders a prep time before it
// closes, and says when it closes.
func TestAStoreClosingForMoreThanTwoWeeksTakesItsLastOrdersInTime(t *testing.T) {
	e := newEnv(t)
	// A zone where it is about midday now, so that closing in a few minutes stays today.
	offset := 12 - time.Now().UTC().Hour()
	zone := fmt.Sprintf("Etc/GMT%+d", -offset)
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(loc)
	closes := now.Add(3 * time.Minute)
	today := []*inventoryv1.HoursException{{Date: now.Format("2006-01-02"), OpenTime: "00:00", CloseTime: closes.Format("15:04")}}

	popup := storeAt("popup", 47.61, -122.33) // prep time 5 minutes
	popup.TimeZone, popup.OpeningHours, popup.HoursExceptions = zone, nil, today
	e.createStore(popup)

	refurb := storeAt("refurb", 47.61, -122.33)
	refurb.TimeZone, refurb.HoursExceptions = zone, today
	for i := 1; i <= 20; i++ {
		refurb.HoursExceptions = append(refurb.HoursExceptions, &inventoryv1.HoursException{Date: now.AddDate(0, 0, i).Format("2006-01-02"), Closed: true, Reason: "refurbishment"})
	}
	e.createStore(refurb)

	for _, id := range []string{"popup", "refurb"} {
		e.setStock(id, "LATTE", 10, 0)
		got := e.mustReserve(order("o-"+id, id, "LATTE", 1))
		if got.GetOutcome() != unavailable || !strings.Contains(got.GetMessage(), "closes at") {
			t.Errorf("%s: reserve at a store closing in 3 minutes with 5 minutes' prep: %v %q; want unavailable, saying when it closes", id, got.GetOutcome(), got.GetMessage())
		}
		res, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: id})
		if err != nil {
			t.Fatal(err)
		}
		st := res.GetStore().GetOpenStatus()
		if st.GetAcceptingOrders() || st.GetClosesTime() == nil {
			t.Errorf("%s: open status %v; want not accepting orders, closing at %s", id, st, closes.Truncate(time.Minute).Format(time.RFC3339))
		}
	}
}

func TestPausedOrClosedStoreTakesNoNewOrders(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("before", "s1", "LATTE", 1))
	e.mustReserve(order("also-before", "s1", "LATTE", 2))

	res, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "morning rush"})
	if err != nil {
		t.Fatal(err)
	}
	if st := res.GetStore(); st.GetState() != inventoryv1.StoreState_STORE_STATE_PAUSED || st.GetOpenStatus().GetAcceptingOrders() || !st.GetOpenStatus().GetOpenNow() {
		t.Errorf("paused store: %v", st)
	}
	if n := res.GetOrdersHoldingStock(); n != 2 {
		t.Errorf("pausing a store with two open orders answered %d orders holding stock; want 2, for the caller to deal with", n)
	}
	got := e.mustReserve(order("during", "s1", "LATTE", 1))
	if got.GetOutcome() != unavailable || !strings.Contains(got.GetMessage(), "paused: morning rush") {
		t.Errorf("reserve at a paused store: %v", got)
	}
	// Open orders continue: the earlier hold can still be sold.
	if c := e.commit("before"); len(c) != 1 {
		t.Errorf("commit at a paused store: %v", c)
	}
	// Setting the same state again changes nothing.
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "morning rush"}); err != nil {
		t.Fatal(err)
	}
	closed, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED})
	if err != nil {
		t.Fatal(err)
	}
	if n := closed.GetOrdersHoldingStock(); n != 1 {
		t.Errorf("closing the store after one of its two orders was sold answered %d orders holding stock; want 1", n)
	}
	events := e.outboxEvents(inventory.SubjectStoreStateChanged)
	if len(events) != 2 {
		t.Fatalf("%d state_changed events, want 2", len(events))
	}
	var ev inventoryv1.StoreStateChanged
	if err := proto.Unmarshal(events[1], &ev); err != nil || ev.GetPreviousState() != inventoryv1.StoreState_STORE_STATE_PAUSED || ev.GetState() != inventoryv1.StoreState_STORE_STATE_CLOSED {
		t.Errorf("second state_changed event: %v (%v)", &ev, err)
	}
	if got := e.mustReserve(order("closed", "s1", "LATTE", 1)); got.GetOutcome() != unavailable {
		t.Errorf("reserve at a closed store: %v", got)
	}
	_, err = e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1"})
	requireStatus(t, err, codes.InvalidArgument, "state")
}

func TestStoreOutsideItsHoursTakesNoOrders(t *testing.T) {
	e := newEnv(t)
	st := storeAt("never", 47.61, -122.33)
	st.OpeningHours = nil // no weekday open
	e.createStore(st)
	e.setStock("never", "LATTE", 10, 0)
	got := e.mustReserve(order("o1", "never", "LATTE", 1))
	if got.GetOutcome() != unavailable || !strings.Contains(got.GetMessage(), "outside its opening hours") {
		t.Errorf("reserve at a store with no hours: %v", got)
	}
	if n := e.count(`SELECT count(*) FROM holds`); n != 0 {
		t.Errorf("%d holds", n)
	}
}

// A store takes its last orders a prep time before it closes: an order taken later could not
// be ready while it is open, nor collected. The locator leaves it out, and a reserve naming it
// is told when it closes; a store closing later takes the order.
func TestAStoreClosingWithinItsPrepTimeTakesNoMoreOrders(t *testing.T) {
	e := newEnv(t)
	// A zone where it is about midday now, so that closing in a few minutes stays today.
	offset := 12 - time.Now().UTC().Hour()
	zone := fmt.Sprintf("Etc/GMT%+d", -offset) // the Etc zones' signs are inverted
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(loc)
	closingAt := func(id string, close time.Time) {
		st := storeAt(id, 47.61, -122.33)
		st.TimeZone = zone // prep time 5 minutes
		st.HoursExceptions = []*inventoryv1.HoursException{{Date: now.Format("2006-01-02"), OpenTime: "00:00", CloseTime: close.Format("15:04")}}
		e.createStore(st)
		e.setStock(id, "LATTE", 10, 0)
	}
	closingAt("closing", now.Add(3*time.Minute))
	closingAt("later", now.Add(2*time.Hour))

	got := e.mustReserve(order("o1", "closing", "LATTE", 1))
	if got.GetOutcome() != unavailable || !strings.Contains(got.GetMessage(), "closes at") {
		t.Errorf("reserve at a store closing in 3 minutes, 5 minutes' prep: %v; want unavailable, saying when it closes", got)
	}
	if got := e.mustReserve(order("o2", "later", "LATTE", 1)); got.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("reserve at a store closing in 2 hours: %v", got)
	}
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{
		Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 1000, IncludeNotAccepting: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.GetStores() {
		st := m.GetStore().GetOpenStatus()
		if want := m.GetStore().GetId() == "later"; st.GetAcceptingOrders() != want || !st.GetOpenNow() {
			t.Errorf("%s: open now %v, accepting orders %v; want open, accepting %v", m.GetStore().GetId(), st.GetOpenNow(), st.GetAcceptingOrders(), want)
		}
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE order_id = 'o1'`); n != 0 {
		t.Errorf("%d holds for the refused order", n)
	}
	e.requireInvariants()
}

// A retried update whose values differ from the stored form (hours out of week order, which
// the store keeps sorted) is still recognised as done: compared as it would be stored, not as
// sent.
func TestUpdateStoreRetryIsComparedAsStored(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	change := &inventoryv1.Store{Id: "s1", OpeningHours: []*inventoryv1.OpeningHours{
		{Weekday: inventoryv1.Weekday_WEEKDAY_SUNDAY, OpenTime: "10:00", CloseTime: "16:00"},
		{Weekday: inventoryv1.Weekday_WEEKDAY_MONDAY, OpenTime: "07:00", CloseTime: "19:00"},
	}}
	req := &inventoryv1.UpdateStoreRequest{Store: change, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"opening_hours"}}, ExpectedVersion: 1}
	if _, err := e.admin.UpdateStore(e.ctx(), req); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.UpdateStore(e.ctx(), req)
	if err != nil || res.GetStore().GetVersion() != 2 {
		t.Fatalf("the update retried: %v, %v; want it answered at version 2", res, err)
	}
}

func TestClosingAskingForCancellationTellsFulfilmentThroughTheEvent(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	version := func() int64 {
		res, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetStore().GetVersion()
	}
	before := version()
	// Only a closing may ask: anything else is refused, naming the field, and changes nothing.
	for _, s := range []inventoryv1.StoreState{inventoryv1.StoreState_STORE_STATE_PAUSED, inventoryv1.StoreState_STORE_STATE_OPEN} {
		_, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: s, Reason: "x", CancelOpenOrders: true})
		requireStatus(t, err, codes.InvalidArgument, "cancel_open_orders")
	}
	if v := version(); v != before || len(e.outboxEvents(inventory.SubjectStoreStateChanged)) != 0 {
		t.Fatalf("refused requests changed the store (version %d, was %d) or published", v, before)
	}

	ctx := metadata.AppendToOutgoingContext(e.ctx(), inventory.ActorMetadataKey, "admin:ops@example.com")
	closeWithCancel := &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood", CancelOpenOrders: true}
	if _, err := e.admin.SetStoreState(ctx, closeWithCancel); err != nil {
		t.Fatal(err)
	}
	// Asked again of the store already closed (a retry, or a closing that first did not ask):
	// the request goes out again, with the store's next version.
	if _, err := e.admin.SetStoreState(ctx, closeWithCancel); err != nil {
		t.Fatal(err)
	}
	// Closing again without asking is a retry of nothing new: no event.
	if _, err := e.admin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "flood"}); err != nil {
		t.Fatal(err)
	}
	// Asking with a version read before those changes is refused, though state and reason are
	// the same: the request is not a no-op.
	_, err := e.admin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED,
		Reason: "flood", CancelOpenOrders: true, ExpectedVersion: before})
	requireStatus(t, err, codes.Aborted, "expected_version")
	events := e.outboxEvents(inventory.SubjectStoreStateChanged)
	if len(events) != 2 {
		t.Fatalf("%d state_changed events, want 2", len(events))
	}
	for i, data := range events {
		var ev inventoryv1.StoreStateChanged
		if err := proto.Unmarshal(data, &ev); err != nil {
			t.Fatal(err)
		}
		if !ev.GetCancelOpenOrders() || ev.GetVersion() != before+int64(i)+1 || ev.GetState() != inventoryv1.StoreState_STORE_STATE_CLOSED ||
			ev.GetActor().GetKind() != commonv1.ActorKind_ACTOR_KIND_ADMIN || ev.GetActor().GetId() != "ops@example.com" ||
			time.Since(ev.GetChangeTime().AsTime()).Abs() > time.Minute {
			t.Errorf("event %d: %v", i, &ev)
		}
	}
	if v := version(); v != before+2 {
		t.Errorf("store at version %d, want %d", v, before+2)
	}
}

// A state change whose answer cannot be made (here: the count of orders holding stock, held up
// until the caller gives up) changes nothing, so the caller's retry with the version it read
// goes through instead of being refused as stale by its own first try.
func TestStoreStateChangeThatCannotBeAnsweredChangesNothing(t *testing.T) {
	e := newEnv(t)
	before := e.createStore(storeAt("s1", 47.61, -122.33)).GetVersion()
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("open", "s1", "LATTE", 1))

	lock, err := e.pool.Begin(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(e.ctx()) }()
	if _, err := lock.Exec(e.ctx(), `LOCK TABLE holds IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	req := &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED,
		Reason: "flood", CancelOpenOrders: true, ExpectedVersion: before}
	ctx, cancel := context.WithTimeout(e.ctx(), 300*time.Millisecond)
	defer cancel()
	if _, err := e.admin.SetStoreState(ctx, req); err == nil {
		t.Fatal("the change was answered while the holds could not be counted")
	}
	if err := lock.Rollback(e.ctx()); err != nil {
		t.Fatal(err)
	}
	res, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := res.GetStore(); st.GetVersion() != before || st.GetState() != inventoryv1.StoreState_STORE_STATE_OPEN {
		t.Fatalf("a change that failed left the store %v at version %d; want open at %d", st.GetState(), st.GetVersion(), before)
	}
	if n := len(e.outboxEvents(inventory.SubjectStoreStateChanged)); n != 0 {
		t.Fatalf("a change that failed published %d state_changed events", n)
	}
	closed, err := e.admin.SetStoreState(e.ctx(), req)
	if err != nil {
		t.Fatalf("the retry with the version read before: %v", err)
	}
	if closed.GetStore().GetVersion() != before+1 || closed.GetOrdersHoldingStock() != 1 {
		t.Errorf("the retry answered %v, %d orders holding stock; want version %d, 1", closed.GetStore(), closed.GetOrdersHoldingStock(), before+1)
	}
}

// A pause racing a reserve that has read the store as open and not yet committed (its hold
// insert slowed down by a trigger): the pause waits for the reserve, so its count of orders
// holding stock includes that order; a reserve after it is refused. Before, the pause answered
// 0 and the order was then reserved at the paused store.
func TestStoreStateChangeWaitsForTheReservesThatReadTheStoreBeforeIt(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	if _, err := e.pool.Exec(e.ctx(), `
		CREATE FUNCTION slow_hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.order_id = 'slow-order' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$;
		CREATE TRIGGER slow_hold BEFORE INSERT ON holds FOR EACH ROW EXECUTE FUNCTION slow_hold();`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res *inventoryv1.ReserveHoldsResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := e.reserve(order("slow-order", "s1", "LATTE", 1))
		done <- result{res, err}
	}()
	// The reserve has read the store as open and is writing its hold.
	for deadline := time.Now().Add(10 * time.Second); e.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()`) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the reserve never reached its hold insert")
		}
		time.Sleep(5 * time.Millisecond)
	}
	paused, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1",
		State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "power cut"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.res.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("the reserve under way: %v, %v; want RESERVED (it read the store open)", r.res, r.err)
	}
	if n := paused.GetOrdersHoldingStock(); n != 1 {
		t.Fatalf("the pause answered %d orders holding stock, and the reserve under way when it was asked then held stock at the store; want it counted", n)
	}
	if got := e.mustReserve(order("after", "s1", "LATTE", 1)); got.GetOutcome() != unavailable {
		t.Errorf("a reserve after the pause: %v; want the store unavailable", got)
	}
}

// Closing a store for today with an hours exception (UpdateStore) waits, as SetStoreState does,
// for the reserves that read the old hours: once it answers, every hold placed against the store
// open is committed, and none is placed after. Before, a reserve under way committed its hold at
// the store after the update had answered it closed.
func TestAnHoursChangeWaitsForTheReservesThatReadTheOldHours(t *testing.T) {
	e := newEnv(t)
	st := storeAt("s1", 47.61, -122.33)
	e.createStore(st)
	e.setStock("s1", "LATTE", 10, 0)
	if _, err := e.pool.Exec(e.ctx(), `
		CREATE FUNCTION slow_hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.order_id = 'slow-order' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$;
		CREATE TRIGGER slow_hold BEFORE INSERT ON holds FOR EACH ROW EXECUTE FUNCTION slow_hold();`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		res, err := e.reserve(order("slow-order", "s1", "LATTE", 1))
		if err == nil && res.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			err = fmt.Errorf("outcome %v; want RESERVED (it read the store open)", res.GetOutcome())
		}
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); e.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()`) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the reserve never reached its hold insert")
		}
		time.Sleep(5 * time.Millisecond)
	}
	loc, err := time.LoadLocation(st.TimeZone)
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().In(loc).Format(time.DateOnly)
	upd, err := e.admin.UpdateStore(e.ctx(), &inventoryv1.UpdateStoreRequest{
		Store:      &inventoryv1.Store{Id: "s1", HoursExceptions: []*inventoryv1.HoursException{{Date: today, Closed: true, Reason: "flood"}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hours_exceptions"}}})
	if err != nil {
		t.Fatal(err)
	}
	if upd.GetStore().GetOpenStatus().GetAcceptingOrders() {
		t.Fatal("the store still takes orders after its closing for today")
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE order_id = 'slow-order'`); n != 1 {
		t.Fatalf("when the closing answered, the reserve that read the store open had %d holds committed; want it done first", n)
	}
	if err := <-done; err != nil {
		t.Fatalf("the reserve under way: %v", err)
	}
	if got := e.mustReserve(order("after", "s1", "LATTE", 1)); got.GetOutcome() != unavailable {
		t.Errorf("a reserve after the closing: %v; want the store unavailable", got)
	}
}

// A hold records the store version its reserve decided on, and a retry's answer gives the
// first one's: a closing at a later version covers the order, one before it does not.
func TestHoldsCarryTheStoreVersionTheirReserveReadEvenOnARetry(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	version := func() int64 {
		res, err := e.locator.GetStore(e.ctx(), &inventoryv1.GetStoreRequest{StoreId: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetStore().GetVersion()
	}
	v := version()
	first := e.mustReserve(order("o1", "s1", "LATTE", 2))
	if got := first.GetHolds()[0].GetStoreVersion(); got != v {
		t.Fatalf("hold placed against store version %d, want %d", got, v)
	}
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "s1", State: inventoryv1.StoreState_STORE_STATE_CLOSED,
		CancelOpenOrders: true}); err != nil {
		t.Fatal(err)
	}
	retry := e.mustReserve(order("o1", "s1", "LATTE", 2))
	if retry.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || retry.GetHolds()[0].GetStoreVersion() != v || version() <= v {
		t.Fatalf("retry after the closing answered %v (store now at version %d), want the holds of version %d", retry, version(), v)
	}
}
