package load

import (
	"context"
	"fmt"
	"math"
	"sync"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// An order goes to the nearest store that can fill it within RadiusMeters of the point its
// shopper orders from, and in a chain with more than 50 stores in the shoppers' area that may
// be none of the 50 FindStores answers with (its most). The oversold check needs the stock of
// every store an order can land at, taken before the clock, so the load finds them all: it
// covers the area in which they can be (the shoppers' points and RadiusMeters around them)
// with FindStores calls, splitting each part that answers a full 50 stores in four until every
// part answers fewer.

// findLimit is FindStores' most stores per call; findMaxRadius its largest radius (metres).
const (
	findLimit     = 50
	findMaxRadius = 100_000.0
)

// minCellMeters is the smallest part of the area split further: more than findLimit stores
// within it (stores on top of each other) are taken as found, and the search says it may have
// missed some.
const minCellMeters = 50.0

// earthRadiusMeters is the mean radius the locator measures distances with.
const earthRadiusMeters = 6_371_008.8

// cell is a latitude/longitude box, in degrees.
type cell struct{ minLat, maxLat, minLng, maxLng float64 }

// reachArea is the box holding every point within radius metres of the shoppers' points: the
// Near point, or the box of the stores found (pickPoint).
func (r *run) reachArea() cell {
	radius := min(r.cfg.RadiusMeters, findMaxRadius) // the cart takes no more
	lo, hi := r.box[0], r.box[1]
	if r.cfg.Near != nil {
		lo, hi = r.cfg.Near, r.cfg.Near
	}
	dLat := radius / earthRadiusMeters * 180 / math.Pi
	c := cell{
		minLat: max(lo.GetLatitude()-dLat, -90), maxLat: min(hi.GetLatitude()+dLat, 90),
	}
	// A degree of longitude is shortest at the latitude farthest from the equator.
	farthest := max(math.Abs(c.minLat), math.Abs(c.maxLat))
	if cos := math.Cos(farthest * math.Pi / 180); farthest >= 89.9 || dLat/cos >= 180 {
		c.minLng, c.maxLng = -180, 180
	} else {
		c.minLng, c.maxLng = max(lo.GetLongitude()-dLat/cos, -180), min(hi.GetLongitude()+dLat/cos, 180)
	}
	return c
}

// centre is the middle of the box.
func (c cell) centre() *commonv1.LatLng {
	return &commonv1.LatLng{Latitude: (c.minLat + c.maxLat) / 2, Longitude: (c.minLng + c.maxLng) / 2}
}

// radius is a radius around the centre that holds the whole box: its farthest corner's
// distance, with a margin for rounding.
func (c cell) radius() float64 {
	m := c.centre()
	d := 0.0
	for _, lat := range []float64{c.minLat, c.maxLat} {
		for _, lng := range []float64{c.minLng, c.maxLng} {
			d = max(d, distanceMeters(m.GetLatitude(), m.GetLongitude(), lat, lng))
		}
	}
	return d*1.001 + 1
}

// quarters splits the box in four.
func (c cell) quarters() []cell {
	midLat, midLng := (c.minLat+c.maxLat)/2, (c.minLng+c.maxLng)/2
	return []cell{
		{c.minLat, midLat, c.minLng, midLng}, {c.minLat, midLat, midLng, c.maxLng},
		{midLat, c.maxLat, c.minLng, midLng}, {midLat, c.maxLat, midLng, c.maxLng},
	}
}

// distanceMeters is the great-circle distance between two points (haversine).
func distanceMeters(lat1, lng1, lat2, lng2 float64) float64 {
	const rad = math.Pi / 180
	dLat, dLng := (lat2-lat1)*rad, (lng2-lng1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusMeters * math.Asin(math.Min(1, math.Sqrt(a)))
}

// storesInReach finds every store, taking orders now or not (hours change during a run), in
// area. crowded counts the parts of it where more than findLimit stores stand within
// minCellMeters: some of those may be missing. calls is how many FindStores calls it made.
func (r *run) storesInReach(ctx context.Context, area cell) (stores map[string]*inventoryv1.Store, crowded, calls int, err error) {
	stores = map[string]*inventoryv1.Store{}
	var mu sync.Mutex
	for level := []cell{area}; len(level) > 0; {
		var next []cell
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for _, c := range level {
			radius := c.radius()
			if radius > findMaxRadius { // larger than one call may search
				mu.Lock()
				next = append(next, c.quarters()...)
				mu.Unlock()
				continue
			}
			calls++
			// A caller of its own per call, as for the stock below: the gateway limits each
			// caller's calls a second.
			callCtx := shopper.WithToken(gctx, r.token(fmt.Sprintf("stores-%d", calls)))
			g.Go(func() error {
				res, err := r.app.Locator.FindStores(callCtx, connect.NewRequest(&inventoryv1.FindStoresRequest{
					Location: c.centre(), RadiusMeters: radius, MaxResults: findLimit, IncludeNotAccepting: true,
				}))
				if err != nil {
					return fmt.Errorf("find the stores within %.0f m of %.4f,%.4f: %w", radius, c.centre().GetLatitude(), c.centre().GetLongitude(), err)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, m := range res.Msg.GetStores() {
					stores[m.GetStore().GetId()] = m.GetStore()
				}
				switch {
				case len(res.Msg.GetStores()) < findLimit:
					// Every store within the radius, and so in the part, is found.
				case radius < minCellMeters:
					crowded++
				default:
					next = append(next, c.quarters()...)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, 0, calls, err
		}
		level = next
	}
	return stores, crowded, calls, nil
}
