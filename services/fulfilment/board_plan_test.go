package fulfilment

import (
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// A store's board reads its open orders, not its history: with 5,000 ended orders at the store
// and 20 open, the board's statement reads the open ones through orders_open_by_store, in a
// generic plan too (one a connection may settle on after five calls). Through orders_by_store
// it read every order the store ever had (a year of a busy store: 37,000 pages, 120 ms); in a
// generic plan it scanned the whole table.
func TestAStoreBoardReadsItsOpenOrdersNotItsHistory(t *testing.T) {
	ctx := t.Context()
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "board"), Migrations())
	// Ended orders (collected, cancelled, rejected), interleaved with other stores' as a
	// chain's are, then the open ones.
	if _, err := pool.Exec(ctx, `INSERT INTO orders (id, customer_id, idempotency_key, state, store_id, store_name, lines,
			currency, version, create_time, update_time)
		SELECT 'h' || g, 'c' || g, 'h' || g, 5 + g % 3, CASE WHEN g % 4 = 0 THEN 'hot' ELSE 'other' || g % 50 END, 'Store',
			'[]', 'USD', 5, now() - interval '60 days' + g * interval '1 minute', now()
		FROM generate_series(0, 19999) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO orders (id, customer_id, idempotency_key, state, store_id, store_name, lines,
			currency, version, create_time, update_time)
		SELECT 'open' || g, 'c' || g, 'open' || g, 2 + g % 3, 'hot', 'Hot', '[]', 'USD', 3, now() - g * interval '3 minutes', now()
		FROM generate_series(0, 19) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE orders`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		states []int16
	}{
		{"the board (every open state)", []int16{int16(domain.Confirmed), int16(domain.Preparing), int16(domain.Ready)}},
		{"the orders waiting to be accepted", []int16{int16(domain.Confirmed)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sql, args := storeOrdersQuery("hot", c.states, listPosition{}, false, 50)
			if read := testenv.RowsRead(t, pool, nil, sql, args...); read > 20 {
				t.Errorf("the board read %v rows for at most 20 open orders", read)
			}
			plan := testenv.GenericPlans(t, pool, "SET LOCAL plan_cache_mode = force_generic_plan", map[string]string{"board": sql})["board"]
			if !strings.Contains(plan, "orders_open_by_store") {
				t.Errorf("the board's generic plan does not read the open orders' index:\n%s", plan)
			}
		})
	}
}
