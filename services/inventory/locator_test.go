package inventory_test

import (
	"math"
	"strings"
	"testing"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// Search centre for the locator tests, and a store that far north of it.
var centre = &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3}

func northOf(id string, meters float64) *inventoryv1.Store {
	return storeAt(id, centre.GetLatitude()+meters/111_195, centre.GetLongitude())
}

// locatorChain: stores north of the centre at known distances, with A and B stocked.
func locatorChain(t *testing.T) *env {
	e := newEnv(t)
	for _, s := range []struct {
		id     string
		meters float64
		a, b   int32
	}{
		{"near", 500, 1, 0},
		{"no-hours", 800, 9, 9},
		{"mid", 1500, 5, 5},
		{"paused", 3000, 5, 5},
		{"farther", 5000, 10, 10},
		{"outside", 20_000, 10, 10},
	} {
		st := northOf(s.id, s.meters)
		if s.id == "no-hours" {
			st.OpeningHours = nil
		}
		e.createStore(st)
		e.setStock(s.id, "A", s.a, 0)
		e.setStock(s.id, "B", s.b, 0)
	}
	if _, err := e.admin.SetStoreState(e.ctx(), &inventoryv1.SetStoreStateRequest{StoreId: "paused", State: inventoryv1.StoreState_STORE_STATE_PAUSED}); err != nil {
		t.Fatal(err)
	}
	return e
}

func ids(ms []*inventoryv1.StoreMatch) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetStore().GetId())
	}
	return strings.Join(out, ",")
}

func TestFindStoresListsAcceptingStoresNearestFirstWithAvailability(t *testing.T) {
	e := locatorChain(t)
	lines := []*inventoryv1.StockLine{{Sku: "A", Quantity: 1}, {Sku: "B", Quantity: 1}, {Sku: "A", Quantity: 1}}
	find := func(req *inventoryv1.FindStoresRequest) []*inventoryv1.StoreMatch {
		t.Helper()
		req.Location, req.Lines = centre, lines
		res, err := e.locator.FindStores(e.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res.GetStores()
	}

	got := find(&inventoryv1.FindStoresRequest{})
	if ids(got) != "near,mid,farther" {
		t.Fatalf("stores %s; want near,mid,farther (accepting, within 10 km, nearest first)", ids(got))
	}
	near := got[0]
	if math.Abs(near.GetDistanceMeters()-500) > 5 || near.GetCanFulfilAll() || !near.GetStore().GetOpenStatus().GetAcceptingOrders() {
		t.Errorf("near: distance %.1f, can fulfil %v", near.GetDistanceMeters(), near.GetCanFulfilAll())
	}
	want := []*inventoryv1.LineAvailability{{Sku: "A", Requested: 2, Available: 1}, {Sku: "B", Requested: 1, Available: 0}}
	if len(near.GetLines()) != 2 || near.GetLines()[0].GetRequested() != want[0].GetRequested() || near.GetLines()[0].GetAvailable() != want[0].GetAvailable() ||
		near.GetLines()[1].GetSku() != "B" || near.GetLines()[1].GetSufficient() {
		t.Errorf("near lines %v; want A 2/1, B 1/0 (same-SKU lines summed, request order)", near.GetLines())
	}
	if !got[1].GetCanFulfilAll() || !got[1].GetLines()[0].GetSufficient() {
		t.Errorf("mid: %v", got[1])
	}

	if got := find(&inventoryv1.FindStoresRequest{OnlyFulfillable: true}); ids(got) != "mid,farther" {
		t.Errorf("only fulfillable: %s", ids(got))
	}
	if got := find(&inventoryv1.FindStoresRequest{IncludeNotAccepting: true}); ids(got) != "near,no-hours,mid,paused,farther" {
		t.Errorf("including not accepting: %s", ids(got))
	}
	if got := find(&inventoryv1.FindStoresRequest{MaxResults: 1, OnlyFulfillable: true}); ids(got) != "mid" {
		t.Errorf("max 1 fulfillable: %s", ids(got))
	}
	if got := find(&inventoryv1.FindStoresRequest{RadiusMeters: 25_000}); ids(got) != "near,mid,farther,outside" {
		t.Errorf("25 km: %s", ids(got))
	}
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{Location: centre})
	if err != nil || ids(res.GetStores()) != "near,mid,farther" || !res.GetStores()[0].GetCanFulfilAll() {
		t.Errorf("no lines: %v, %v", res, err)
	}
}

func TestReserveWithoutAStoreHoldsAtTheNearestThatCanFillEverything(t *testing.T) {
	e := locatorChain(t)
	nearest := func(id string, skuQty ...any) *inventoryv1.ReserveHoldsResponse {
		req := order(id, "", skuQty...)
		req.Near = centre
		return e.mustReserve(req)
	}
	if res := nearest("o1", "A", 2, "B", 1); res.GetOutcome() != reserved || res.GetStoreId() != "mid" {
		t.Fatalf("A2 B1: %v; want held at mid (near lacks B)", res)
	}
	if res := nearest("o2", "A", 4); res.GetOutcome() != reserved || res.GetStoreId() != "farther" {
		t.Fatalf("A4: %v; want held at farther (mid has 3 left, paused is paused)", res)
	}
	if res := nearest("o1", "A", 2, "B", 1); res.GetStoreId() != "mid" {
		t.Fatalf("retry of o1: %v; want the holds at mid", res)
	}
	res := nearest("o3", "A", 50)
	if res.GetOutcome() != insufficient || len(res.GetShortages()) != 1 || res.GetShortages()[0].GetAvailable() != 1 || !strings.Contains(res.GetMessage(), "near") {
		t.Fatalf("A50: %v; want insufficient with the nearest store's shortage (near: 1 available)", res)
	}
	req := order("o4", "", "A", 1)
	req.Near = &commonv1.LatLng{Latitude: -33.86, Longitude: 151.2}
	if res := e.mustReserve(req); res.GetOutcome() != unavailable {
		t.Fatalf("nothing within the radius: %v", res)
	}
	if n := e.count(`SELECT count(*) FROM holds`); n != 3 {
		t.Errorf("%d holds, want 3", n)
	}
	e.requireInvariants()
}

func TestFindStoresAcrossTheAntimeridian(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("east", -16.5, 179.99))
	e.createStore(storeAt("west", -16.5, -179.99))
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{
		Location: &commonv1.LatLng{Latitude: -16.5, Longitude: 180}, RadiusMeters: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(res.GetStores()); got != "east,west" && got != "west,east" {
		t.Errorf("stores %q; want both sides of ±180°", got)
	}
}

// A store whose hours cannot be read (its row written behind the service's back) is left out
// of the locator's answers, logged; the other stores of its area are still found, where every
// search there failed before.
func TestAStoreWithUnreadableHoursIsLeftOutOfTheLocator(t *testing.T) {
	e := locatorChain(t)
	if _, err := e.pool.Exec(e.ctx(), `UPDATE stores SET opening_hours = '{"not": "hours"}', version = version + 1 WHERE id = 'mid'`); err != nil {
		t.Fatal(err)
	}
	inventory.InvalidateStoreCache(e.copies[0])
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{Location: centre})
	if err != nil {
		t.Fatalf("FindStores with one store's hours unreadable: %v", err)
	}
	if ids(res.GetStores()) != "near,farther" {
		t.Errorf("stores %s; want near,farther (mid's hours unreadable)", ids(res.GetStores()))
	}
}
