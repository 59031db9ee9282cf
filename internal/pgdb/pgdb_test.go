package pgdb_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// storeMigrations stands in for a service's embedded migrations; 00003
// counts how often it runs.
var storeMigrations = fstest.MapFS{
	"00002_stores.sql": {Data: []byte(`-- +goose Up
CREATE TABLE stores (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE applied (migration int NOT NULL);
-- +goose Down
DROP TABLE applied;
DROP TABLE stores;
`)},
	"00003_count.sql": {Data: []byte(`-- +goose Up
INSERT INTO applied VALUES (3);
-- +goose Down
DELETE FROM applied WHERE migration = 3;
`)},
}

func TestOpenCreatesSchemaAndSetsSearchPath(t *testing.T) {
	schema := testenv.UniqueSchema(t, "inventory")
	pool := open(t, schema)

	var current string
	if err := pool.QueryRow(t.Context(), "SELECT current_schema()").Scan(&current); err != nil {
		t.Fatal(err)
	}
	if current != schema {
		t.Fatalf("current_schema() = %q, want %q", current, schema)
	}
	// Unqualified DDL lands in the service's schema, on every pooled connection.
	if _, err := pool.Exec(t.Context(), "CREATE TABLE holds (id int)"); err != nil {
		t.Fatal(err)
	}
	var where string
	if err := pool.QueryRow(t.Context(),
		"SELECT table_schema FROM information_schema.tables WHERE table_name = 'holds' AND table_schema = $1", schema).Scan(&where); err != nil {
		t.Fatalf("holds not created in %s: %v", schema, err)
	}
}

func TestOpenRejectsSchemaThatIsNotAPlainIdentifier(t *testing.T) {
	for _, bad := range []string{"", "Inventory", "cart-v2", "pg_catalog", "1st", strings.Repeat("a", 64)} {
		if _, err := pgdb.Open(t.Context(), "postgres://127.0.0.1:1/x", bad); err == nil {
			t.Errorf("Open with schema %q succeeded", bad)
		}
	}
}

func TestMigrateAppliesSharedTablesThenServiceMigrations(t *testing.T) {
	schema := testenv.UniqueSchema(t, "inventory")
	pool := open(t, schema)
	migrate(t, pool, schema)

	for _, table := range []string{"outbox", "processed_events", "stores", "goose_db_version"} {
		var ok bool
		if err := pool.QueryRow(t.Context(),
			"SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)", schema, table).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("table %s.%s missing after Migrate", schema, table)
		}
	}
	if got := versions(t, pool); got != "1,2,3,1000000001,1000000002" {
		t.Fatalf("applied versions = %s, want 1,2,3,1000000001,1000000002", got)
	}
}

func TestMigrateAgainChangesNothing(t *testing.T) {
	schema := testenv.UniqueSchema(t, "cart")
	pool := open(t, schema)
	migrate(t, pool, schema)
	migrate(t, pool, schema)

	if got := versions(t, pool); got != "1,2,3,1000000001,1000000002" {
		t.Fatalf("applied versions = %s, want 1,2,3,1000000001,1000000002", got)
	}
	if n := appliedCount(t, pool); n != 1 {
		t.Fatalf("migration 3 ran %d times, want once", n)
	}
}

// A service numbering its migrations in ranges (fulfilment: orders 2-19, notify 20 and up)
// adds one below a version a database has applied already: it is applied, not refused.
func TestMigrateAppliesANewMigrationBelowOneApplied(t *testing.T) {
	schema := testenv.UniqueSchema(t, "fulfilment")
	pool := open(t, schema)
	ranges := fstest.MapFS{
		"00002_stores.sql": storeMigrations["00002_stores.sql"],
		"00020_notes.sql":  {Data: []byte("-- +goose Up\nINSERT INTO applied VALUES (20);\n-- +goose Down\nDELETE FROM applied WHERE migration = 20;\n")},
	}
	if err := pgdb.Migrate(t.Context(), pool, schema, ranges, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	ranges["00003_count.sql"] = storeMigrations["00003_count.sql"]
	if err := pgdb.Migrate(t.Context(), pool, schema, ranges, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate with a new migration below an applied one: %v", err)
	}
	if got := versions(t, pool); got != "1,2,3,20,1000000001,1000000002" {
		t.Fatalf("applied versions = %s, want 1,2,3,20,1000000001,1000000002", got)
	}
	if n := appliedCount(t, pool); n != 2 {
		t.Fatalf("applied rows = %d, want 2 (3 and 20, once each)", n)
	}
}

// A migration's lock waits are bounded (pgdb.MigrationLockTimeout), unless the pool's
// connections bound them themselves: a migration queued behind a long reader of its table
// would otherwise stop that table's writers for as long as the reader ran.
func TestMigrationsWaitForLocksABoundedTime(t *testing.T) {
	record := fstest.MapFS{"00002_seen.sql": {Data: []byte("-- +goose Up\nCREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout;\n")}}
	seen := func(pool *pgxpool.Pool) (v string) {
		t.Helper()
		if err := pool.QueryRow(t.Context(), "SELECT lock_timeout FROM seen").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	schema := testenv.UniqueSchema(t, "locks")
	pool := open(t, schema)
	if err := pgdb.Migrate(t.Context(), pool, schema, record, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if got := seen(pool); got != pgdb.MigrationLockTimeout {
		t.Errorf("a migration waited for locks with lock_timeout %q; want %q", got, pgdb.MigrationLockTimeout)
	}

	schema = testenv.UniqueSchema(t, "ownlocks")
	cfg := open(t, schema).Config()
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = "7s"
	own, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if err := pgdb.Migrate(t.Context(), own, schema, record, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if got := seen(own); got != "7s" {
		t.Errorf("with the pool's own lock_timeout of 7s a migration waited with %q", got)
	}
}

func TestConcurrentMigrationsOfOneSchemaApplyOnce(t *testing.T) {
	schema := testenv.UniqueSchema(t, "fulfilment")
	url := testenv.DatabaseURL(t)
	// Copies of a service starting at once, each with its own pool: they race
	// to create the schema and to migrate it.
	const copies = 3
	pools := make([]*pgxpool.Pool, copies)
	errs := make([]error, copies)
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() {
			pools[i], errs[i] = pgdb.Open(t.Context(), url, schema, pgdb.WithMaxConns(2))
			if errs[i] == nil {
				errs[i] = pgdb.Migrate(t.Context(), pools[i], schema, storeMigrations, testenv.Logger(t))
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if pools[i] != nil {
			t.Cleanup(pools[i].Close)
		}
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	if got := versions(t, pools[0]); got != "1,2,3,1000000001,1000000002" {
		t.Fatalf("applied versions = %s, want 1,2,3,1000000001,1000000002 each once", got)
	}
	if n := appliedCount(t, pools[0]); n != 1 {
		t.Fatalf("migration 3 ran %d times, want once", n)
	}
}

func TestSchemasInOneDatabaseMigrateIndependently(t *testing.T) {
	a, b := testenv.UniqueSchema(t, "catalog"), testenv.UniqueSchema(t, "inventory")
	poolA, poolB := open(t, a), open(t, b)
	migrate(t, poolA, a)
	migrate(t, poolB, b)
	if got := versions(t, poolB); got != "1,2,3,1000000001,1000000002" {
		t.Fatalf("second schema: applied versions = %s, want 1,2,3,1000000001,1000000002", got)
	}
}

// A schema made before a shared migration was added (the outbox's trace_parent) runs it at its
// next start, and a service's migrations added after it still run.
func TestASchemaMadeBeforeASharedMigrationRunsIt(t *testing.T) {
	schema := testenv.UniqueSchema(t, "cart")
	pool := open(t, schema)
	migrate(t, pool, schema)
	// As a build before the shared migration left it.
	if _, err := pool.Exec(t.Context(), `ALTER TABLE outbox DROP COLUMN trace_parent`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `DELETE FROM goose_db_version WHERE version_id = $1`, pgdb.SharedTraceVersion); err != nil {
		t.Fatal(err)
	}
	later := maps.Clone(storeMigrations)
	later["00004_more.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nINSERT INTO applied VALUES (4);\n-- +goose Down\nDELETE FROM applied WHERE migration = 4;\n")}
	if err := pgdb.Migrate(t.Context(), pool, schema, later, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO outbox (event_id, subject, event_type, payload, trace_parent)
		VALUES (gen_random_uuid(), 's', 't', '', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')`); err != nil {
		t.Fatalf("the outbox after the shared migration: %v", err)
	}
	if got := versions(t, pool); got != "1,2,3,4,1000000001,1000000002" {
		t.Fatalf("applied versions = %s, want 1,2,3,4,1000000001,1000000002", got)
	}
	if n := appliedCount(t, pool); n != 2 {
		t.Fatalf("applied rows = %d, want 2 (3 and 4, once each)", n)
	}
}

func TestMigrateRejectsServiceMigrationNumberedOne(t *testing.T) {
	schema := testenv.UniqueSchema(t, "catalog")
	pool := open(t, schema)
	for _, name := range []string{"00001_products.sql", "1000000002_products.sql"} {
		fsys := fstest.MapFS{name: {Data: []byte("-- +goose Up\nSELECT 1;\n")}}
		err := pgdb.Migrate(t.Context(), pool, schema, fsys, testenv.Logger(t))
		if err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Fatalf("Migrate with %s: err = %v, want a 'reserved' error", name, err)
		}
	}
}

func TestIsUniqueViolationSeesDuplicateEventID(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	insert := "INSERT INTO outbox (event_id, subject, event_type, payload) VALUES ('7d0b1f1e-62a3-4a43-9d2e-2b0d1c8a9f00', 's', 't', '')"
	if _, err := pool.Exec(t.Context(), insert); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(t.Context(), insert)
	if !pgdb.IsUniqueViolation(err) {
		t.Fatalf("duplicate event_id: IsUniqueViolation(%v) = false", err)
	}
	if pgdb.IsSerializationFailure(err) {
		t.Fatal("a unique violation is not a serialization failure")
	}
}

func open(t *testing.T, schema string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgdb.Open(t.Context(), testenv.DatabaseURL(t), schema,
		pgdb.WithAppName(t.Name()), pgdb.WithMaxConns(2), pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func migrate(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	if err := pgdb.Migrate(t.Context(), pool, schema, storeMigrations, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

// versions lists applied migration versions (goose's 0 marker left out).
func versions(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var got string
	if err := pool.QueryRow(context.Background(),
		"SELECT coalesce(string_agg(version_id::text, ',' ORDER BY version_id), '') FROM goose_db_version WHERE version_id > 0").Scan(&got); err != nil {
		t.Fatalf("read versions: %v", err)
	}
	return got
}

func appliedCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM applied").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateRefusesPoolWhoseSearchPathIsElsewhere(t *testing.T) {
	schema := testenv.UniqueSchema(t, "catalog")
	other := open(t, testenv.UniqueSchema(t, "other"))
	err := pgdb.Migrate(t.Context(), other, schema, storeMigrations, testenv.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "search_path") {
		t.Fatalf("Migrate through a pool on another schema: err = %v, want a search_path error", err)
	}
}

// A keyed pool plans a statement with an array parameter once per connection where a plain
// pool plans it again on every call, and its plan uses the index even over a nearly empty
// analyzed table, where a plain plan scans the table.
func TestKeyedPlansPlanOnceOnTheIndex(t *testing.T) {
	plans := func(t *testing.T, opts ...pgdb.Option) (generic, custom int64, plan string) {
		t.Helper()
		schema := testenv.UniqueSchema(t, "keyed")
		pool, err := pgdb.Open(t.Context(), testenv.DatabaseURL(t), schema,
			append([]pgdb.Option{pgdb.WithMaxConns(1), pgdb.WithLogger(testenv.Logger(t))}, opts...)...)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(pool.Close)
		if _, err := pool.Exec(t.Context(), `CREATE TABLE items (id text PRIMARY KEY, n int NOT NULL);
			INSERT INTO items SELECT 'i' || g, g FROM generate_series(1, 5000) g;
			CREATE TABLE few (id text PRIMARY KEY, n int NOT NULL);
			INSERT INTO few SELECT 'i' || g, g FROM generate_series(1, 3) g;
			ANALYZE items, few`); err != nil {
			t.Fatal(err)
		}
		for i := range 12 {
			var n int
			if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM items WHERE id = ANY($1)`,
				[]string{"i1", "i" + string(rune('0'+i%3+1))}).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		// MaxConns 1: this is the connection that ran them.
		conn, err := pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if err := conn.QueryRow(t.Context(), `SELECT generic_plans, custom_plans FROM pg_prepared_statements
			WHERE statement = 'SELECT count(*) FROM items WHERE id = ANY($1)'`).Scan(&generic, &custom); err != nil {
			t.Fatalf("the statement's plans: %v", err)
		}
		if _, err := conn.Exec(t.Context(), `PREPARE lookup(text[]) AS SELECT n FROM few WHERE id = ANY($1)`); err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(t.Context(), `EXPLAIN EXECUTE lookup('{i1}')`, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return generic, custom, strings.Join(lines, "\n")
	}

	generic, custom, plan := plans(t, pgdb.WithKeyedPlans())
	if custom != 0 || generic != 12 {
		t.Errorf("keyed pool: %d generic and %d custom plans of 12 calls, want 12 and 0", generic, custom)
	}
	if !strings.Contains(plan, "few_pkey") || !strings.Contains(plan, "$1") {
		t.Errorf("keyed pool: plan is not a generic plan on the index:\n%s", plan)
	}

	// A statement with no index to use still scans, priced at 10^10 by enable_seqscan=off:
	// that price must not set off JIT compilation (150 ms). Checked for the pool, and for a
	// plain pool's transaction started with KeyedPlansSQL.
	plainScan := func(t *testing.T, q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
		QueryRow(context.Context, string, ...any) pgx.Row
	}) {
		t.Helper()
		rows, err := q.Query(t.Context(), `EXPLAIN (ANALYZE, COSTS) SELECT count(*) FROM pg_class WHERE relpages < 0`)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if plan := strings.Join(lines, "\n"); !strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "JIT") {
			t.Errorf("a statement that must scan is not a plain scan:\n%s", plan)
		}
		// Also where the server has no JIT to set off.
		var jit string
		if err := q.QueryRow(t.Context(), `SELECT current_setting('jit')`).Scan(&jit); err != nil || jit != "off" {
			t.Errorf("jit = %q (%v), want off", jit, err)
		}
	}
	keyed, err := pgdb.Open(t.Context(), testenv.DatabaseURL(t), testenv.UniqueSchema(t, "keyed"),
		pgdb.WithKeyedPlans(), pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keyed.Close)
	plainScan(t, keyed)
	tx, err := open(t, testenv.UniqueSchema(t, "plain")).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	if _, err := tx.Exec(t.Context(), pgdb.KeyedPlansSQL); err != nil {
		t.Fatal(err)
	}
	plainScan(t, tx)
	var settings string
	if err := tx.QueryRow(t.Context(), `SELECT current_setting('plan_cache_mode') || ' ' || current_setting('enable_seqscan')`).Scan(&settings); err != nil || settings != "force_generic_plan off" {
		t.Errorf("KeyedPlansSQL: plan_cache_mode and enable_seqscan %q (%v), want force_generic_plan off", settings, err)
	}

	// What the option changes: without it every call is planned anew, on a scan of the table.
	generic, custom, plan = plans(t)
	if custom != 12 || generic != 0 {
		t.Errorf("plain pool: %d generic and %d custom plans of 12 calls, want 0 and 12", generic, custom)
	}
	if !strings.Contains(plan, "Seq Scan") {
		t.Errorf("plain pool: plan does not scan the table:\n%s", plan)
	}
}

// Migrations of a keyed pool's schema plan as Postgres likes: a backfill should scan its table,
// not walk an index.
func TestMigrationsOfAKeyedPoolPlanAsUsual(t *testing.T) {
	schema := testenv.UniqueSchema(t, "keyed")
	pool, err := pgdb.Open(t.Context(), testenv.DatabaseURL(t), schema, pgdb.WithKeyedPlans(), pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	settings := fstest.MapFS{"00002_settings.sql": {Data: []byte(`-- +goose Up
CREATE TABLE settings AS SELECT current_setting('plan_cache_mode') AS plans, current_setting('enable_seqscan') AS seqscan, current_setting('jit') AS jit;
-- +goose Down
DROP TABLE settings;
`)}}
	if err := pgdb.Migrate(t.Context(), pool, schema, settings, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	var plans, seqscan, jit string
	if err := pool.QueryRow(t.Context(), `SELECT plans, seqscan, jit FROM settings`).Scan(&plans, &seqscan, &jit); err != nil {
		t.Fatal(err)
	}
	var wantJIT string // the server's, as a plain pool has it
	if err := open(t, schema).QueryRow(t.Context(), `SELECT current_setting('jit')`).Scan(&wantJIT); err != nil {
		t.Fatal(err)
	}
	if plans != "auto" || seqscan != "on" || jit != wantJIT {
		t.Errorf("migrations ran with plan_cache_mode=%s enable_seqscan=%s jit=%s; want the server's (auto, on, %s)", plans, seqscan, jit, wantJIT)
	}
}

// A connection that stops answering in the middle of a transaction (half open) does not hold
// its caller at release for as long as TCP takes to notice: the rollback gives up, and the
// connection is closed rather than handed to the next caller.
func TestReleaseOfAConnectionThatStoppedAnsweringGivesUp(t *testing.T) {
	defer pgdb.SetRollbackTimeout(200 * time.Millisecond)()
	proxy := newStallingProxy(t, testenv.DatabaseURL(t))
	schema := testenv.UniqueSchema(t, "stall")
	pool, err := pgdb.Open(t.Context(), proxy.url, schema, pgdb.WithMaxConns(1), pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn, release, err := pgdb.Acquire(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	pc := conn.Conn()
	if _, err := conn.Exec(t.Context(), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	proxy.stall()
	released := make(chan struct{})
	began := time.Now()
	go func() { release(); close(released) }()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		proxy.cut() // lets the stuck rollback fail, so the pool can close
		<-released
		t.Fatal("release still waiting for the rollback after 10s")
	}
	t.Logf("released after %s", time.Since(began))
	if !pc.IsClosed() {
		t.Error("the stalled connection is still open; want it closed, not handed to the next caller")
	}
	proxy.cut() // the pool's close need not wait for the stalled connection's goodbyes
}

// stallingProxy forwards TCP to a Postgres server until stall, then swallows every byte both
// ways: a connection that stopped answering, as a half-open one does.
type stallingProxy struct {
	url     string
	stalled atomic.Bool

	lis  net.Listener
	mu   sync.Mutex
	open []net.Conn
}

func newStallingProxy(t *testing.T, databaseURL string) *stallingProxy {
	t.Helper()
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	network, target := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, target = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	p := &stallingProxy{lis: lis}
	u := &url.URL{Scheme: "postgres", User: url.UserPassword(cfg.User, cfg.Password), Host: lis.Addr().String(),
		Path: "/" + cfg.Database, RawQuery: "sslmode=disable"}
	p.url = u.String()
	var conns sync.WaitGroup
	t.Cleanup(func() { p.cut(); conns.Wait() })
	go func() {
		for {
			client, err := lis.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial(network, target)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, client, server)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer dst.Close()
				defer src.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if err != nil {
						return
					}
					if !p.stalled.Load() {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
				}
			}
			conns.Go(func() { pipe(server, client) })
			conns.Go(func() { pipe(client, server) })
		}
	}()
	return p
}

func (p *stallingProxy) stall() { p.stalled.Store(true) }

// cut closes the proxy and every connection through it.
func (p *stallingProxy) cut() {
	p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.Close()
	}
}

// A session of a pool from Open may sit idle in a transaction only IdleInTransactionTimeout,
// unless the database URL says otherwise: a frozen process must not keep its locks for hours.
func TestOpenBoundsIdleTransactions(t *testing.T) {
	show := func(pool *pgxpool.Pool) string {
		var v string
		if err := pool.QueryRow(t.Context(), "SHOW idle_in_transaction_session_timeout").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := show(open(t, testenv.UniqueSchema(t, "idle"))); got != pgdb.IdleInTransactionTimeout {
		t.Fatalf("idle_in_transaction_session_timeout = %q; want %q", got, pgdb.IdleInTransactionTimeout)
	}
	pool, err := pgdb.Open(t.Context(), testenv.DatabaseURLWith(t, "idle_in_transaction_session_timeout", "5min"), testenv.UniqueSchema(t, "idle"), pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := show(pool); got != "5min" {
		t.Fatalf("with the URL's own setting: %q; want 5min", got)
	}
}
