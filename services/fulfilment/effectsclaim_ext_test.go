package fulfilment_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// effectsBacklog fills order_effects the way a busy system leaves it for the worker: the
// statistics taken just after the queue was emptied (no rows, the dead ones' pages still
// there), then a backlog. It returns the due heads (first effect of their order, due now), in
// id order, and the effects that must wait: later effects of an order, and heads backing off.
func effectsBacklog(t *testing.T, pool *pgxpool.Pool, orders int) (heads []int64, waiting map[int64]bool) {
	t.Helper()
	ctx := t.Context()
	for _, sql := range []string{
		`INSERT INTO order_effects (order_id, kind) SELECT 'gone-' || i, 4 FROM generate_series(1, 2000) i`,
		`DELETE FROM order_effects`,
		`ANALYZE order_effects`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Each order gets one to three effects, recorded interleaved with other orders' as
	// transitions commit; one order in ten has its first effect backing off (due later).
	type row struct {
		order string
		later bool
	}
	var rows []row
	for i := range orders {
		for range 1 + i%3 {
			rows = append(rows, row{order: fmt.Sprintf("order-%04d", i), later: i%10 == 0})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	seen := map[string]bool{}
	waiting = map[int64]bool{}
	for _, r := range rows {
		first := !seen[r.order]
		seen[r.order] = true
		due := "now() - interval '1 second'"
		if first && r.later {
			due = "now() + interval '1 hour'"
		}
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO order_effects (order_id, kind, due) VALUES ($1, 4, `+due+`) RETURNING id`, r.order).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if first && !r.later {
			heads = append(heads, id)
		} else {
			waiting[id] = true
		}
	}
	return heads, waiting
}

// The effects worker's claim stays a pass or two over the queue whatever Postgres believes
// about the table. The plan is made generic (as a pooled connection's cached plan is) on
// statistics of an emptied queue, then run against a backlog of 1,600 orders' effects.
// Written as a self-join, this claim was a nested loop of whole-index scans re-run for every
// candidate: millions of buffers here.
func TestEffectsClaimStaysLinearWhenTheQueueWasAnalyzedEmpty(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "claim"), fulfilment.Migrations())
	ctx := t.Context()
	heads, _ := effectsBacklog(t, pool, 1600)

	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // the claim EXPLAIN ANALYZE made is undone
	for _, sql := range []string{
		`SET LOCAL plan_cache_mode = force_generic_plan`,
		`SET LOCAL statement_timeout = '30s'`, // the self-join's plan ran for minutes here
		`PREPARE claim_plan AS ` + fulfilment.ClaimEffectsSQL,
	} {
		if _, err := tx.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	defer func() { _, _ = conn.Exec(ctx, `DEALLOCATE claim_plan`) }()
	var out []byte
	if err := tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim_plan(64, 30000)`,
		pgx.QueryExecModeSimpleProtocol).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan struct {
			Rows int64 `json:"Actual Rows"`
			Hit  int64 `json:"Shared Hit Blocks"`
			Read int64 `json:"Shared Read Blocks"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", out, err)
	}
	p := plans[0].Plan
	var pages int64
	if err := tx.QueryRow(ctx, `SELECT pg_relation_size('order_effects') / current_setting('block_size')::bigint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	t.Logf("claim of 64 among %d heads: %d rows, %d buffers (table: %d pages)", len(heads), p.Rows, p.Hit+p.Read, pages)
	if p.Rows != 64 {
		t.Errorf("the claim took %d effects, want 64", p.Rows)
	}
	// A pass over the heap and the order index, and a lookup per claimed effect, is a few
	// thousand buffers here; 20 times that is no longer a pass or two.
	if limit := 20 * (pages + int64(len(heads))); p.Hit+p.Read > limit {
		t.Errorf("the claim read %d buffers, over %d: its plan is not linear in the queue\n%s", p.Hit+p.Read, limit, out)
	}
}

// Claims take the oldest due heads, 64 at a time, never an effect while an earlier one of its
// order is queued (due or not), and two workers claiming at once never take the same effect.
func TestEffectsClaimTakesOnlyTheDueHeadsOnceEach(t *testing.T) {
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "claim"), fulfilment.Migrations())
	ctx := t.Context()
	heads, waiting := effectsBacklog(t, pool, 400)

	claim := func() []int64 {
		t.Helper()
		rows, err := pool.Query(ctx, fulfilment.ClaimEffectsSQL, 64, 3_600_000)
		if err != nil {
			t.Error(err)
			return nil
		}
		defer rows.Close()
		var ids []int64
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Error(err)
				return nil
			}
			ids = append(ids, vals[0].(int64))
		}
		if err := rows.Err(); err != nil {
			t.Error(err)
		}
		slices.Sort(ids)
		return ids
	}

	// Two workers at once: between them every due head once, none of the waiting effects.
	var (
		mu      sync.Mutex
		claimed []int64
		wg      sync.WaitGroup
	)
	for range 2 {
		wg.Go(func() {
			for {
				ids := claim()
				if len(ids) > 64 {
					t.Errorf("a claim took %d effects, want at most 64", len(ids))
				}
				if len(ids) == 0 {
					return
				}
				mu.Lock()
				claimed = append(claimed, ids...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(claimed)
	for i := 1; i < len(claimed); i++ {
		if claimed[i] == claimed[i-1] {
			t.Errorf("effect %d claimed twice", claimed[i])
		}
	}
	for _, id := range claimed {
		if waiting[id] {
			t.Errorf("effect %d claimed while an earlier effect of its order is queued, or before it is due", id)
		}
	}
	if !slices.Equal(slices.Compact(claimed), heads) {
		t.Errorf("claimed %d effects, want the %d due heads", len(slices.Compact(claimed)), len(heads))
	}

	// Done effects are deleted; the next claim takes the next in line, oldest first.
	if _, err := pool.Exec(ctx, `DELETE FROM order_effects WHERE id = ANY($1)`, heads); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE order_effects SET due = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	var want []int64
	if err := pool.QueryRow(ctx, `SELECT array(SELECT min(id) FROM order_effects GROUP BY order_id ORDER BY 1 LIMIT 64)`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if got := claim(); !slices.Equal(got, want) {
		t.Errorf("after the heads were done, the claim took %v, want the oldest next in line %v", got, want)
	}
}
