package load

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/proto/handoff/inventory/v1/inventoryv1connect"
)

// fakeLocator answers FindStores as inventory's locator does: the stores within the radius,
// nearest first, at most max_results, refusing more than 50 results or 100 km.
type fakeLocator struct {
	inventoryv1connect.UnimplementedStoreLocatorServiceHandler
	stores []*inventoryv1.Store
	calls  atomic.Int64
}

func (l *fakeLocator) FindStores(_ context.Context, req *connect.Request[inventoryv1.FindStoresRequest]) (*connect.Response[inventoryv1.FindStoresResponse], error) {
	l.calls.Add(1)
	q := req.Msg
	if q.GetMaxResults() < 1 || q.GetMaxResults() > 50 || q.GetRadiusMeters() <= 0 || q.GetRadiusMeters() > 100_000 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("max_results %d, radius_meters %v", q.GetMaxResults(), q.GetRadiusMeters()))
	}
	var out []*inventoryv1.StoreMatch
	for _, s := range l.stores {
		d := distanceMeters(q.GetLocation().GetLatitude(), q.GetLocation().GetLongitude(), s.GetLocation().GetLatitude(), s.GetLocation().GetLongitude())
		if d <= q.GetRadiusMeters() {
			out = append(out, &inventoryv1.StoreMatch{Store: s, DistanceMeters: d})
		}
	}
	slices.SortFunc(out, func(a, b *inventoryv1.StoreMatch) int {
		return cmp.Or(cmp.Compare(a.GetDistanceMeters(), b.GetDistanceMeters()), cmp.Compare(a.GetStore().GetId(), b.GetStore().GetId()))
	})
	return connect.NewResponse(&inventoryv1.FindStoresResponse{Stores: out[:min(len(out), int(q.GetMaxResults()))]}), nil
}

func locatorRun(t *testing.T, l *fakeLocator, cfg Config) *run {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(inventoryv1connect.NewStoreLocatorServiceHandler(l))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	keys, err := auth.DevKeySet(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = shopper.HTTPClient(16)
	cfg.Endpoints = system.Endpoints{GatewayURL: srv.URL, Keys: keys}
	cfg.RadiusMeters = cmp.Or(cfg.RadiusMeters, 25_000)
	r := &run{cfg: cfg, prefix: "load-test-"}
	r.app = shopper.New(cfg.HTTPClient, srv.URL, "")
	return r
}

func store(id string, lat, lng float64) *inventoryv1.Store {
	return &inventoryv1.Store{Id: id, Location: &commonv1.LatLng{Latitude: lat, Longitude: lng}}
}

// Every store an order can land at is found, however many more than FindStores' 50 stand in
// the shoppers' area: here 3,000 over a metropolitan area, shoppers ordering from points in a
// box of it, each within 25 km of its pickup store.
func TestEveryStoreWithinReachOfTheShoppersIsFound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := &fakeLocator{}
	for i := range 3000 {
		l.stores = append(l.stores, store(fmt.Sprintf("st-%04d", i), 47.2+rng.Float64()*0.9, -122.9+rng.Float64()*1.2))
	}
	r := locatorRun(t, l, Config{})
	r.box = [2]*commonv1.LatLng{{Latitude: 47.52, Longitude: -122.41}, {Latitude: 47.72, Longitude: -122.27}}
	found, crowded, calls, err := r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d stores found in %d calls (%d answered)", len(found), calls, l.calls.Load())
	if crowded != 0 {
		t.Errorf("crowded %d; want 0", crowded)
	}
	missed := 0
	for _, s := range l.stores {
		// Its distance to the nearest point of the box the shoppers order from.
		lat := min(max(s.GetLocation().GetLatitude(), r.box[0].GetLatitude()), r.box[1].GetLatitude())
		lng := min(max(s.GetLocation().GetLongitude(), r.box[0].GetLongitude()), r.box[1].GetLongitude())
		if distanceMeters(lat, lng, s.GetLocation().GetLatitude(), s.GetLocation().GetLongitude()) <= 25_000 && found[s.GetId()] == nil {
			missed++
		}
	}
	if missed > 0 || len(found) < 1000 {
		t.Errorf("%d stores within 25 km of the shoppers' area missed, %d found", missed, len(found))
	}

	// Shoppers at one point: the stores within 25 km of it.
	r = locatorRun(t, l, Config{Near: &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3}})
	found, _, _, err = r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range l.stores {
		if distanceMeters(47.6, -122.3, s.GetLocation().GetLatitude(), s.GetLocation().GetLongitude()) <= 25_000 && found[s.GetId()] == nil {
			t.Errorf("store %s within 25 km of the shoppers' point missed", s.GetId())
		}
	}
}

// More than 50 stores on one spot cannot all be found by a locator that names 50 at most: the
// search ends (it does not split the spot forever) and says so.
func TestStoresStackedOnOneSpotEndTheSearchAndAreNoted(t *testing.T) {
	l := &fakeLocator{}
	for i := range 60 {
		l.stores = append(l.stores, store(fmt.Sprintf("st-%02d", i), 47.6, -122.3))
	}
	l.stores = append(l.stores, store("elsewhere", 47.7, -122.3))
	r := locatorRun(t, l, Config{Near: &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3}})
	found, crowded, calls, err := r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	if crowded == 0 || len(found) < 51 || found["elsewhere"] == nil || calls > 200 {
		t.Errorf("crowded %d, %d found (elsewhere: %v) in %d calls; want the spot noted, 50 of it and the store elsewhere found", crowded, len(found), found["elsewhere"] != nil, calls)
	}
}
