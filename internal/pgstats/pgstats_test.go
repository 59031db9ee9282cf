package pgstats_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/pgstats"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A table shaped like the cart service's carts: its key, and a partial index of the open ones.
const schemaSQL = `
	CREATE TABLE carts (id text PRIMARY KEY, customer_id text NOT NULL, state text NOT NULL DEFAULT 'open',
		pickup_store_id text, near_lat float8, near_lng float8, near_radius_m float8,
		version bigint NOT NULL DEFAULT 1, checkout_key text, checkout_until timestamptz,
		create_time timestamptz NOT NULL DEFAULT now(), update_time timestamptz NOT NULL DEFAULT now(),
		lines jsonb NOT NULL DEFAULT '[]') WITH (fillfactor = 80);
	CREATE INDEX carts_abandoned ON carts (create_time) WHERE state = 'open';
	CREATE TABLE quiet (id int PRIMARY KEY);
	INSERT INTO carts (id, customer_id) SELECT 'cart-' || i, 'shopper' FROM generate_series(1, 5) i;
	INSERT INTO quiet SELECT generate_series(1, 10);`

// updateSQL is the cart's conditional update of its lines and pickup.
const updateSQL = `UPDATE carts SET lines = $4, pickup_store_id = $5, near_lat = $6, near_lng = $7, near_radius_m = $8,
		version = version + 1, update_time = now()
	WHERE id = $1 AND customer_id = $2 AND version = $3
	  AND state = 'open' AND (checkout_until IS NULL OR checkout_until <= now())
	RETURNING version, update_time`

func TestACachedPlanMadeOnAFewRowsUsesTheKeyOnceTheGrownTableIsAnalyzed(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	ctx := t.Context()
	schema := currentSchema(t, pool)
	if _, err := pool.Exec(ctx, schemaSQL); err != nil {
		t.Fatal(err)
	}
	// One connection keeps its plan, as the services' connections do; generic plans forced so
	// that the cached plan is the one Postgres would settle on after a few calls.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `PREPARE upd(text, text, bigint, jsonb, text, float8, float8, float8) AS `+updateSQL); err != nil {
		t.Fatal(err)
	}
	plan := func() string {
		t.Helper()
		var lines []string
		rows, err := conn.Query(ctx, `EXPLAIN EXECUTE upd('cart-1', 'shopper', 1, '[]', 's1', NULL, NULL, NULL)`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	// Planned on five rows and no statistics, the update walks the index of every open row
	// (which is why this package exists; Postgres 15 plans so).
	if before := plan(); !strings.Contains(before, "carts_abandoned") {
		t.Fatalf("plan on five rows:\n%s\nwant the scan of the open rows' index that this test guards against", before)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO carts (id, customer_id) SELECT 'cart-' || i, 'shopper' FROM generate_series(6, 20000) i`); err != nil {
		t.Fatal(err)
	}
	if grown := plan(); !strings.Contains(grown, "carts_abandoned") {
		t.Fatalf("plan after growing, not analyzed:\n%s\nwant the cached scan still", grown)
	}

	// The server's statistics trail the writes by up to a second.
	var analyzed []string
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(analyzed, "carts") && time.Now().Before(deadline) {
		if analyzed, err = pgstats.Once(ctx, pool, schema); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(analyzed, []string{"carts"}) {
		t.Fatalf("analyzed %v; want just the grown table (not the 10-row one, nor the unchanged shared ones)", analyzed)
	}
	if after := plan(); !strings.Contains(after, "carts_pkey") {
		t.Errorf("plan after the analysis:\n%s\nwant the lookup by key", after)
	}
	var tuples float64
	if err := pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'carts'::regclass`).Scan(&tuples); err != nil || tuples < 19000 {
		t.Errorf("carts has reltuples %v (%v) after the analysis; want about 20,000", tuples, err)
	}
	// Analyzed tables are left alone until they change enough again, and large ones for good.
	if again, err := pgstats.Once(ctx, pool, schema); err != nil || len(again) != 0 {
		t.Errorf("a second round analyzed %v (%v); want nothing", again, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO carts (id, customer_id) SELECT 'cart-' || i, 'shopper' FROM generate_series(20001, 50000) i`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the statistics' lag, as above
	if again, err := pgstats.Once(ctx, pool, schema); err != nil || len(again) != 0 {
		t.Errorf("after a table analyzed at 20,000 rows grew to 50,000, a round analyzed %v (%v); want nothing: that is autovacuum's", again, err)
	}
}

func TestRunAnalyzesUntilStopped(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	schema := currentSchema(t, pool)
	if _, err := pool.Exec(t.Context(), schemaSQL); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO quiet SELECT generate_series(11, 1000)`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- pgstats.Run(ctx, pool, schema, pgstats.Config{Interval: 20 * time.Millisecond, Logger: testenv.Logger(t)})
	}()
	deadline := time.Now().Add(10 * time.Second)
	var analyzed bool
	for !analyzed && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if err := pool.QueryRow(t.Context(), `SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = 'quiet'::regclass`).Scan(&analyzed); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !analyzed {
		t.Fatal("Run did not analyze a table that grew from 10 to 1,000 rows")
	}
}

func currentSchema(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	if err := pool.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// analyses records when each ANALYZE a pool sent ran.
type analyses struct {
	mu    sync.Mutex
	spans [][2]time.Time
}

type startKey struct{}

func (a *analyses) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.HasPrefix(data.SQL, "ANALYZE") {
		return ctx
	}
	return context.WithValue(ctx, startKey{}, time.Now())
}

func (a *analyses) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if began, ok := ctx.Value(startKey{}).(time.Time); ok {
		a.mu.Lock()
		a.spans = append(a.spans, [2]time.Time{began, time.Now()})
		a.mu.Unlock()
	}
}

// Services that run in one process analyze one table at a time between them, however many
// of their tables grew at once: each analysis takes a core while it runs.
func TestServicesOfOneProcessAnalyzeOneTableAtATime(t *testing.T) {
	ctx := t.Context()
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	traced := &analyses{}
	cfg.ConnConfig.Tracer = traced
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schemas := []string{testenv.UniqueSchema(t, "one"), testenv.UniqueSchema(t, "two")}
	for _, s := range schemas {
		for _, table := range []string{"a", "b", "c"} {
			name := pgx.Identifier{s, table}.Sanitize()
			for _, sql := range []string{
				`CREATE SCHEMA IF NOT EXISTS ` + pgx.Identifier{s}.Sanitize(),
				`CREATE TABLE ` + name + ` (id int PRIMARY KEY, note text)`,
				`INSERT INTO ` + name + ` SELECT i, md5(i::text) FROM generate_series(1, 20000) i`,
			} {
				if _, err := pool.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
		}
	}
	// The server's counts of rows trail the writes by up to a second.
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = ANY($1) AND n_live_tup = 20000`, schemas).Scan(&n); err != nil {
			return err
		}
		if n != 6 {
			return fmt.Errorf("%d of 6 tables counted with their rows", n)
		}
		return nil
	})

	var wg sync.WaitGroup
	for _, s := range schemas {
		wg.Go(func() {
			if analyzed, err := pgstats.Once(ctx, pool, s); err != nil || len(analyzed) != 3 {
				t.Errorf("Once(%s) analyzed %v (%v), want its 3 tables", s, analyzed, err)
			}
		})
	}
	wg.Wait()
	spans := traced.spans
	slices.SortFunc(spans, func(x, y [2]time.Time) int { return x[0].Compare(y[0]) })
	if len(spans) != 6 {
		t.Fatalf("%d analyses traced, want 6", len(spans))
	}
	for i := 1; i < len(spans); i++ {
		if spans[i][0].Before(spans[i-1][1]) {
			t.Errorf("analysis %d began %v before analysis %d ended", i, spans[i-1][1].Sub(spans[i][0]), i-1)
		}
	}
}

// A table whose rows are updated over and over (carts, orders: four or five updates for each
// row added) is analyzed when it grows, not whenever as many rows were changed as it holds.
func TestUpdatesWithoutGrowthDoNotAnalyzeAgain(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	ctx := t.Context()
	schema := currentSchema(t, pool)
	if _, err := pool.Exec(ctx, schemaSQL); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO carts (id, customer_id) SELECT 'cart-' || i, 'shopper' FROM generate_series(6, 1000) i`,
		`ANALYZE carts`, `ANALYZE quiet`,
		`UPDATE carts SET version = version + 1`,
		`UPDATE carts SET version = version + 1`,
		`UPDATE carts SET version = version + 1`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Wait for the server's counts (they trail the writes by up to a second).
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		var mods int64
		if err := pool.QueryRow(ctx, `SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'carts'::regclass`).Scan(&mods); err != nil {
			return err
		}
		if mods < 3000 {
			return fmt.Errorf("%d changes counted of 3,000", mods)
		}
		return nil
	})
	if analyzed, err := pgstats.Once(ctx, pool, schema); err != nil || len(analyzed) != 0 {
		t.Fatalf("after 3,000 updates of a 1,000-row table, a round analyzed %v (%v); want nothing: it did not grow", analyzed, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO carts (id, customer_id) SELECT 'cart-' || i, 'shopper' FROM generate_series(1001, 2100) i`); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		analyzed, err := pgstats.Once(ctx, pool, schema)
		if err != nil {
			return err
		}
		if !slices.Equal(analyzed, []string{"carts"}) {
			return fmt.Errorf("after it doubled, a round analyzed %v; want carts", analyzed)
		}
		return nil
	})
}
