package inventory_test

import (
	"fmt"
	"regexp"
	"strconv"
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
// the tables grow.
func TestKeyedStatementsPlanIndexLookupsOnNearlyEmptyTables(t *testing.T) {
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

	calls := 0
	plans := func(settings string) map[string]string {
		t.Helper()
		out := map[string]string{}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, settings, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		calls++ // prepared statements outlive the transaction: new names each time
		params := regexp.MustCompile(`\$(\d+)`)
		for name, sql := range inventory.KeyedStatements {
			n := 0
			for _, m := range params.FindAllStringSubmatch(sql, -1) {
				k, _ := strconv.Atoi(m[1])
				n = max(n, k)
			}
			stmt := fmt.Sprintf("keyed%d_%s", calls, strings.ReplaceAll(name, " ", "_"))
			if _, err := tx.Exec(ctx, "PREPARE "+stmt+" AS "+sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("prepare %s: %v", name, err)
			}
			args := strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ")
			rows, err := tx.Query(ctx, "EXPLAIN EXECUTE "+stmt+"("+args+")", pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				t.Fatalf("explain %s: %v", name, err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatalf("explain %s: %v", name, err)
			}
			out[name] = strings.Join(lines, "\n")
		}
		return out
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
}

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
