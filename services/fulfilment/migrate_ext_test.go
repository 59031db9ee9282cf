package fulfilment_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// Every existing database is at notify's 00020 already: fulfilment's 00008 (store versions and
// closings) and 00009 (the pickup asked for) are applied out of order there, and its orders get
// store version 0 and no requested pickup.
func TestLaterMigrationsUpgradeADatabaseAtNotifysMigrations(t *testing.T) {
	old := testenv.MigrationsUpTo(t, fulfilment.Migrations(), "00007").(fstest.MapFS)
	entries, err := fs.ReadDir(fulfilment.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "0002") {
			b, err := fs.ReadFile(fulfilment.Migrations(), e.Name())
			if err != nil {
				t.Fatal(err)
			}
			old[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	pool := testenv.Pool(t, "", old)
	var schema string
	if err := pool.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO orders (id, customer_id, idempotency_key, cart_id, state, lines, currency, placement, version, create_time, update_time)
		VALUES ('o1', 'c1', 'k1', 'cart1', 2, '[]', 'USD', NULL, 1, now(), now())`); err != nil {
		t.Fatal(err)
	}
	upgraded := testenv.Pool(t, schema, fulfilment.Migrations())
	var v int64
	if err := upgraded.QueryRow(t.Context(), `SELECT store_version FROM orders WHERE id = 'o1'`).Scan(&v); err != nil || v != 0 {
		t.Fatalf("the existing order's store version: %d, %v; want 0", v, err)
	}
	if _, err := upgraded.Exec(t.Context(), `SELECT store_id, version, reason, actor_kind, actor_id, handled_at FROM store_closings`); err != nil {
		t.Fatalf("store_closings after the upgrade: %v", err)
	}
	var pickup string
	if err := upgraded.QueryRow(t.Context(), `SELECT requested_pickup FROM orders WHERE id = 'o1'`).Scan(&pickup); err != nil || pickup != "" {
		t.Fatalf("the existing order's requested pickup: %q, %v; want none", pickup, err)
	}
}
