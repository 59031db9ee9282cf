package posadapter_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// A running adapter has delivered most of its webhook calls and has a few pending. Recording
// outcomes must then look each delivery up by id, as planned once per connection, not walk a
// partial index of pending deliveries (webhook_deliveries_due, the dispatcher's, or
// webhook_deliveries_pending_by_store, a store's), whose entries of delivered rows remain until
// a vacuum. With the pending state written as a constant it does (checked below, else this test
// would prove nothing).
func TestRecordingDeliveriesLooksUpEachByID(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "plans"), posadapter.Migrations())
	for _, sql := range []string{
		`INSERT INTO webhook_deliveries (id, store_id, ticket_id, state, done_time)
			SELECT gen_random_uuid(), 's1', gen_random_uuid(), 'delivered', now() FROM generate_series(1, 20000)`,
		`INSERT INTO webhook_deliveries (id, store_id, ticket_id) SELECT gen_random_uuid(), 's1', gen_random_uuid() FROM generate_series(1, 5)`,
		`ANALYZE webhook_deliveries`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	walks := regexp.MustCompile(`webhook_deliveries_(due|pending_by_store)`)
	stateParam := regexp.MustCompile(`state = \$\d+`)
	constant := map[string]string{}
	for name, sql := range posadapter.KeyedStatements {
		constant[name] = stateParam.ReplaceAllString(sql, "state = 'pending'")
	}
	for name, plan := range testenv.GenericPlans(t, pool, pgdb.KeyedPlansSQL, constant) {
		if !walks.MatchString(plan) {
			t.Fatalf("%s with the constant walks no index of pending deliveries; this test proves nothing:\n%s", name, plan)
		}
	}
	for name, plan := range testenv.GenericPlans(t, pool, pgdb.KeyedPlansSQL, posadapter.KeyedStatements) {
		if walks.MatchString(plan) || !strings.Contains(plan, "webhook_deliveries_pkey") {
			t.Errorf("%s: the generic plan does not look each delivery up by id:\n%s", name, plan)
		}
	}
}
