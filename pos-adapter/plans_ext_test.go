package posadapter_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
)

// A running adapter has delivered most of its webhook calls and has a few pending. Recording
// outcomes must then look each delivery up by id, as planned once per connection, not walk a
// partial index of pending deliveries (webhook_deliveries_due, the dispatcher's,
// webhook_deliveries_pending_by_store, a store's, or webhook_deliveries_pending_since, the
// backlog gauge's), whose entries of delivered rows remain until
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
	walks := regexp.MustCompile(`webhook_deliveries_(due|pending_by_store|pending_since)`)
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

// ListTerminals reads a page, not the chain: with 5,000 terminals over 2,500 stores, a store's
// page reads its own two (the store_ids index, which `$1 = ANY (store_ids)` could not use) and a
// page of the chain its own 50 (terminals_by_create_time). Before, each read every terminal.
func TestListingTerminalsReadsAPageNotTheChain(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "plans"), posadapter.Migrations())
	for _, sql := range []string{
		`INSERT INTO terminals (id, name, store_ids, credential_hash, create_time)
			SELECT 'term-' || g, 'till', ARRAY['store-' || (g % 2500)], '\x00', now() - g * interval '1 s'
			FROM generate_series(1, 5000) g`,
		`ANALYZE terminals`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	first := time.Unix(0, 0)
	if read := testenv.RowsRead(t, pool, nil, posadapter.ListStoreTerminalsSQL, false, false, first, "", 51, "store-7"); read > 10 {
		t.Errorf("a store's terminals: %.0f rows read for its 2; want its own only", read)
	}
	if read := testenv.RowsRead(t, pool, nil, posadapter.ListTerminalsSQL, false, true, first, "", 51); read > 60 {
		t.Errorf("a page of 50 of the chain's terminals: %.0f rows read; want about a page", read)
	}
}
