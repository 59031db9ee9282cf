package cart_test

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// TestMigrationMovesExistingLinesIntoTheCartRow starts from the schema as it was when lines had
// a table of their own, fills it, migrates, and reads the carts through the service.
func TestMigrationMovesExistingLinesIntoTheCartRow(t *testing.T) {
	e := newEnv(t)
	old, err := fs.ReadFile(cart.Migrations(), "00002_carts.sql")
	if err != nil {
		t.Fatal(err)
	}
	schema := testenv.UniqueSchema(t, "cart_migrate")
	pool := testenv.Pool(t, schema, fstest.MapFS{"00002_carts.sql": {Data: old}})

	skuA, _ := e.sku(0)
	skuB, _ := e.sku(1)
	skuC, _ := e.sku(2)
	if _, err := pool.Exec(t.Context(), `
		INSERT INTO carts (id, customer_id, version) VALUES ('full', 'alice', 7), ('empty', 'alice', 2);
		INSERT INTO cart_lines (cart_id, line_id, sku, quantity, position, product_id, product_name, variant_name, price_minor, currency) VALUES
			('full', 'line-b', '`+skuB+`', 5, 2, 'p', 'P', 'V', 100, 'USD'),
			('full', 'line-a', '`+skuA+`', 3, 1, 'p', 'P', 'V', 100, 'USD'),
			('full', 'line-c', '`+skuC+`', 1, 9, 'p', 'P', 'V', 100, 'USD')`); err != nil {
		t.Fatal(err)
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, cart.Migrations(), testenv.Logger(t)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var tables int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'cart_lines'`, schema).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("cart_lines still there after the migration (%d, %v)", tables, err)
	}

	svc := cart.New(cart.Config{Pool: pool, NATS: e.natsConn(), Currency: "USD", Logger: testenv.Logger(t)})
	full, err := svc.GetCart(t.Context(), "alice", "full")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id, sku string
		qty     int32
	}{{"line-a", skuA, 3}, {"line-b", skuB, 5}, {"line-c", skuC, 1}}
	if len(full.GetLines()) != len(want) || full.GetVersion() != 7 {
		t.Fatalf("migrated cart = %v; want 3 lines at version 7", full)
	}
	for i, w := range want {
		if l := full.GetLines()[i]; l.GetLineId() != w.id || l.GetSku() != w.sku || l.GetQuantity() != w.qty {
			t.Fatalf("line %d = %v; want %s (%s x%d), in the old order", i, l, w.id, w.sku, w.qty)
		}
	}
	empty, err := svc.GetCart(t.Context(), "alice", "empty")
	if err != nil || len(empty.GetLines()) != 0 {
		t.Fatalf("migrated empty cart = %v, %v; want no lines", empty, err)
	}

	// The migrated cart takes changes like any other: a raise keeps its line, a new SKU goes last.
	skuD, _ := e.sku(3)
	for _, sku := range []string{skuB, skuD} {
		if _, err := svc.AddLine(t.Context(), "alice", &cartv1.AddLineRequest{CartId: "full", Sku: sku, Quantity: 1}); err != nil {
			t.Fatalf("AddLine %s on the migrated cart: %v", sku, err)
		}
	}
	full, err = svc.GetCart(t.Context(), "alice", "full")
	if err != nil {
		t.Fatal(err)
	}
	if ls := full.GetLines(); len(ls) != 4 || ls[1].GetLineId() != "line-b" || ls[1].GetQuantity() != 6 || ls[3].GetSku() != skuD || full.GetVersion() != 9 {
		t.Fatalf("migrated cart after two adds = %v; want line-b at 6 and %s last, version 9", full, skuD)
	}
}
