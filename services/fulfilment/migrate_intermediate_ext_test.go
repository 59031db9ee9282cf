package fulfilment_test

import (
	"testing"
	"testing/fstest"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// 00008_store_closings.sql as commit 9818cb6 had it (main, 2026-11-25 08:51, until f8af9ed
// rewrote the file in place at 09:07). A database that build migrated records version 8 as
// applied, so the rewritten file never runs on it.
const storeClosingsAt9818cb6 = `-- +goose Up
CREATE TABLE store_closings (
    store_id text NOT NULL,
    closed_at timestamptz NOT NULL,
    reason text NOT NULL,
    actor_kind smallint NOT NULL,
    actor_id text NOT NULL,
    handled_at timestamptz NOT NULL,
    PRIMARY KEY (store_id, closed_at)
);

-- +goose Down
DROP TABLE store_closings;
`

// 00008 as commit 49a6f86 had it (main, 2026-11-25 08:25, named 00008_store_closures.sql until
// 9818cb6).
const storeClosuresAt49a6f86 = `-- +goose Up
CREATE TABLE store_closures (
    store_id text PRIMARY KEY,
    version bigint NOT NULL DEFAULT -1,
    closed boolean NOT NULL DEFAULT false,
    cancel_orders boolean NOT NULL DEFAULT false,
    cancel_reason text NOT NULL DEFAULT '',
    cancel_actor_kind smallint NOT NULL DEFAULT 0,
    cancel_actor_id text NOT NULL DEFAULT '',
    cancel_at timestamptz
);

-- +goose Down
DROP TABLE store_closures;
`

// A database created by a build whose 00008 had another content is brought to the schema the
// code uses: orders.store_version and store_closings keyed by version. Before, the current
// build started and said SERVING on such a database, and every checkout, timer round and
// PENDING recovery failed on "column store_version does not exist".
func TestADatabaseFromAnEarlierMigration8IsUpgraded(t *testing.T) {
	for name, file := range map[string]string{
		"00008_store_closures.sql": storeClosuresAt49a6f86,
		"00008_store_closings.sql": storeClosingsAt9818cb6,
	} {
		t.Run(name, func(t *testing.T) { upgradeFromEarlierMigration8(t, name, file) })
	}
}

func upgradeFromEarlierMigration8(t *testing.T, name, file string) {
	old := testenv.MigrationsUpTo(t, fulfilment.Migrations(), "00007").(fstest.MapFS)
	old[name] = &fstest.MapFile{Data: []byte(file)}
	for name, f := range testenv.MigrationsUpTo(t, fulfilment.Migrations(), "00099").(fstest.MapFS) {
		if name >= "00020" {
			old[name] = f // notify's, as every database had them
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
		t.Errorf("the existing order's store version: %d, %v; want 0", v, err)
	}
	if _, err := upgraded.Exec(t.Context(), `SELECT store_id, version, reason, actor_kind, actor_id, handled_at FROM store_closings`); err != nil {
		t.Errorf("store_closings after the upgrade: %v", err)
	}
}
