package inventory_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/inventory"
)

// The transactions over stock and holds plan each statement once per connection; that one plan
// must find rows by index even when it is made on a fresh system, with every table nearly
// empty and analyzed so. Without enable_seqscan=off in the settings, some of these plans scan
// whole tables (checked below, else this test would prove nothing), and would keep doing so as
// the tables grow. Nor may they walk a partial index of open holds, on a fresh system or on a
// running one (see checkNoOpenHoldWalks).
func TestKeyedStatementsPlanIndexLookups(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "plans"), inventory.Migrations())
	ctx := t.Context()
	for _, sql := range []string{
		`INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours, prep_seconds, pickup_window_seconds, state)
			VALUES ('s1', 'One', '{}', 0, 0, 'UTC', '[]', 300, 3600, 'open')`,
		`INSERT INTO stock (store_id, sku, on_hand) VALUES ('s1', 'A', 1)`,
		`ANALYZE stores`, `ANALYZE stock`, `ANALYZE holds`, `ANALYZE movements`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	plans := func(settings string) map[string]string {
		t.Helper()
		return testenv.GenericPlans(t, pool, settings, inventory.KeyedStatements)
	}

	scans := func(plan string) bool {
		return strings.Contains(plan, "Seq Scan on stock") || strings.Contains(plan, "Seq Scan on holds") || strings.Contains(plan, "Seq Scan on stores")
	}
	unguarded := plans(`SET LOCAL plan_cache_mode = force_generic_plan`)
	scanned := 0
	for name, plan := range unguarded {
		if scans(plan) {
			t.Logf("%s, planned without enable_seqscan=off, scans a whole table", name)
			scanned++
		}
	}
	if scanned == 0 {
		t.Fatalf("no generic plan scans a whole table even without enable_seqscan=off; this test proves nothing:\n%v", unguarded)
	}
	keyed := plans(inventory.KeyedPlansSQL)
	for name, plan := range keyed {
		if scans(plan) {
			t.Errorf("%s: the generic plan scans a whole table:\n%s", name, plan)
		}
	}
	checkNoOpenHoldWalks(t, "nearly empty tables", keyed)

	// A running system: most holds have ended and a few are open, as the statistics say.
	for _, sql := range []string{
		`INSERT INTO holds (id, order_id, line_id, store_id, sku, quantity, state, expire_time, end_time)
			SELECT gen_random_uuid(), 'o' || i, 'l1', 's1', 'A', 1, 'committed', now(), now() FROM generate_series(1, 5000) i`,
		`INSERT INTO holds (id, order_id, line_id, store_id, sku, quantity, state, expire_time)
			SELECT gen_random_uuid(), 'p' || i, 'l1', 's1', 'A', 1, 'open', now() + interval '1 hour' FROM generate_series(1, 5) i`,
		`ANALYZE holds`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	checkNoOpenHoldWalks(t, "mostly ended holds", plans(inventory.KeyedPlansSQL))
}

// checkNoOpenHoldWalks fails t for each plan that reads a partial index of open holds. Those
// are the sweeper's and the invariant check's: entries of holds that have ended stay in them
// until a vacuum, so walking one to find an order's or a hold's rows reads every hold open since
// the last vacuum (measured under load: 6,000 entries and up to 6 ms a call, with stock rows
// locked), where the order's or the hold's own index reads a few.
func checkNoOpenHoldWalks(t *testing.T, when string, plans map[string]string) {
	t.Helper()
	for name, plan := range plans {
		if openIndex.MatchString(plan) {
			t.Errorf("%s, on %s: the generic plan walks a partial index of every open hold instead of looking up its key:\n%s", name, when, plan)
		}
	}
}

var openIndex = regexp.MustCompile(`holds_open_by_\w+`)

// The locator's stock read is planned once per connection too, so that one plan must find each
// (store, SKU) by the whole key. The candidates × SKUs form it replaced cannot: generically
// planned, it walks each store's rows and filters the SKU (checked below, else this test would
// prove nothing).
func TestLocatorStockReadLooksUpTheWholeKey(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "plans"), inventory.Migrations())
	ctx := t.Context()
	for _, sql := range []string{
		`INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours, prep_seconds, pickup_window_seconds, state)
			SELECT 's' || i, 'S', '{}', 0, 0, 'UTC', '[]', 300, 3600, 'open' FROM generate_series(1, 20) i`,
		`INSERT INTO stock (store_id, sku, on_hand) SELECT 's' || i, 'K' || j, 5 FROM generate_series(1, 20) i, generate_series(1, 100) j`,
		`ANALYZE stores`, `ANALYZE stock`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	plan := func(name, sql string) string {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, inventory.KeyedPlansSQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("prepare %s: %v", name, err)
		}
		rows, err := tx.Query(ctx, "EXPLAIN EXECUTE "+name+"('{s1,s2,s3}', '{K1,K2,K3}')", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		return strings.Join(lines, "\n")
	}
	wholeKey := regexp.MustCompile(`Index Cond: .*store_id = .*sku = `)
	if p := plan("cross_read", `SELECT store_id, sku, on_hand, reserved, safety_stock FROM stock
		WHERE store_id = ANY($1) AND sku = ANY($2)`); wholeKey.MatchString(p) {
		t.Fatalf("the candidates × SKUs read looks up the whole key when planned generically; this test proves nothing:\n%s", p)
	}
	if p := plan("read_stock", inventory.KeyedStatements["read stock"]); !wholeKey.MatchString(p) {
		t.Errorf("read stock: the generic plan does not look up the whole key:\n%s", p)
	}
}
