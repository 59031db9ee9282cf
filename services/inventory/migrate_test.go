package inventory_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/inventory"
)

// A database with stock from before count times were kept is brought up to date: each row's
// count time is its last count (SET or COUNT correction) in the ledger; a row never counted
// has none.
func TestMigratingExistingStockFillsInCountTimes(t *testing.T) {
	schema := testenv.UniqueSchema(t, "invmig")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, inventory.Migrations(), "00004"))
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

// An upgrade's migration that alters stock, then movements, while a long transaction reads
// the ledger (CheckInvariants, a report) does not stop stock writes for as long as that
// transaction runs: it waits a bounded time for its lock, gives up the lock it has on stock,
// and tries again later, finishing once the reader is done. Before, reserves queued behind it
// for the reader's whole run. Here its waits are bounded at 200 ms (the pool's lock_timeout;
// pgdb.MigrationLockTimeout otherwise).
func TestAMigrationWaitingBehindALedgerReaderLetsStockWritesThrough(t *testing.T) {
	schema := testenv.UniqueSchema(t, "invlock")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, inventory.Migrations(), "00004"))
	ctx := t.Context()
	for _, q := range []string{
		`INSERT INTO stores (id, name, lat, lng, time_zone, prep_seconds, pickup_window_seconds, state)
			VALUES ('m1', 'Store', 47.6, -122.3, 'America/Los_Angeles', 300, 3600, 'open')`,
		`INSERT INTO stock (store_id, sku, on_hand) VALUES ('m1', 'LATTE', 10)`,
		`INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after,
			safety_stock_after, actor_kind, actor_id) VALUES ('m1', 'LATTE', 'set', 10, 0, 10, 0, 0, 'admin', 'ops')`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// A long read of the ledger is under way.
	reader, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reader.Rollback(context.Background()) }()
	var n int
	if err := reader.QueryRow(ctx, `SELECT count(*) FROM movements`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	// The new build starts and migrates (00005 alters stock, then movements).
	cfg := pool.Config()
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = "200ms"
	migratePool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer migratePool.Close()
	migrated := make(chan error, 1)
	go func() { migrated <- pgdb.Migrate(ctx, migratePool, schema, inventory.Migrations(), testenv.Logger(t)) }()

	// Meanwhile a copy of the old build reserves, again and again: each write gets through.
	for i := range 20 {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		tx, err := pool.Begin(wctx)
		if err == nil {
			var onHand int
			err = tx.QueryRow(wctx, `SELECT on_hand FROM stock WHERE store_id = 'm1' AND sku = 'LATTE' FOR UPDATE`).Scan(&onHand)
			if err == nil {
				_, err = tx.Exec(wctx, `UPDATE stock SET reserved = (reserved + 1) % 5 WHERE store_id = 'm1' AND sku = 'LATTE'`)
			}
			if err == nil {
				err = tx.Commit(wctx)
			}
			_ = tx.Rollback(context.Background())
		}
		cancel()
		if err != nil {
			t.Fatalf("stock write %d while the migration waited behind the ledger reader: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-migrated:
		t.Fatalf("the migration finished while the reader still read the ledger: %v", err)
	default:
	}
	// The reader is done; the migration gets its locks and finishes.
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Fatalf("migrate once the reader was done: %v", err)
	}
	var version int64
	if err := pool.QueryRow(ctx, `SELECT version FROM stock WHERE store_id = 'm1' AND sku = 'LATTE'`).Scan(&version); err != nil {
		t.Fatalf("the migrated stock table: %v", err)
	}
}

// count_short is not known for rows already there when migration 00010 runs (their last count
// did not keep it): they get NULL, and new rows 0.
func TestCountShortIsUnknownForRowsCountedBeforeItWasKept(t *testing.T) {
	schema := testenv.UniqueSchema(t, "mig")
	pool := testenv.Pool(t, schema, testenv.MigrationsUpTo(t, inventory.Migrations(), "00009"))
	for _, q := range []string{
		`INSERT INTO stores (id, name, lat, lng, time_zone, prep_seconds, pickup_window_seconds, state)
			VALUES ('m1', 'Old store', 47.6, -122.3, 'America/Los_Angeles', 300, 3600, 'open')`,
		`INSERT INTO stock (store_id, sku, on_hand, count_time) VALUES ('m1', 'OLD', 2, now())`,
	} {
		if _, err := pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, inventory.Migrations(), testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO stock (store_id, sku, on_hand) VALUES ('m1', 'NEW', 1)`); err != nil {
		t.Fatal(err)
	}
	got := map[string]*int32{}
	rows, err := pool.Query(t.Context(), `SELECT sku, count_short FROM stock`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sku string
		var short *int32
		if err := rows.Scan(&sku, &short); err != nil {
			t.Fatal(err)
		}
		got[sku] = short
	}
	if got["OLD"] != nil || got["NEW"] == nil || *got["NEW"] != 0 {
		t.Errorf("count_short: OLD %v, NEW %v; want NULL (unknown) for the row there before, 0 for the new one", got["OLD"], got["NEW"])
	}
}
