package inventory

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// The locator: the stores within the radius come from the store cache (storecache.go), whose
// spatial index looks only at the latitude bands and longitude range of the circle's bounding
// box, so a query costs no database work to find stores even at 40,000 of them; exact
// great-circle distances, the radius and the sort are done here; open status comes from each
// store's schedule in its own zone (memoised until its next opening or closing). Then one
// primary-key lookup of (candidate stores × requested SKUs) gives the availability.
// Candidates are checked nearest first, in chunks, so a query that wants ten stores that can
// fill an order reads the stock of a few dozen stores, not of the whole box. When few or none
// can (an item nobody stocks), a scan stops after scanBudgetStores stores or scanBudgetPairs
// (store, SKU) pairs read, whichever comes first: what one anonymous call may make the
// database read is bounded, whatever the radius holds.

const (
	defaultMaxResults = 10
	maxMaxResults     = 50
	// scanBudgetPairs and scanBudgetStores bound the stock one scan reads. The pairs leave room
	// for the largest query that most stores can fill (maxMaxResults stores, and a quarter
	// more, of maxOrderLines SKUs: 6,250 pairs); about 10 ms of the database's time each
	// 2,000. A scan that reached 300,000 pairs (3,000 stores × 100 SKUs) took 1.5 s.
	scanBudgetPairs  = 10_000
	scanBudgetStores = 500
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
	found, cut, err := s.locate(ctx, q, time.Now())
	if err != nil {
		return nil, err
	}
	out := &inventoryv1.FindStoresResponse{Stores: make([]*inventoryv1.StoreMatch, 0, len(found)), SearchCutShort: cut}
	for _, m := range found {
		pm, err := s.matchProto(m, q.totals)
		if err != nil {
			return nil, err
		}
		out.Stores = append(out.Stores, pm)
	}
	return out, nil
}

// candidate is a store inside the radius.
type candidate struct {
	st       *storeEntry
	distance float64
	status   hours.Status
	at       time.Time // when status was taken
}

// located is a candidate whose stock was read: what it has of each requested line.
type located struct {
	*candidate
	available []int32 // per line total, in the query's order
	fills     bool    // enough of every line
}

func (s *Service) matchProto(m *located, totals []lineTotal) (*inventoryv1.StoreMatch, error) {
	store, err := s.entryProto(m.st, m.st.openStatusProto(m.status, m.at))
	if err != nil {
		return nil, err
	}
	out := &inventoryv1.StoreMatch{Store: store, DistanceMeters: math.Round(m.distance*10) / 10, CanFulfilAll: m.fills}
	for i, t := range totals {
		a := m.available[i]
		out.Lines = append(out.Lines, &inventoryv1.LineAvailability{Sku: t.sku, Requested: t.quantity, Available: a, Sufficient: a >= t.quantity})
	}
	return out, nil
}

// shortages are the lines m cannot fill.
func (m *located) shortages(totals []lineTotal) []*inventoryv1.Shortage {
	var out []*inventoryv1.Shortage
	for i, t := range totals {
		if a := m.available[i]; a < t.quantity {
			out = append(out, &inventoryv1.Shortage{Sku: t.sku, Requested: t.quantity, Available: a})
		}
	}
	return out
}

// locate runs a validated query: up to q.maxResults matches, nearest first, and whether the
// scan stopped at its budget with stores left unread.
func (s *Service) locate(ctx context.Context, q locatorQuery, now time.Time) ([]*located, bool, error) {
	sc, err := s.scanStores(ctx, q, now)
	if err != nil {
		return nil, false, err
	}
	var out []*located
	for len(out) < q.maxResults {
		chunk, err := sc.next(ctx, q.maxResults-len(out))
		if err != nil {
			return nil, false, err
		}
		if chunk == nil {
			break
		}
		for _, m := range chunk {
			if (!q.onlyFillable || m.fills) && len(out) < q.maxResults {
				out = append(out, m)
			}
		}
	}
	return out, sc.cut && len(out) < q.maxResults, nil
}

// storeScan walks a query's candidates nearest first and reads their stock a chunk at a time.
// Open status only as far as needed; without a filter on stock a chunk is exactly the stores
// still needed; with one, the first chunk is what is needed plus a quarter (most stores can
// usually fill an order), and later ones are sized by the share of stores that could so far
// (an item few stores have), so both cases read little stock and need few queries.
type storeScan struct {
	s               *Service
	q               locatorQuery
	now             time.Time
	cands           []*candidate
	pos             int
	target          int
	checked, filled int
	// cut is set when the scan stopped at its budget with candidates left unread.
	cut bool
}

// budget is how many more stores the scan may read the stock of (scanBudgetStores,
// scanBudgetPairs).
func (sc *storeScan) budget() int {
	left := scanBudgetStores - sc.checked
	if n := len(sc.q.totals); n > 0 {
		left = min(left, (scanBudgetPairs-sc.checked*n)/n)
	}
	return max(left, 0)
}

func (s *Service) scanStores(ctx context.Context, q locatorQuery, now time.Time) (*storeScan, error) {
	if err := s.stores.ready(ctx); err != nil {
		return nil, fmt.Errorf("find stores: %w", err)
	}
	return &storeScan{s: s, q: q, now: now, cands: s.stores.within(q.center.GetLatitude(), q.center.GetLongitude(), q.radius)}, nil
}

// next returns the next chunk of candidates (accepting orders unless the query includes all)
// with their stock, sized for need more matches; nil when there are no more.
func (sc *storeScan) next(ctx context.Context, need int) ([]*located, error) {
	var chunk []*candidate
	budget := sc.budget()
	for sc.pos < len(sc.cands) && (len(chunk) == 0 || len(chunk) < sc.target) {
		if len(chunk) == budget {
			sc.cut = true
			break
		}
		c := sc.cands[sc.pos]
		sc.pos++
		st, err := sc.s.storeStatus(c.st, sc.now)
		if err != nil {
			// Hours unreadable (a row written behind the service's back): that store is left
			// out, not every search of its area failed with it.
			sc.s.log.ErrorContext(ctx, "store left out of the locator: its hours cannot be read", "store_id", c.st.row.id, "err", err)
			continue
		}
		if !sc.q.includeAll && !c.st.accepting(st, sc.now) {
			continue
		}
		c.status, c.at = st, sc.now
		chunk = append(chunk, c)
		if len(chunk) == 1 {
			switch {
			case !sc.q.onlyFillable || len(sc.q.totals) == 0:
				sc.target = need
			case sc.checked == 0:
				sc.target = need + need/4 + 1
			case sc.filled == 0:
				sc.target = min(2*sc.target, 200)
			default:
				sc.target = min(need*sc.checked/sc.filled+1, 200)
			}
		}
	}
	if len(chunk) == 0 {
		return nil, nil
	}
	out, err := sc.s.readStock(ctx, chunk, sc.q.totals)
	if err != nil {
		return nil, err
	}
	sc.checked += len(out)
	for _, m := range out {
		if m.fills {
			sc.filled++
		}
	}
	return out, nil
}

// readStockSQL reads stock rows by (store, SKU) pairs, so that one generic plan probes the
// two-column key for each pair. The candidates × SKUs form (store_id = ANY($1) AND sku =
// ANY($2)) has no such plan: generically planned it walks each store's every row and filters
// the SKU (0.3 against 0.05 ms for 14 stores and 2 SKUs), so it had to be planned anew on every
// call, which took as long as running it.
const readStockSQL = `SELECT st.store_id, st.sku, st.on_hand, st.reserved, st.safety_stock, st.version
	FROM stock st JOIN unnest($1::text[], $2::text[]) AS k(store_id, sku) ON st.store_id = k.store_id AND st.sku = k.sku`

// readStock reads the requested SKUs' stock at the candidates (one query by primary key), in
// candidate order.
func (s *Service) readStock(ctx context.Context, cands []*candidate, totals []lineTotal) ([]*located, error) {
	avail := map[stockKey]int32{}
	if len(totals) > 0 {
		stores := make([]string, 0, len(cands)*len(totals))
		skus := make([]string, 0, len(cands)*len(totals))
		for _, c := range cands {
			for _, t := range totals {
				stores, skus = append(stores, c.st.row.id), append(skus, t.sku)
			}
		}
		// One round trip: a pipelined batch without BEGIN is one implicit transaction, so the
		// read runs under keyedPlansSQL's settings, which end with it.
		var b pgx.Batch
		b.Queue(keyedPlansSQL)
		b.Queue(readStockSQL, stores, skus)
		br := s.db.SendBatch(ctx, &b)
		levels, err := readLevelsAfterSettings(br)
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
		for k, l := range levels {
			avail[k] = l.available()
		}
	}
	out := make([]*located, len(cands))
	for i, c := range cands {
		m := &located{candidate: c, available: make([]int32, len(totals)), fills: true}
		for j, t := range totals {
			m.available[j] = avail[stockKey{c.st.row.id, t.sku}]
			m.fills = m.fills && m.available[j] >= t.quantity
		}
		out[i] = m
	}
	return out, nil
}

// readLevelsAfterSettings reads the levels of a batch of keyedPlansSQL and a levels query.
func readLevelsAfterSettings(br pgx.BatchResults) (map[stockKey]*level, error) {
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return scanLevels(rows)
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
