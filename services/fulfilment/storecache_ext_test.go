package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// The store cache and inventory's store events: a copy must not count deadlines in opening
// hours the store no longer has (storecache.go).

// Scale-out: a holiday closure added for tomorrow is handled by the store-hours
// consumer (one copy of the shared durable consumer: here copy A, so copy B only hears of it
// through the store event every copy hears). An order made ready a moment later
// through a copy that had the store's details cached (its earlier Accept) must get its pickup
// window counted in the hours the store has now: tomorrow is closed, so the window runs on
// from the day after's opening. Counted in the cached hours it ends tomorrow morning while
// the store is shut for the holiday, and the order expires with nobody able to collect it.
func TestMarkReadyOnAnotherCopyAfterAnHoursChangeUsesTheNewHours(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	_, other := e.storeCopyNotConsuming() // copy B, serving staff calls; copy A handles the update
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	// Accepted through copy B: B now has s1's details (and hours) cached.
	if _, err := other.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()}); err != nil {
		t.Fatal(err)
	}

	// Tomorrow is made a holiday through inventory (any copy); fulfilment's consumer handles it.
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1)

	// Made ready through copy B, after the change was handled.
	res, err := other.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	pickup := res.GetOrder().GetPickupDeadline().AsTime()
	t.Logf("closes %s, old opening %s, holiday %s: pickup by %s",
		closes.Format(time.RFC3339), opens.Format(time.RFC3339), dayAfter.AddDate(0, 0, -1).Format(time.DateOnly), pickup.In(loc).Format(time.RFC3339))
	if !pickup.After(dayAfter) {
		t.Errorf("made ready after tomorrow became a holiday: pickup by %s, inside the holiday (the store's old hours); want after the day after's opening %s",
			pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
	// Nothing corrects it later: the hours event was handled before the order was ready.
	time.Sleep(500 * time.Millisecond)
	if stored, _ := e.deadlines(o.GetId()); !stored.After(dayAfter) {
		t.Errorf("stored pickup deadline %s stays inside the holiday", stored.In(loc).Format(time.RFC3339))
	}
}

// The same on one copy: the copy that placed the order (its store cache warm from the
// placement) marks it ready after the hours change was handled.
func TestMarkReadyAfterAnHoursChangeUsesTheNewHours(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1)
	got := e.markReady("s1", o.GetId())
	if pickup := got.GetPickupDeadline().AsTime(); !pickup.After(dayAfter) {
		t.Errorf("pickup by %s, inside tomorrow's holiday; want after %s", pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
}

// The same at placement: an order confirmed after the hours change was handled, by a copy that
// has the store cached from an earlier checkout, is recorded at the store's new version (its
// holds') but has its abandon time counted in the old hours, and the hours consumer, which only
// looks at orders when an update arrives, never corrects it.
func TestOrderPlacedAfterAnHoursChangeCountsTheNewHours(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	e.placeAt("s1", "ann", "k1", "LATTE-16", 1) // the store's details are cached now
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1)
	o := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)
	if _, abandon := e.deadlines(o.GetId()); !abandon.After(dayAfter) {
		t.Errorf("placed after tomorrow became a holiday: abandons at %s, inside the holiday; want after %s",
			abandon.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
}

// The same on another copy whose read of the store fails: copy B has the store cached from an
// earlier checkout and has heard of the hours change (another copy's consumer handled it), and
// its next placement's holds are at the store's new version but its read of the store fails.
// The order is not confirmed by the entry B has, older than its holds; it waits PENDING, and
// the recovery loop confirms it in the new hours once the store can be read. (It used to be
// confirmed by the old entry, "stale beats nothing", its abandon time inside the holiday, and
// nothing counted it again.)
func TestAPlacementWhoseStoreReadFailsIsNotCountedInHoursOlderThanItsHolds(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	b, _ := e.storeCopyNotConsuming()
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	first, err := b.PlaceOrder(e.ctx, checkout("ann", "k1", "s1", line{"LATTE-16", 1}))
	if err != nil || first.GetState() != confirmed {
		t.Fatalf("first order through copy B: %v %v", first.GetState(), err)
	}
	before := fulfilment.StoreCacheGeneration(b)
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1) // by the first copy
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if fulfilment.StoreCacheGeneration(b) == before {
			return fmt.Errorf("copy B has not heard the store's event")
		}
		return nil
	})
	fulfilment.FailStoreLookups(b, true)
	o, err := b.PlaceOrder(e.ctx, checkout("bob", "k2", "s1", line{"LATTE-16", 1}))
	fulfilment.FailStoreLookups(b, false)
	if err != nil {
		t.Fatal(err)
	}
	if o.GetState() != pending {
		_, abandon := e.deadlines(o.GetId())
		t.Fatalf("placed while its store could not be read: %s, abandons at %s (holiday until %s); want PENDING until the store can be read",
			o.GetState(), abandon.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != confirmed {
			return fmt.Errorf("order %s", s)
		}
		return nil
	})
	if _, abandon := e.deadlines(o.GetId()); !abandon.After(dayAfter) {
		t.Errorf("confirmed by the recovery loop: abandons at %s, inside tomorrow's holiday; want after %s",
			abandon.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
}

// The copy that handles a store's update for the hours consumer keeps the store as it read it:
// its next MarkReady there counts the new hours without asking inventory again (here it could
// not: lookups fail, and a pickup window would run in plain time, into the holiday).
func TestHoursConsumerKeepsTheStoreItReadForTheNextMarkReady(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1)
	fulfilment.FailStoreLookups(e.svc, true)
	got := e.markReady("s1", o.GetId())
	if pickup := got.GetPickupDeadline().AsTime(); !pickup.After(dayAfter) {
		t.Errorf("pickup by %s, inside tomorrow's holiday; want after %s", pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
}

// The race: copy B reads the store's hours for a MarkReady just before the holiday closure is
// made, and commits after copy A's hours consumer has looked at the store's orders (the order
// was PREPARING then). B heard the store's event meanwhile, so it counts the order's deadlines
// again once its MarkReady has committed.
func TestMarkReadyRacingAnHoursChangeIsCountedAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.relayInventory()
	b, other := e.storeCopyNotConsuming()
	loc, closes, _ := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "ann", "k1", "LATTE-16", 1)
	if _, err := other.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()}); err != nil {
		t.Fatal(err)
	}
	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fulfilment.AfterStoreRead(b, func() { once.Do(func() { close(read); <-release }) })
	ready := make(chan error, 1)
	go func() {
		_, err := other.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o.GetId()})
		ready <- err
	}()
	<-read // B has the old hours in hand
	before := fulfilment.StoreCacheGeneration(b)
	dayAfter := e.closeTomorrow(loc, closes)
	e.eventsHandled("fulfilment-store-hours", 1) // by copy A, while the order is PREPARING
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if fulfilment.StoreCacheGeneration(b) == before {
			return fmt.Errorf("copy B has not heard the store's event")
		}
		return nil
	})
	close(release)
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	if pickup, _ := e.deadlines(o.GetId()); !pickup.After(dayAfter) {
		t.Errorf("made ready in the old hours while the holiday was being made: pickup by %s, inside the holiday; want after %s",
			pickup.In(loc).Format(time.RFC3339), dayAfter.Format(time.RFC3339))
	}
}

// storeCopyNotConsuming is a second copy of fulfilment serving staff calls whose background
// work (the shared durable consumers among it) does not run: every event of those consumers is
// handled by the first copy.
func (e *env) storeCopyNotConsuming() (*fulfilment.Service, fulfilmentv1.StoreOrderServiceClient) {
	e.t.Helper()
	cfg := fulfilment.Config{Pool: e.pool, NATS: testenv.NATSConn(e.t, e.ns), PickupCodeSecret: testSecret, Logger: testenv.Logger(e.t)}
	fastTimers(&cfg)
	svc, err := fulfilment.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(svc.Close)
	srv := grpc.NewServer()
	svc.RegisterGRPC(srv)
	return svc, fulfilmentv1.NewStoreOrderServiceClient(testenv.GRPC(e.t, srv))
}
