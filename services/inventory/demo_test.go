package inventory_test

import (
	"testing"

	"github.com/handoff-dev/handoff/internal/demo"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

func TestLoadDemoFillsAnEmptyInventoryOnce(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	chain := demo.Seattle()
	errs := make(chan error, 2)
	loads := make(chan bool, 2)
	for _, svc := range e.copies { // two copies starting at once
		go func() {
			ok, err := svc.LoadDemo(e.ctx(), chain)
			loads <- ok
			errs <- err
		}()
	}
	loaded := 0
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if <-loads {
			loaded++
		}
	}
	if loaded != 1 {
		t.Fatalf("demo loaded %d times, want once", loaded)
	}
	if n := e.count(`SELECT count(*) FROM stores`); n != len(chain.Stores) {
		t.Errorf("%d stores, want %d", n, len(chain.Stores))
	}
	if n := e.count(`SELECT count(*) FROM stock`); n != len(chain.Stores)*len(chain.SKUs()) {
		t.Errorf("%d stock rows, want %d", n, len(chain.Stores)*len(chain.SKUs()))
	}
	sku := chain.SKUs()[0].SKU
	want := chain.Stock("sea-pike-place-01", sku)
	if l := e.level("sea-pike-place-01", sku); l.GetOnHand() != want.OnHand || l.GetSafetyStock() != want.SafetyStock {
		t.Errorf("%s at Pike Place: %v, want %+v", sku, l, want)
	}
	e.requireInvariants()
	e.requireLedgerMatches()

	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{
		Location: &commonv1.LatLng{Latitude: 47.6094, Longitude: -122.3418}, RadiusMeters: 2000, IncludeNotAccepting: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetStores()) < 3 || res.GetStores()[0].GetStore().GetId() != "sea-pike-place-01" {
		t.Errorf("stores near Pike Place: %s", ids(res.GetStores()))
	}
}
