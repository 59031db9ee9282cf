package fulfilment_test

import (
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// A scaled deployment: the store is paused through another inventory copy, whose change the
// copy answering the reserve has not heard of yet (its store cache is up to StoreCacheMaxAge
// behind; the reserve's locked path reads the row and sees the pause). The nearest-store
// checkout must then be answered as if the paused store were not there: the nearest store
// that takes orders is short of CROISSANT, and the rejection must say so.
func TestANearestCheckoutPassesOverAStoreJustPausedAtAnotherCopy(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("near", 47.6100, -122.3300, 5*time.Minute, time.Hour)
	e.addStore("next", 47.6190, -122.3300, 5*time.Minute, time.Hour) // 1 km north
	e.setStock("near", "LATTE-16", 5)
	e.setStock("near", "CROISSANT", 5)
	e.setStock("next", "LATTE-16", 5) // no CROISSANT at "next"

	// This copy's store cache is loaded and current (any locator query does it).
	warm(t, e)
	// Another copy of inventory (same schema) pauses "near".
	other := otherInventoryCopy(t, e)
	if _, err := other.SetStoreState(e.ctx, "near", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "espresso machine down"}); err != nil {
		t.Fatal(err)
	}

	req := checkout("paula", "nearby-paused", "", line{"LATTE-16", 1}, line{"CROISSANT", 1})
	req.Near, req.RadiusMeters = &commonv1.LatLng{Latitude: 47.6100, Longitude: -122.3300}, 5000
	o, err := e.place(req)
	if err != nil {
		t.Fatal(err)
	}
	if o.GetState() != rejected {
		t.Fatalf("order is %s (%s), want REJECTED: the only store with every line is paused", o.GetState(), o.GetReason())
	}
	sh := o.GetShortages()
	if len(sh) != 1 || sh[0].GetSku() != "CROISSANT" || sh[0].GetAvailable() != 0 {
		t.Fatalf("rejected with shortages %v and reason %q; want CROISSANT short (available 0) at the nearest store taking orders, \"next\"", sh, o.GetReason())
	}
	if strings.Contains(o.GetReason(), "the nearest, near,") {
		t.Fatalf("reason %q blames the paused store \"near\" for a shortage", o.GetReason())
	}
}

// The same with only the paused store in the radius: "no store takes orders", not a shortage
// of nothing.
func TestANearestCheckoutWhoseOnlyStoreWasJustPausedSaysNoStoreTakesOrders(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("near", 47.6100, -122.3300, 5*time.Minute, time.Hour)
	e.setStock("near", "LATTE-16", 5)
	warm(t, e)

	other := otherInventoryCopy(t, e)
	if _, err := other.SetStoreState(e.ctx, "near", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "espresso machine down"}); err != nil {
		t.Fatal(err)
	}

	req := checkout("paula", "only-paused", "", line{"LATTE-16", 1})
	req.Near, req.RadiusMeters = &commonv1.LatLng{Latitude: 47.6100, Longitude: -122.3300}, 5000
	o, err := e.place(req)
	if err != nil {
		t.Fatal(err)
	}
	if o.GetState() != rejected {
		t.Fatalf("order is %s (%s), want REJECTED", o.GetState(), o.GetReason())
	}
	if strings.Contains(o.GetReason(), "short of") {
		t.Fatalf("rejected with reason %q and shortages %v: stock is plentiful, the store is paused", o.GetReason(), o.GetShortages())
	}
}

// otherInventoryCopy is a second inventory on e's schema, as a scaled deployment has: e's copy
// hears nothing of its changes (no relay runs for it), so its store cache is behind, as it is
// up to StoreCacheMaxAge when another copy's event is late or lost.
func otherInventoryCopy(t *testing.T, e *env) *inventory.Service {
	t.Helper()
	var schema string
	if err := e.invPool.QueryRow(e.ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	return inventory.New(inventory.Config{Pool: testenv.Pool(t, schema, inventory.Migrations()), Logger: testenv.Logger(t)})
}

// warm loads e's inventory store cache (any locator query does it).
func warm(t *testing.T, e *env) {
	t.Helper()
	if _, err := e.inv.FindStores(e.ctx, &inventoryv1.FindStoresRequest{Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 5000}); err != nil {
		t.Fatal(err)
	}
}

// The reverse: the store was paused and is resumed through another copy. A checkout naming the
// store is confirmed (the reserve reads the store's row), but a checkout for the nearest store,
// at the same moment, at the same store, is REJECTED "no store takes orders": the nearest-store
// reserve picks its candidates from the cache alone.
func TestANearestCheckoutRightAfterTheStoreResumedAtAnotherCopyIsConfirmed(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("near", 47.6100, -122.3300, 5*time.Minute, time.Hour)
	e.setStock("near", "LATTE-16", 5)
	if _, err := e.inv.SetStoreState(e.ctx, "near", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "espresso machine down"}); err != nil {
		t.Fatal(err)
	}
	warm(t, e)

	other := otherInventoryCopy(t, e)
	if _, err := other.SetStoreState(e.ctx, "near", inventory.StateChange{State: inventoryv1.StoreState_STORE_STATE_OPEN}); err != nil {
		t.Fatal(err)
	}

	req := checkout("paula", "nearby-reopened", "", line{"LATTE-16", 1})
	req.Near, req.RadiusMeters = &commonv1.LatLng{Latitude: 47.6100, Longitude: -122.3300}, 5000
	o, err := e.place(req)
	if err != nil {
		t.Fatal(err)
	}
	// Control: the same moment, the store named.
	e.mustPlace(checkout("nina", "named-reopened", "near", line{"LATTE-16", 1}), confirmed)
	if o.GetState() != confirmed {
		t.Fatalf("nearest-store checkout is %s (%q), yet a checkout naming that store right after was confirmed", o.GetState(), o.GetReason())
	}
}
