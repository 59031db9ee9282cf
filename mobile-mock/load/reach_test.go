package load

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// fakeInventory answers ListStores as inventory does: the stores by id, at most page_size
// (0 means 100, at most 500) a page, to an admin token only.
type fakeInventory struct {
	inventoryv1.UnimplementedInventoryAdminServiceServer
	keys   *auth.KeySet
	stores []*inventoryv1.Store
	pages  int
}

func (f *fakeInventory) ListStores(ctx context.Context, req *inventoryv1.ListStoresRequest) (*inventoryv1.ListStoresResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	tok, err := auth.BearerToken(strings.Join(md.Get("authorization"), ""))
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if p, err := f.keys.Verify(ctx, tok); err != nil || p.Role != auth.RoleAdmin {
		return nil, status.Errorf(codes.PermissionDenied, "want an admin token: %v", err)
	}
	f.pages++
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Error(codes.InvalidArgument, "page_size")
	case size == 0:
		size = 100
	case size > 500:
		size = 500
	}
	byID := slices.SortedFunc(slices.Values(f.stores), func(a, b *inventoryv1.Store) int { return cmp.Compare(a.GetId(), b.GetId()) })
	i, _ := slices.BinarySearchFunc(byID, req.GetPageToken(), func(s *inventoryv1.Store, id string) int { return cmp.Compare(s.GetId(), id) })
	if req.GetPageToken() != "" {
		i++ // after the last store of the page before
	}
	res := &inventoryv1.ListStoresResponse{Stores: byID[i:min(i+size, len(byID))]}
	if i+size < len(byID) {
		res.NextPageToken = res.Stores[len(res.Stores)-1].GetId()
	}
	return res, nil
}

// reachRun is a run whose inventory is f.
func reachRun(t *testing.T, f *fakeInventory, cfg Config) *run {
	t.Helper()
	keys, err := auth.DevKeySet(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f.keys = keys
	srv := grpc.NewServer()
	inventoryv1.RegisterInventoryAdminServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cfg.Endpoints = system.Endpoints{InventoryAddr: lis.Addr().String(), Keys: keys}
	cfg.RadiusMeters = cmp.Or(cfg.RadiusMeters, 25_000)
	return &run{cfg: cfg, prefix: "load-test-"}
}

func store(id string, lat, lng float64) *inventoryv1.Store {
	return &inventoryv1.Store{Id: id, Location: &commonv1.LatLng{Latitude: lat, Longitude: lng}}
}

// distanceMeters is the great-circle distance between two points (haversine), as the locator
// measures it.
func distanceMeters(lat1, lng1, lat2, lng2 float64) float64 {
	const rad = math.Pi / 180
	dLat, dLng := (lat2-lat1)*rad, (lng2-lng1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusMeters * math.Asin(math.Min(1, math.Sqrt(a)))
}

// Every store an order can land at is found, however many more than FindStores' 50 stand in
// the shoppers' area and however many pages the chain takes: here 3,000 stores (6 pages) over
// a metropolitan area, their ids in no order of place, shoppers ordering from points in a box
// of it, each within 25 km of its pickup store.
func TestEveryStoreWithinReachOfTheShoppersIsFound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := &fakeInventory{}
	for i := range 3000 {
		f.stores = append(f.stores, store(fmt.Sprintf("st-%04d", i), 47.2+rng.Float64()*0.9, -122.9+rng.Float64()*1.2))
	}
	r := reachRun(t, f, Config{})
	r.box = [2]*commonv1.LatLng{{Latitude: 47.52, Longitude: -122.41}, {Latitude: 47.72, Longitude: -122.27}}
	found, listed, pages, err := r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d stores found of %d listed in %d pages", len(found), listed, pages)
	if listed != 3000 || pages != 6 || f.pages != 6 {
		t.Errorf("%d stores listed in %d pages (%d answered); want 3000 in 6", listed, pages, f.pages)
	}
	missed := 0
	for _, s := range f.stores {
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
	if len(found) == 3000 {
		t.Errorf("every store kept: the area should leave out the stores no order can reach")
	}

	// Shoppers at one point: the stores within 25 km of it.
	r = reachRun(t, f, Config{Near: &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3}})
	found, _, _, err = r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range f.stores {
		if distanceMeters(47.6, -122.3, s.GetLocation().GetLatitude(), s.GetLocation().GetLongitude()) <= 25_000 && found[s.GetId()] == nil {
			t.Errorf("store %s within 25 km of the shoppers' point missed", s.GetId())
		}
	}
}

// More than 50 stores on one spot, which the locator (50 at most) cannot all name, are all
// found; and a store across the antimeridian from the shoppers is in reach.
func TestStoresStackedOnOneSpotOrAcrossTheAntimeridianAreFound(t *testing.T) {
	f := &fakeInventory{}
	for i := range 60 {
		f.stores = append(f.stores, store(fmt.Sprintf("st-%02d", i), 47.6, -122.3))
	}
	f.stores = append(f.stores, store("elsewhere", 47.7, -122.3), store("far", 45.5, -122.7))
	r := reachRun(t, f, Config{Near: &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3}})
	found, _, _, err := r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 61 || found["elsewhere"] == nil || found["far"] != nil {
		t.Errorf("%d found (elsewhere: %v, 230 km away: %v); want the 60 on the spot and the one 11 km away", len(found), found["elsewhere"] != nil, found["far"] != nil)
	}

	f = &fakeInventory{stores: []*inventoryv1.Store{store("fiji-east", -17.8, -179.95), store("fiji-west", -17.8, 179.95)}}
	r = reachRun(t, f, Config{Near: &commonv1.LatLng{Latitude: -17.8, Longitude: 179.9}})
	found, _, _, err = r.storesInReach(t.Context(), r.reachArea())
	if err != nil {
		t.Fatal(err)
	}
	if found["fiji-east"] == nil || found["fiji-west"] == nil {
		t.Errorf("found %v; want both stores, 5 and 16 km away across the antimeridian", slices.Sorted(maps.Keys(found)))
	}
}
