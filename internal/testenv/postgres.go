// Package testenv owns the real infrastructure Handoff's tests run against —
// PostgreSQL and NATS, never mocks of either — and small helpers for tests
// of concurrent code.
//
// Postgres: each test binary (package) gets its own fresh database, so
// packages run in parallel safely; a test asks for a pool on a schema of its
// own. The server is, in order: HANDOFF_TEST_DATABASE_URL (a server URL; the
// database is created on it), the machine's server at 127.0.0.1:5432 (user
// postgres, trust) if it answers within a second, else a private ephemeral
// cluster started from the machine's PostgreSQL binaries for this binary
// alone. HANDOFF_TEST_PRIVATE_POSTGRES=1 skips straight to the last.
// Packages that use Postgres call Main from their TestMain so the database
// is dropped and the private cluster stopped at the end.
//
// NATS: an in-process server with JetStream per call, on a free port.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/pgcluster"
	"github.com/handoff-dev/handoff/internal/pgdb"
)

const (
	// EnvDatabaseURL names a Postgres server for tests, e.g.
	// postgres://postgres@db:5432/postgres; testenv creates its databases there.
	EnvDatabaseURL = "HANDOFF_TEST_DATABASE_URL"
	// EnvPrivatePostgres=1 makes tests use a private cluster even when a
	// server is running (hermetic CI, or proving a fresh machine works).
	EnvPrivatePostgres = "HANDOFF_TEST_PRIVATE_POSTGRES"

	localServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	dbPrefix       = "handoff_test_"
	// staleAfter is when a test database or private cluster dir left by a
	// killed run may be removed: no test binary runs that long.
	staleAfter = time.Hour
)

const noPostgres = "no PostgreSQL for tests: set " + EnvDatabaseURL + " to a server URL, " +
	"run a server on 127.0.0.1:5432 (user postgres, trust auth), or install the PostgreSQL " +
	"server binaries so a private one can be started (Debian/Ubuntu: apt-get install postgresql)"

// pg is this test binary's Postgres, set up on first use.
var pg struct {
	mu         sync.Mutex
	ready      bool
	err        error
	serverURL  string // where this binary's database is created and dropped
	dbURL      string
	dbName     string
	cluster    *pgcluster.Cluster
	clusterDir string
}

// Main runs the tests, then drops this binary's database and stops what
// testenv started, and exits with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
	}
	os.Exit(code)
}

// DatabaseURL returns the URL of this test binary's own database, creating
// it (and finding or starting a server) on first call.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if !pg.ready {
		pg.err = setUp()
		pg.ready = true
	}
	if pg.err != nil {
		t.Fatal(pg.err)
	}
	return pg.dbURL
}

// DatabaseURLWith is DatabaseURL with one more connection setting (a Postgres setting such as
// idle_in_transaction_session_timeout, sent when each session starts).
func DatabaseURLWith(t testing.TB, key, value string) string {
	t.Helper()
	u, err := url.Parse(DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// Pool returns a pool on this binary's database whose search_path is schema,
// with the shared tables and migrations applied (migrations may be nil).
// schema == "" means a fresh unique schema. opts are the service's own (its PoolOptions), so
// tests plan as production does. The pool closes when t ends.
func Pool(t testing.TB, schema string, migrations fs.FS, opts ...pgdb.Option) *pgxpool.Pool {
	t.Helper()
	return PoolOn(t, DatabaseURL(t), schema, migrations, opts...)
}

// PoolOn is Pool on the database at url (FreshDatabaseURL's, say).
func PoolOn(t testing.TB, url, schema string, migrations fs.FS, opts ...pgdb.Option) *pgxpool.Pool {
	t.Helper()
	if schema == "" {
		schema = UniqueSchema(t, "test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := Logger(t)
	pool, err := pgdb.Open(ctx, url, schema, append([]pgdb.Option{pgdb.WithAppName(appName(t)), pgdb.WithLogger(logger)}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pgdb.Migrate(ctx, pool, schema, migrations, logger); err != nil {
		t.Fatalf("testenv: migrate: %v", err)
	}
	return pool
}

// MigrationsUpTo is migrations' SQL files up to and including version (the file name's first
// five characters, "00004"): a schema as an older build left it, for tests of an upgrade.
func MigrationsUpTo(t testing.TB, migrations fs.FS, version string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if len(e.Name()) >= 5 && e.Name()[:5] <= version {
			b, err := fs.ReadFile(migrations, e.Name())
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// UniqueSchema returns a schema name no other test uses: prefix (made a
// valid identifier) and a random suffix.
func UniqueSchema(t testing.TB, prefix string) string {
	t.Helper()
	prefix = notIdent.ReplaceAllString(strings.ToLower(prefix), "_")
	if prefix == "" || (prefix[0] >= '0' && prefix[0] <= '9') || strings.HasPrefix(prefix, "pg_") {
		prefix = "s_" + prefix
	}
	return truncate(prefix, 40) + "_" + randomHex(4)
}

// Logger returns a logger that writes into t's output (shown on failure
// or with -v). Do not log through it after t has finished.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func setUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	serverURL, err := findServer(ctx)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("testenv: connect to test server: %w", err)
	}
	defer conn.Close(context.Background())
	if pg.cluster == nil {
		dropStaleDatabases(ctx, conn)
	}

	name := dbPrefix + truncate(packageName(), 24) + "_" + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomHex(3)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("testenv: create test database %s: %w", name, err)
	}
	u, _ := url.Parse(serverURL) // parsed already in findServer
	u.Path = "/" + name
	pg.serverURL, pg.dbName, pg.dbURL = serverURL, name, u.String()
	return nil
}

// findServer returns the URL of a server to create the test database on.
func findServer(ctx context.Context) (string, error) {
	if env := os.Getenv(EnvDatabaseURL); env != "" {
		u, err := url.Parse(env)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return "", fmt.Errorf("testenv: %s must be a postgres:// URL", EnvDatabaseURL)
		}
		// Asked for this server: fail rather than quietly test elsewhere.
		if err := ping(ctx, env, 5*time.Second); err != nil {
			return "", fmt.Errorf("testenv: %s is set but its server does not answer: %w", EnvDatabaseURL, err)
		}
		return env, nil
	}
	if os.Getenv(EnvPrivatePostgres) == "" {
		if err := ping(ctx, localServerURL, time.Second); err == nil {
			return localServerURL, nil
		}
	}
	return startPrivateCluster(ctx)
}

func startPrivateCluster(ctx context.Context) (string, error) {
	if _, err := pgcluster.BinDir(); err != nil {
		return "", errors.New("testenv: " + noPostgres)
	}
	removeStaleClusterDirs()
	dir, err := os.MkdirTemp("", "handoff-testpg-")
	if err != nil {
		return "", fmt.Errorf("testenv: private cluster dir: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: dir, Ephemeral: true, Logger: logger})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("testenv: %s; starting a private cluster failed: %w", noPostgres, err)
	}
	pg.cluster, pg.clusterDir = c, dir
	return c.URL("postgres"), nil
}

func ping(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func teardown() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	var errs []error
	if pg.cluster != nil {
		// The whole cluster goes; no need to drop the database first.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.cluster.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop private cluster: %w", err))
		}
		if err := os.RemoveAll(pg.clusterDir); err != nil {
			errs = append(errs, fmt.Errorf("remove private cluster: %w", err))
		}
		pg.cluster = nil
	} else if pg.dbName != "" {
		if err := dropDatabase(pg.serverURL, pg.dbName); err != nil {
			errs = append(errs, err)
		}
	}
	pg.dbName, pg.ready = "", false
	return errors.Join(errs...)
}

func dropDatabase(serverURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	// FORCE (PostgreSQL 13+) ends sessions a test forgot to close.
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	return nil
}

// dropStaleDatabases removes test databases of killed runs; the creation
// time is in the name. Best effort: another binary may be doing the same.
func dropStaleDatabases(ctx context.Context, conn *pgx.Conn) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'handoff\_test\_%'`)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		parts := strings.Split(name, "_")
		if len(parts) < 2 {
			continue
		}
		created, err := strconv.ParseInt(parts[len(parts)-2], 10, 64)
		if err != nil || time.Since(time.Unix(created, 0)) < staleAfter {
			continue
		}
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

// removeStaleClusterDirs removes private clusters of killed test binaries
// (their server died with them, see pgcluster) once they are old enough.
func removeStaleClusterDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "handoff-testpg-*"))
	for _, dir := range dirs {
		info, err := os.Stat(dir)
		if err != nil || time.Since(info.ModTime()) < staleAfter {
			continue
		}
		if serverRunning(dir) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// serverRunning reports whether the postmaster recorded in dir may still be
// alive; where that cannot be told (no /proc), it says yes.
func serverRunning(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "pgdata", "postmaster.pid"))
	if err != nil {
		return false
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		return true
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return false
	}
	_, err = os.Stat("/proc/" + strconv.Itoa(pid))
	return !errors.Is(err, fs.ErrNotExist)
}

// packageName is the test binary's package, from its name (pgdb.test).
func packageName() string {
	base := filepath.Base(os.Args[0])
	base = strings.TrimSuffix(strings.TrimSuffix(base, ".exe"), ".test")
	if name := notIdent.ReplaceAllString(strings.ToLower(base), "_"); name != "" {
		return name
	}
	return "pkg"
}

func appName(t testing.TB) string {
	return truncate(t.Name(), 63)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreshDatabaseURL creates one more database on this binary's server, for a test that needs
// fixed schema names to itself (a whole Handoff stack) or settings of its own (with: the
// options of CREATE DATABASE, such as a locale), and drops it when t ends. Its URL caps each
// pool opened on it at TestPoolConns (pool_max_conns), which a pool's explicit cap overrides.
// t holds one of SystemSlots meanwhile, waiting for one if need be.
func FreshDatabaseURL(t testing.TB, with ...string) string {
	t.Helper()
	DatabaseURL(t) // finds or starts the server
	pg.mu.Lock()
	serverURL := pg.serverURL
	pg.mu.Unlock()
	takeSystemSlot(t, serverURL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("testenv: connect to test server: %v", err)
	}
	defer conn.Close(context.Background())
	name := dbPrefix + truncate(packageName(), 20) + "_" + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomHex(4)
	if _, err := conn.Exec(ctx, strings.Join(append([]string{"CREATE DATABASE", pgx.Identifier{name}.Sanitize()}, with...), " ")); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(serverURL, name); err != nil {
			t.Logf("testenv: %v", err)
		}
	})
	u, _ := url.Parse(serverURL)
	u.Path = "/" + name
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(TestPoolConns))
	u.RawQuery = q.Encode()
	return u.String()
}

// Connect opens a connection of its own to the database at url (FreshDatabaseURL's: its pool
// setting is left out, which the server would refuse) and closes it when t ends.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgdb.ConnConfig(url)
	if err != nil {
		t.Fatalf("testenv: parse database URL: %v", err)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// TestPoolConns caps the pools of a database from FreshDatabaseURL. A whole Handoff there has
// five pools, each up to 16 connections by default; several test packages' systems at once
// (make test runs packages side by side) then passed a stock PostgreSQL's 100 connections
// ("too many clients already"). Tests do not need a production pool's width.
const TestPoolConns = 4
