package load

import (
	"context"
	"errors"
	"fmt"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// An order goes to the nearest store that can fill it within RadiusMeters of the point its
// shopper orders from, and in a chain with more than 50 stores in the shoppers' area that may
// be none of the 50 FindStores answers with (its most). The oversold check needs the stock of
// every store an order can land at, taken before the clock, so the load pages through every
// store of the chain (InventoryAdminService.ListStores, with the run's admin token) and keeps
// those in the area in which they can be: the shoppers' points and RadiusMeters around them.

// storesPageSize is ListStores' most stores a page: a chain of 40,000 stores is 80 calls.
const storesPageSize = 500

// maxOrderRadius is the largest radius (metres) a checkout searches; the cart takes no more.
const maxOrderRadius = 100_000.0

// earthRadiusMeters is the mean radius the locator measures distances with.
const earthRadiusMeters = 6_371_008.8

// area is a latitude/longitude box, in degrees.
type area struct{ minLat, maxLat, minLng, maxLng float64 }

// reachArea is a box holding every point within radius metres of the shoppers' points: the
// Near point, or the box of the stores found (pickPoint). It may hold more (its corners, a
// whole band of longitude near a pole or the antimeridian): a store too many has its stock
// taken for nothing, one too few could have its units go unchecked.
func (r *run) reachArea() area {
	radius := min(r.cfg.RadiusMeters, maxOrderRadius)
	lo, hi := r.box[0], r.box[1]
	if r.cfg.Near != nil {
		lo, hi = r.cfg.Near, r.cfg.Near
	}
	// A margin for the locator's rounding.
	dLat := (radius*1.001 + 1) / earthRadiusMeters * 180 / math.Pi
	a := area{minLat: max(lo.GetLatitude()-dLat, -90), maxLat: min(hi.GetLatitude()+dLat, 90), minLng: -180, maxLng: 180}
	// A degree of longitude is shortest at the latitude farthest from the equator.
	farthest := max(math.Abs(a.minLat), math.Abs(a.maxLat))
	if cos := math.Cos(farthest * math.Pi / 180); farthest < 89.9 {
		dLng := dLat / cos
		// Across the antimeridian the box would wrap: every longitude is kept instead.
		if minLng, maxLng := lo.GetLongitude()-dLng, hi.GetLongitude()+dLng; minLng >= -180 && maxLng <= 180 {
			a.minLng, a.maxLng = minLng, maxLng
		}
	}
	return a
}

// holds reports whether p is in the box.
func (a area) holds(p *commonv1.LatLng) bool {
	return p.GetLatitude() >= a.minLat && p.GetLatitude() <= a.maxLat &&
		p.GetLongitude() >= a.minLng && p.GetLongitude() <= a.maxLng
}

// inventoryAdmin is inventory's admin API (Endpoints.InventoryAddr) and ctx carrying the run's
// admin token; close ends the connection.
func (r *run) inventoryAdmin(ctx context.Context) (_ inventoryv1.InventoryAdminServiceClient, _ context.Context, closeConn func(), _ error) {
	addr := r.cfg.Endpoints.InventoryAddr
	if addr == "" {
		return nil, nil, nil, errors.New("inventory's gRPC address not given (-inventory)")
	}
	token, err := r.cfg.Endpoints.Token(auth.Principal{Subject: "mobile-mock-load", Role: auth.RoleAdmin})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("admin token: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("inventory at %s: %w", addr, err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	return inventoryv1.NewInventoryAdminServiceClient(conn), ctx, func() { _ = conn.Close() }, nil
}

// storesInReach pages through every store of the chain, in whatever state and hours (a paused
// store may resume, a closed one open, during the run), and keeps those in a. listed is how
// many stores the chain has, pages how many ListStores calls it took.
func (r *run) storesInReach(ctx context.Context, a area) (stores map[string]*inventoryv1.Store, listed, pages int, err error) {
	admin, ctx, closeConn, err := r.inventoryAdmin(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	defer closeConn()
	stores = map[string]*inventoryv1.Store{}
	for token := ""; ; {
		res, err := admin.ListStores(ctx, &inventoryv1.ListStoresRequest{PageSize: storesPageSize, PageToken: token})
		pages++
		if err != nil {
			return nil, listed, pages, fmt.Errorf("list the chain's stores (page %d) at %s: %w", pages, r.cfg.Endpoints.InventoryAddr, err)
		}
		for _, st := range res.GetStores() {
			listed++
			if a.holds(st.GetLocation()) {
				stores[st.GetId()] = st
			}
		}
		if token = res.GetNextPageToken(); token == "" {
			return stores, listed, pages, nil
		}
	}
}
