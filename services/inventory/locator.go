package inventory

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// The locator: stores in a bounding box around the point come from one index range scan;
// exact great-circle distances, the radius and the sort are done here; open status is
// computed from each store's hours in its own zone (parsed schedules are cached by store
// version); then one primary-key lookup of (candidate stores × requested SKUs) gives the
// availability. Candidates are checked nearest first, in chunks, so a query that wants ten
// stores that can fill an order reads the stock of a few dozen stores, not of the whole box.

const (
	defaultMaxResults = 10
	maxMaxResults     = 50
)

// locatorQuery is a validated search.
type locatorQuery struct {
	center       *commonv1.LatLng
	radius       float64
	totals       []lineTotal
	maxResults   int
	onlyFillable bool
	includeAll   bool // also stores not accepting orders now
}

// FindStores returns stores within the radius, nearest first, with the availability of the
// requested lines.
func (s *Service) FindStores(ctx context.Context, req *inventoryv1.FindStoresRequest) (*inventoryv1.FindStoresResponse, error) {
	var v rpcerr.Violations
	q := locatorQuery{center: req.GetLocation(), onlyFillable: req.GetOnlyFulfillable(), includeAll: req.GetIncludeNotAccepting()}
	if q.center == nil {
		v.Add("location", "required")
	} else {
		checkLatLng(&v, "location", q.center)
	}
	q.radius = checkRadius(&v, "radius_meters", req.GetRadiusMeters())
	switch n := req.GetMaxResults(); {
	case n < 0 || n > maxMaxResults:
		v.Addf("max_results", "must be between 0 and %d (0 means %d), got %d", maxMaxResults, defaultMaxResults, n)
	case n == 0:
		q.maxResults = defaultMaxResults
	default:
		q.maxResults = int(n)
	}
	if len(req.GetLines()) > maxOrderLines {
		v.Addf("lines", "at most %d lines, got %d", maxOrderLines, len(req.GetLines()))
	}
	idx := map[string]int{}
	for i, l := range req.GetLines() {
		f := fmt.Sprintf("lines[%d]", i)
		checkSKU(&v, f+".sku", l.GetSku())
		if n := l.GetQuantity(); n < 1 || n > maxLineQuantity {
			v.Addf(f+".quantity", "must be between 1 and %d, got %d", maxLineQuantity, n)
		}
		if j, ok := idx[l.GetSku()]; ok {
			q.totals[j].quantity += l.GetQuantity()
		} else {
			idx[l.GetSku()] = len(q.totals)
			q.totals = append(q.totals, lineTotal{sku: l.GetSku(), quantity: l.GetQuantity()})
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	matches, err := s.locate(ctx, q, time.Now())
	if err != nil {
		return nil, err
	}
	return &inventoryv1.FindStoresResponse{Stores: matches}, nil
}

// candidate is a store inside the radius.
type candidate struct {
	row      *storeRow
	distance float64
	status   *inventoryv1.OpenStatus
}

// locate runs a validated query.
func (s *Service) locate(ctx context.Context, q locatorQuery, now time.Time) ([]*inventoryv1.StoreMatch, error) {
	cands, err := s.storesWithin(ctx, q.center.GetLatitude(), q.center.GetLongitude(), q.radius)
	if err != nil {
		return nil, err
	}
	// Open status nearest first, only as far as needed; stock in chunks. Without a filter on
	// stock, a chunk is exactly the stores still needed. With one, the first chunk is what is
	// needed plus a quarter (most stores can usually fill an order), and later ones are sized
	// by the share of stores that could so far (an item few stores have), so both cases read
	// little stock and need few queries.
	var (
		out             []*inventoryv1.StoreMatch
		chunk           []*candidate
		target          int
		checked, filled int
	)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		matches, err := s.matchStock(ctx, chunk, q.totals)
		checked += len(chunk)
		chunk = chunk[:0]
		if err != nil {
			return err
		}
		for _, m := range matches {
			if m.CanFulfilAll {
				filled++
			}
			if q.onlyFillable && !m.CanFulfilAll {
				continue
			}
			if len(out) < q.maxResults {
				out = append(out, m)
			}
		}
		return nil
	}
	for _, c := range cands {
		need := q.maxResults - len(out)
		if need <= 0 {
			break
		}
		st, err := s.openStatus(c.row, now)
		if err != nil {
			return nil, err
		}
		if !q.includeAll && !st.GetAcceptingOrders() {
			continue
		}
		c.status = st
		chunk = append(chunk, c)
		if len(chunk) == 1 {
			switch {
			case !q.onlyFillable || len(q.totals) == 0:
				target = need
			case checked == 0:
				target = need + need/4 + 1
			case filled == 0:
				target = min(2*target, 200)
			default:
				target = min(need*checked/filled+1, 200)
			}
		}
		if len(chunk) >= target {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if len(out) < q.maxResults {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// storesWithin returns the stores within radius metres of (lat, lng), nearest first.
func (s *Service) storesWithin(ctx context.Context, lat, lng, radius float64) ([]*candidate, error) {
	box := boundingBox(lat, lng, radius)
	sql := "SELECT " + storeColumns + " FROM stores WHERE lat BETWEEN $1 AND $2 AND lng BETWEEN $3 AND $4"
	args := []any{box.minLat, box.maxLat, box.minLng, box.maxLng}
	if box.wraps {
		// The box crosses the antimeridian: two longitude ranges.
		sql = "SELECT " + storeColumns + " FROM stores WHERE lat BETWEEN $1 AND $2 AND (lng >= $3 OR lng <= $4)"
	}
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("find stores: %w", err)
	}
	var out []*candidate
	for rows.Next() {
		r, err := scanStore(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("find stores: %w", err)
		}
		if d := distanceMeters(lat, lng, r.lat, r.lng); d <= radius {
			out = append(out, &candidate{row: r, distance: d})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find stores: %w", err)
	}
	slices.SortFunc(out, func(a, b *candidate) int {
		if c := cmp.Compare(a.distance, b.distance); c != 0 {
			return c
		}
		return cmp.Compare(a.row.id, b.row.id)
	})
	return out, nil
}

// matchStock reads the requested SKUs' stock at the candidates (one query by primary key)
// and builds their matches, in candidate order.
func (s *Service) matchStock(ctx context.Context, cands []*candidate, totals []lineTotal) ([]*inventoryv1.StoreMatch, error) {
	avail := map[stockKey]int32{}
	if len(totals) > 0 {
		ids := make([]string, len(cands))
		for i, c := range cands {
			ids[i] = c.row.id
		}
		skus := make([]string, len(totals))
		for i, t := range totals {
			skus[i] = t.sku
		}
		rows, err := s.db.Query(ctx, `SELECT store_id, sku, on_hand, reserved, safety_stock FROM stock
			WHERE store_id = ANY($1) AND sku = ANY($2)`, ids, skus)
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
		levels, err := scanLevels(rows)
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
		for k, l := range levels {
			avail[k] = l.available()
		}
	}
	out := make([]*inventoryv1.StoreMatch, 0, len(cands))
	for _, c := range cands {
		store, err := c.row.proto(c.status)
		if err != nil {
			return nil, err
		}
		m := &inventoryv1.StoreMatch{Store: store, DistanceMeters: math.Round(c.distance*10) / 10, CanFulfilAll: true}
		for _, t := range totals {
			a := avail[stockKey{c.row.id, t.sku}]
			ok := a >= t.quantity
			m.CanFulfilAll = m.CanFulfilAll && ok
			m.Lines = append(m.Lines, &inventoryv1.LineAvailability{Sku: t.sku, Requested: t.quantity, Available: a, Sufficient: ok})
		}
		out = append(out, m)
	}
	return out, nil
}

type box struct {
	minLat, maxLat, minLng, maxLng float64
	wraps                          bool // minLng > maxLng: the box crosses ±180°
}

// boundingBox is the smallest latitude/longitude box holding the circle of radius metres
// around (lat, lng) on a sphere (the longitude half-width is the circle's true maximum, at
// the tangent latitude, not at the centre's).
func boundingBox(lat, lng, radius float64) box {
	ang := radius / earthRadiusMeter // angular radius, radians
	latR := lat * math.Pi / 180
	b := box{minLat: lat - ang*180/math.Pi, maxLat: lat + ang*180/math.Pi}
	if b.minLat <= -90 || b.maxLat >= 90 {
		// The circle holds a pole: every longitude.
		return box{minLat: max(b.minLat, -90), maxLat: min(b.maxLat, 90), minLng: -180, maxLng: 180}
	}
	dLng := math.Asin(math.Sin(ang)/math.Cos(latR)) * 180 / math.Pi
	b.minLng, b.maxLng = lng-dLng, lng+dLng
	switch {
	case b.minLng < -180:
		b.minLng += 360
		b.wraps = true
	case b.maxLng > 180:
		b.maxLng -= 360
		b.wraps = true
	}
	return b
}

// distanceMeters is the great-circle (haversine) distance on a sphere of the Earth's mean
// radius: within 0.5% of the ellipsoid, plenty to rank stores.
func distanceMeters(lat1, lng1, lat2, lng2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLng := (lng2 - lng1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusMeter * math.Asin(math.Min(1, math.Sqrt(a)))
}
