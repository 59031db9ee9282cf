package cart_test

import (
	"regexp"
	"testing"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/cart"
)

// A running system holds many carts checked out and a few open, and the statistics say so.
// The statements that find a cart by id must then look up its key, as planned once per
// connection, not walk carts_abandoned (the partial index of open carts, the sweep's), whose
// entries of carts checked out remain until a vacuum. With the open state written as a
// constant some of them do (checked below, else this test would prove nothing).
func TestKeyedStatementsLookUpTheCartNotEveryOpenCart(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "plans"), cart.Migrations())
	for _, sql := range []string{
		// Shoppers with many carts each: a plan through carts_by_customer on the customer alone
		// would read them all.
		`INSERT INTO carts (id, customer_id, state, order_id) SELECT 'c' || i, 'u' || (i % 20), 'checked_out', 'o' || i FROM generate_series(1, 5000) i`,
		`INSERT INTO carts (id, customer_id) SELECT 'open' || i, 'v' || i FROM generate_series(1, 5) i`,
		`ANALYZE carts`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Nor carts_checked_out, the sweep's partial index of checked-out carts.
	walks := regexp.MustCompile(`carts_abandoned|carts_checked_out`)

	// The same statements with the constant: $n of "state = $n" is 'open'.
	stateParam := regexp.MustCompile(`state = \$\d+`)
	constant := map[string]string{}
	for name, sql := range cart.KeyedStatements {
		constant[name] = stateParam.ReplaceAllString(sql, "state = 'open'")
	}
	walked := 0
	for name, plan := range testenv.GenericPlans(t, pool, pgdb.KeyedPlansSQL, constant) {
		if walks.MatchString(plan) {
			t.Logf("%s, with the constant, walks carts_abandoned", name)
			walked++
		}
	}
	if walked == 0 {
		t.Fatal("no statement walks carts_abandoned even with the constant; this test proves nothing")
	}

	// By its key, or by carts_by_customer on the customer and the cart's id (erasures' index).
	byKey := regexp.MustCompile(`Index Scan using carts_pkey|Index Scan using carts_by_customer on carts .*\n\s*Index Cond: \(\(customer_id = \S+\) AND \(id = `)
	for name, plan := range testenv.GenericPlans(t, pool, pgdb.KeyedPlansSQL, cart.KeyedStatements) {
		if walks.MatchString(plan) || !byKey.MatchString(plan) {
			t.Errorf("%s: the generic plan does not look up the cart's key:\n%s", name, plan)
		}
	}
}
