package cart_test

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/cart"
)

// A checked-out cart is deleted once neither created nor changed within the retention; one
// changed since, a younger one and open carts (the abandoned-cart sweep's) are kept. Before,
// every checked-out cart stayed for ever: one row per order.
func TestCheckedOutCartsAreDeletedAfterTheRetention(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "retention"), cart.Migrations(), cart.PoolOptions()...)
	ctx := t.Context()
	for _, sql := range []string{
		`INSERT INTO carts (id, customer_id, state, order_id, create_time, update_time) VALUES
			('old', 'u1', 'checked_out', 'o1', now() - interval '40 days', now() - interval '40 days'),
			('changed-lately', 'u2', 'checked_out', 'o2', now() - interval '40 days', now() - interval '1 day'),
			('young', 'u3', 'checked_out', 'o3', now() - interval '2 days', now() - interval '2 days')`,
		`INSERT INTO carts (id, customer_id, create_time, update_time) VALUES
			('open-old', 'u4', now() - interval '40 days', now() - interval '40 days')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	svc := cart.New(cart.Config{Pool: pool, CheckedOutRetention: 30 * 24 * time.Hour, CacheTTL: -1, Logger: testenv.Logger(t)})
	n, err := svc.DeleteCheckedOut(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT id FROM carts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"changed-lately", "open-old", "young"}; n != 1 || !slices.Equal(left, want) {
		t.Fatalf("the sweep deleted %d carts and left %v; want 1 deleted and %v left", n, left, want)
	}
}

// The sweep reads the checked-out carts it deletes, not every cart: with 5,000 checked out
// recently and 10 past the retention, a batch reads about the 10, in the cart's keyed plans.
func TestTheCheckedOutSweepReadsOnlyTheCartsItDeletes(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "retention"), cart.Migrations(), cart.PoolOptions()...)
	for _, sql := range []string{
		`INSERT INTO carts (id, customer_id, state, order_id, create_time, update_time)
			SELECT 'c' || i, 'u' || i, 'checked_out', 'o' || i, now() - i * interval '1 second', now() - i * interval '1 second'
			FROM generate_series(1, 5000) i`,
		`INSERT INTO carts (id, customer_id, state, order_id, create_time, update_time)
			SELECT 'old' || i, 'w' || i, 'checked_out', 'p' || i, now() - interval '40 days', now() - interval '40 days'
			FROM generate_series(1, 10) i`,
		`ANALYZE carts`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	month := (30 * 24 * time.Hour).Microseconds()
	if read := testenv.RowsRead(t, pool, []string{pgdb.KeyedPlansSQL}, cart.DeleteCheckedOutSQL, month, 5000); read > 40 {
		t.Errorf("a sweep deleting 10 carts read %v rows", read)
	}
}
