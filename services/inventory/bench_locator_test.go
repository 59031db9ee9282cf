package inventory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// BenchmarkFindStores measures the store locator at chain scale: HANDOFF_BENCH_STORES stores
// (default 40,000) around 100 US metro areas, each stocking HANDOFF_BENCH_SKUS SKUs (default
// 1,000: 40 M stock rows, about 4 GB, loaded in a minute or two). The full scale,
// 40,000 × 5,000 = 200 M stock rows (about 20 GB with its key), is
//
//	HANDOFF_BENCH_SKUS=5000 go test ./services/inventory -run '^$' -bench FindStores -benchtime 1x -timeout 1h
//
// The data goes into a schema of the test database (dropped with it) by COPY; the stock table
// is made UNLOGGED and its primary key built after the load, which changes nothing for the
// reads measured. Each query is a point near a metro centre, a 10 km radius, the 10 nearest
// stores accepting orders now, and 0 or 3 random SKUs (of all of them: a cold-cache worst
// case next to real traffic, which favours popular items). Each case runs at least
// HANDOFF_BENCH_QUERIES (default 2000) queries, one at a time, even with -benchtime 1x. It
// reports p50/p99 of the service call (FindStores, without the gRPC hop) and logs how long
// loading took.
func BenchmarkFindStores(b *testing.B) {
	stores := envInt("HANDOFF_BENCH_STORES", 40_000)
	skus := envInt("HANDOFF_BENCH_SKUS", 1000)
	ctx := context.Background()
	schema := testenv.UniqueSchema(b, fmt.Sprintf("bench_loc_%d_%d", stores, skus))
	pool := benchPool(b, testenv.DatabaseURL(b), schema, 8)
	metros := loadLocatorChain(b, pool, stores, skus)
	svc := inventory.New(inventory.Config{Pool: pool, Logger: testenv.Logger(b)})

	query := func(rng *rand.Rand, lines int, fillable bool) *inventoryv1.FindStoresRequest {
		m := metros[rng.IntN(len(metros))]
		req := &inventoryv1.FindStoresRequest{
			Location:        &commonv1.LatLng{Latitude: m[0] + rng.NormFloat64()*0.05, Longitude: m[1] + rng.NormFloat64()*0.05/math.Cos(m[0]*math.Pi/180)},
			RadiusMeters:    10_000,
			OnlyFulfillable: fillable,
		}
		for range lines {
			req.Lines = append(req.Lines, &inventoryv1.StockLine{Sku: benchSKU(rng.IntN(skus)), Quantity: int32(1 + rng.IntN(2))})
		}
		return req
	}
	// Warm the caches the way a running service has them warm.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		if _, err := svc.FindStores(ctx, query(rng, 3, false)); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		lines    int
		fillable bool
	}{{"lines=0", 0, false}, {"lines=3", 3, false}, {"lines=3/only_fulfillable", 3, true}} {
		b.Run(c.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 4))
			var lat []time.Duration
			found := 0
			// At least HANDOFF_BENCH_QUERIES (default 2000) queries, so that a p99 means
			// something even with -benchtime 1x.
			n := max(b.N, envInt("HANDOFF_BENCH_QUERIES", 2000))
			b.ResetTimer()
			start := time.Now()
			for range n {
				req := query(rng, c.lines, c.fillable)
				t0 := time.Now()
				res, err := svc.FindStores(ctx, req)
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				found += len(res.GetStores())
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n), "ns/op")
			slices.Sort(lat)
			p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(p(0.50), "p50-ms")
			b.ReportMetric(p(0.99), "p99-ms")
			b.ReportMetric(float64(found)/float64(len(lat)), "stores/query")
			b.Logf("%d queries at %d stores × %d SKUs: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, %.1f stores per answer",
				len(lat), stores, skus, p(0.5), p(0.9), p(0.99), p(1), float64(found)/float64(len(lat)))
		})
	}
}

func benchSKU(i int) string { return fmt.Sprintf("SKU-%05d", i) }

// loadLocatorChain loads stores × skus and returns the metro centres (lat, lng).
func loadLocatorChain(b *testing.B, pool *pgxpool.Pool, stores, skus int) [][2]float64 {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(42, 42))
	metros := make([][2]float64, 100)
	for i := range metros {
		metros[i] = [2]float64{26 + rng.Float64()*22, -123 + rng.Float64()*54} // the contiguous US, roughly
	}
	start := time.Now()

	// Three weekly patterns: round the clock, 06–22 daily, 07–20 Monday to Saturday.
	profile := func(p int) []byte {
		var hs []map[string]any
		for d := 1; d <= 7; d++ {
			switch p {
			case 0:
				hs = append(hs, map[string]any{"weekday": d, "open": "00:00", "close": "24:00"})
			case 1:
				hs = append(hs, map[string]any{"weekday": d, "open": "06:00", "close": "22:00"})
			default:
				if d < 7 {
					hs = append(hs, map[string]any{"weekday": d, "open": "07:00", "close": "20:00"})
				}
			}
		}
		out, _ := json.Marshal(hs)
		return out
	}
	profiles := [][]byte{profile(0), profile(1), profile(2)}
	address := []byte(`{"line1":"1 Main St","city":"Springfield","country_code":"US"}`)
	storeID := func(i int) string { return fmt.Sprintf("loc-%05d", i) }
	zone := func(lng float64) string {
		switch {
		case lng < -115:
			return "America/Los_Angeles"
		case lng < -102:
			return "America/Denver"
		case lng < -87:
			return "America/Chicago"
		}
		return "America/New_York"
	}
	now := time.Now()
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"stores"}, []string{"id", "name", "address", "lat", "lng", "time_zone", "opening_hours",
		"hours_exceptions", "prep_seconds", "pickup_window_seconds", "state", "create_time", "update_time"},
		pgx.CopyFromFunc(func() func() ([]any, error) {
			i := 0
			return func() ([]any, error) {
				if i == stores {
					return nil, nil
				}
				m := metros[i%len(metros)]
				lat := math.Max(-89, math.Min(89, m[0]+rng.NormFloat64()*0.1))
				lng := m[1] + rng.NormFloat64()*0.1/math.Cos(m[0]*math.Pi/180)
				// Store i belongs to metro i % 100; its pattern must not follow from that.
				// Half round the clock, so that at any hour of the run at least half the stores
				// take orders; 30% 06–22; 20% 07–20 and closed on Sunday.
				p := (i / len(metros)) % 10
				prof := profiles[1]
				switch {
				case p < 5:
					prof = profiles[0]
				case p >= 8:
					prof = profiles[2]
				}
				state := "open"
				if (i/len(metros))%50 == 7 {
					state = "paused"
				}
				row := []any{storeID(i), fmt.Sprintf("Store %d", i), address, lat, lng, zone(lng), prof, []byte("[]"), int32(300), int32(3600), state, now, now}
				i++
				return row, nil
			}
		}()))
	if err != nil || int(n) != stores {
		b.Fatalf("copy stores: %d, %v", n, err)
	}

	// Stock: bulk load without the key, then build it (much faster than maintaining it row by row).
	for _, sql := range []string{
		`ALTER TABLE stock DROP CONSTRAINT stock_pkey, DROP CONSTRAINT stock_store_id_fkey`,
		`ALTER TABLE stock SET UNLOGGED`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	total := int64(stores) * int64(skus)
	n, err = pool.CopyFrom(ctx, pgx.Identifier{"stock"}, []string{"store_id", "sku", "on_hand", "reserved", "safety_stock", "update_time"},
		pgx.CopyFromFunc(func() func() ([]any, error) {
			var i int64
			skuNames := make([]string, skus)
			for k := range skuNames {
				skuNames[k] = benchSKU(k)
			}
			row := make([]any, 6)
			store := ""
			return func() ([]any, error) {
				if i == total {
					return nil, nil
				}
				s, k := int(i/int64(skus)), int(i%int64(skus))
				if k == 0 {
					store = storeID(s)
				}
				onHand := int32(0)
				if rng.IntN(10) != 0 { // about 10% out of stock
					onHand = int32(1 + rng.IntN(40))
				}
				row[0], row[1], row[2], row[3], row[4], row[5] = store, skuNames[k], onHand, int32(0), int32(rng.IntN(3))%max(onHand, 1), now
				i++
				return row, nil
			}
		}()))
	if err != nil || n != total {
		b.Fatalf("copy stock: %d of %d, %v", n, total, err)
	}
	copied := time.Since(start)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, sql := range []string{
		`SET maintenance_work_mem = '512MB'`,
		`ALTER TABLE stock ADD PRIMARY KEY (store_id, sku)`,
		`ANALYZE stores`, `ANALYZE stock`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			conn.Release()
			b.Fatal(err)
		}
	}
	conn.Release()
	var size string
	if err := pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size('stock'))`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d stores × %d SKUs = %d stock rows (%s with index) in %v (COPY %v, key and statistics %v)",
		stores, skus, total, size, time.Since(start).Round(time.Second), copied.Round(time.Second), (time.Since(start) - copied).Round(time.Second))
	return metros
}
