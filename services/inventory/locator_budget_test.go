package inventory_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// stockPairs counts the (store, SKU) pairs the locator's stock reads ask for (they are sent in
// a batch, with their plan settings).
type stockPairs struct{ n atomic.Int64 }

func (c *stockPairs) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "unnest($1::text[], $2::text[]) AS k(store_id, sku)") && len(d.Args) > 0 {
		if stores, ok := d.Args[0].([]string); ok {
			c.n.Add(int64(len(stores)))
		}
	}
}
func (c *stockPairs) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *stockPairs) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
func (c *stockPairs) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (c *stockPairs) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countStockPairs makes the copy's pool count its locator's stock reads in c.
func countStockPairs(t *testing.T, c *stockPairs) envOption {
	return func(cfg *inventory.Config) {
		pc := cfg.Pool.Config()
		pc.ConnConfig.Tracer = c
		pool, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		cfg.Pool = pool
	}
}

// denseChain is e with n stores in a grid about 8 km across round centre, open round the
// clock, each stocking SKU-000 to SKU-098 (5 of each). Nobody stocks GONE.
func denseChain(t *testing.T, n int, opts ...envOption) *env {
	e := newEnv(t, opts...)
	week := `[{"weekday":1,"open":"00:00","close":"24:00"},{"weekday":2,"open":"00:00","close":"24:00"},{"weekday":3,"open":"00:00","close":"24:00"},
		{"weekday":4,"open":"00:00","close":"24:00"},{"weekday":5,"open":"00:00","close":"24:00"},{"weekday":6,"open":"00:00","close":"24:00"},
		{"weekday":7,"open":"00:00","close":"24:00"}]`
	if _, err := e.pool.Exec(e.ctx(), `
		INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours, prep_seconds, pickup_window_seconds, state)
		SELECT format('dense-%s', lpad(i::text, 5, '0')), 'Dense ' || i, '{"line1":"1 Main St","city":"Seattle","country_code":"US"}',
			47.6 + (i / 35 - 17) * 0.002, -122.3 + (i % 35 - 17) * 0.003, 'America/Los_Angeles', $1::jsonb, 300, 3600, 'open'
		FROM generate_series(0, $2 - 1) i`, week, n); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx(), `INSERT INTO stock (store_id, sku, on_hand)
		SELECT s.id, format('SKU-%s', lpad(k::text, 3, '0')), 5 FROM stores s, generate_series(0, 98) k`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx(), `ANALYZE stock`); err != nil {
		t.Fatal(err)
	}
	for _, c := range e.copies {
		inventory.InvalidateStoreCache(c)
	}
	return e
}

// menu is SKU-000 to SKU-098, one each, and GONE when gone: an order no store can fill.
func menu(gone bool) []*inventoryv1.StockLine {
	var ls []*inventoryv1.StockLine
	for k := range 99 {
		ls = append(ls, &inventoryv1.StockLine{Sku: fmt.Sprintf("SKU-%03d", k), Quantity: 1})
	}
	if gone {
		ls = append(ls, &inventoryv1.StockLine{Sku: "GONE", Quantity: 1})
	}
	return ls
}

// A search for stores that can fill an order none can (a hundred lines, one of them stocked
// nowhere), among 1,200 stores in the radius, reads a bounded amount of stock: the locator's
// anonymous FindStores and a shopper's nearest-store checkout alike. Each used to read every
// store's stock of every line (120,000 pairs here; 300,000 took 1.5 s of the database's time),
// so one anonymous caller could keep the database busy.
func TestASearchNoStoreCanFillReadsABoundedAmountOfStock(t *testing.T) {
	pairs := &stockPairs{}
	e := denseChain(t, 1200, countStockPairs(t, pairs))
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{Location: centre, RadiusMeters: 20_000,
		Lines: menu(true), OnlyFulfillable: true, MaxResults: 1})
	if err != nil {
		t.Fatal(err)
	}
	if n := pairs.n.Load(); len(res.GetStores()) != 0 || n > inventory.ScanBudgetPairs || !res.GetSearchCutShort() {
		t.Errorf("FindStores of an order no store can fill: %d stores, %d (store, SKU) pairs read, cut short %v; want none found, at most %d read, and the answer saying it was cut short",
			len(res.GetStores()), n, res.GetSearchCutShort(), inventory.ScanBudgetPairs)
	}

	pairs.n.Store(0)
	req := order("o-nowhere", "")
	for i, l := range menu(true) {
		req.Lines = append(req.Lines, &inventoryv1.HoldLine{LineId: fmt.Sprintf("l%d", i), Sku: l.GetSku(), Quantity: 1})
	}
	req.Near, req.RadiusMeters = &commonv1.LatLng{Latitude: centre.GetLatitude(), Longitude: centre.GetLongitude()}, 20_000
	got := e.mustReserve(req)
	if n := pairs.n.Load(); got.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK || n > inventory.ScanBudgetPairs {
		t.Errorf("a nearest-store reserve of it: %v, %d pairs read; want INSUFFICIENT_STOCK, at most %d read", got.GetOutcome(), n, inventory.ScanBudgetPairs)
	}
	if !strings.Contains(got.GetMessage(), "nearest stores") || !strings.Contains(got.GetMessage(), "GONE") {
		t.Errorf("its refusal %q; want it to say how many of the nearest stores were looked at, and what the nearest lacks", got.GetMessage())
	}
}

// The bound leaves room for the largest query most stores can fill: the 50 nearest that have
// 99 lines each are all found.
func TestTheLargestSearchStoresCanFillIsNotCutShort(t *testing.T) {
	pairs := &stockPairs{}
	e := denseChain(t, 1200, countStockPairs(t, pairs))
	res, err := e.locator.FindStores(e.ctx(), &inventoryv1.FindStoresRequest{Location: centre, RadiusMeters: 20_000,
		Lines: menu(false), OnlyFulfillable: true, MaxResults: 50})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.GetStores()); n != 50 || res.GetSearchCutShort() {
		t.Fatalf("FindStores of 99 lines every store has, 50 at most: %d stores, cut short %v; want 50, not cut short", n, res.GetSearchCutShort())
	}
	if n := pairs.n.Load(); n == 0 {
		t.Fatal("no stock read was counted: the count sees none of the locator's reads")
	}
}
