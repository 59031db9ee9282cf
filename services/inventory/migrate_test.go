package inventory_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/inventory"
)

// migrationsUpTo is inventory's migrations up to and including version (by file name).
func migrationsUpTo(t *testing.T, version string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(inventory.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name()[:5] <= version {
			b, err := fs.ReadFile(inventory.Migrations(), e.Name())
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}

// A database with stock from before count times were kept is brought up to date: each row's
// count time is its last count (SET or COUNT correction) in the ledger; a row never counted
// has none.
func TestMigratingExistingStockFillsInCountTimes(t *testing.T) {
	schema := testenv.UniqueSchema(t, "invmig")
	pool := testenv.Pool(t, schema, migrationsUpTo(t, "00004"))
	counted := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	for _, q := range []string{
		`INSERT INTO stores (id, name, lat, lng, time_zone, prep_seconds, pickup_window_seconds, state)
			VALUES ('m1', 'Old store', 47.6, -122.3, 'America/Los_Angeles', 300, 3600, 'open')`,
		`INSERT INTO stock (store_id, sku, on_hand) VALUES ('m1', 'COUNTED', 7), ('m1', 'DELIVERED', 4)`,
		`INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after,
				safety_stock_after, actor_kind, actor_id, create_time) VALUES
			('m1', 'COUNTED', 'set', 5, 0, 5, 0, 0, 'admin', 'ops', $1::timestamptz - interval '1 hour'),
			('m1', 'COUNTED', 'count', 2, 0, 7, 0, 0, 'admin', 'ops', $1),
			('m1', 'DELIVERED', 'delivery', 4, 0, 4, 0, 0, 'admin', 'ops', $1)`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, counted)
		}
		if _, err := pool.Exec(t.Context(), q, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, inventory.Migrations(), testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	rows := map[string]*time.Time{}
	r, err := pool.Query(t.Context(), `SELECT sku, count_time FROM stock WHERE store_id = 'm1'`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var sku string
		var at *time.Time
		if err := r.Scan(&sku, &at); err != nil {
			t.Fatal(err)
		}
		rows[sku] = at
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	if at := rows["COUNTED"]; at == nil || !at.Equal(counted) {
		t.Errorf("the counted row's count time is %v; want its last count, %s", at, counted)
	}
	if at := rows["DELIVERED"]; at != nil {
		t.Errorf("a row never counted has count time %v; want none", at)
	}
}
