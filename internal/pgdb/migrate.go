package pgdb

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// SharedVersion is the migration version that creates the tables every
// service schema has; a service's own migrations start at 2.
const SharedVersion = 1

// Shared migrations after the first are numbered from sharedLaterFrom, above any service's own
// numbers, so adding one never takes a number a service has used. Every schema runs them; a
// service's migrations numbered below them and added later run after them, as goose's
// out-of-order migrations (WithAllowOutofOrder).
const (
	sharedLaterFrom = 1_000_000_000
	// SharedTraceVersion adds the outbox's trace_parent column.
	SharedTraceVersion = sharedLaterFrom + 1
	// SharedPruneIndexVersion indexes processed event ids by age.
	SharedPruneIndexVersion = sharedLaterFrom + 2
)

// sharedTraceColumn is shared migration SharedTraceVersion: each event keeps the W3C
// traceparent of the traced work that wrote it (NULL: untraced), which the relay sends as the
// message's header, so the event's consumers continue that work's trace. Nullable and without
// a default, the column is added without rewriting the table, under a moment's lock.
const sharedTraceColumn = `ALTER TABLE %[1]s.outbox ADD COLUMN trace_parent text;`

// sharedPruneIndex is shared migration SharedPruneIndexVersion, its statements one by one: a
// consumer's processed event ids by age, which the inbox's hourly prune deletes from the oldest.
// Without it each prune batch walked the consumer's primary key, event ids in no order of age,
// past every id still kept: 10 s of the database's time an hour at 10,000 ids an hour, growing
// with the square of the rate. Built CONCURRENTLY, outside a transaction, since every event a
// consumer handles writes a row, which a plain build would hold back while it read the table;
// an invalid index a build cut short left behind is dropped first (fulfilment's 00023 says
// more).
var sharedPruneIndex = []string{
	`SET lock_timeout = 0`,
	`DROP INDEX CONCURRENTLY IF EXISTS %[1]s.processed_events_by_age`,
	`CREATE INDEX CONCURRENTLY processed_events_by_age ON %[1]s.processed_events (consumer, processed_at)`,
	`RESET lock_timeout`,
}

// versionTable is goose's bookkeeping table, kept inside each schema so
// services sharing a database never see each other's versions.
const versionTable = "goose_db_version"

// sharedTables is version 1 of every service schema.
const sharedTables = `
-- Transactional outbox: rows are written in the same transaction as the
-- state change, relayed to JetStream (Nats-Msg-Id = event_id), then deleted.
CREATE TABLE %[1]s.outbox (
  seq         bigserial   PRIMARY KEY,
  event_id    uuid        NOT NULL UNIQUE,
  subject     text        NOT NULL,
  event_type  text        NOT NULL,   -- protobuf full name of payload
  payload     bytea       NOT NULL,
  occurred_at timestamptz NOT NULL DEFAULT now()
);
-- Idempotent consumers: an event's id is recorded in the same transaction as
-- its effect, so a redelivery changes nothing.
CREATE TABLE %[1]s.processed_events (
  consumer     text        NOT NULL,
  event_id     text        NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
`

// Migrate brings schema up to date: first the shared tables (version 1),
// then the service's goose SQL migrations in fsys (files like
// 00002_stores.sql with -- +goose Up / -- +goose Down; fsys may be nil). It
// holds a Postgres advisory lock for the schema while it works, so copies of
// a service starting together apply each migration once. The schema is
// created if missing; pool's search_path should name it (see Open), as the
// service's SQL is unqualified.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := ValidSchema(schema); err != nil {
		return fmt.Errorf("pgdb: migrate: %w", err)
	}
	if err := checkReservedVersion(fsys); err != nil {
		return fmt.Errorf("pgdb: migrate %s: %w", schema, err)
	}
	if err := ensureSchema(ctx, pool, schema); err != nil {
		return fmt.Errorf("pgdb: migrate %s: %w", schema, err)
	}

	// A pool of our own: the advisory lock pins one connection for the whole
	// run and migrations need another, which a caller's pool of one (or a
	// busy one) could never give. Two at most, so every statement of every
	// migration runs on that one other connection, and a migration may SET
	// something for its later statements (and RESET it).
	cfg := pool.Config()
	cfg.MinConns, cfg.MaxConns = 0, 2
	// Migrations plan as Postgres likes: a backfill should scan a table, not walk an index.
	for k := range keyedPlanParams {
		delete(cfg.ConnConfig.RuntimeParams, k)
	}
	if _, set := cfg.ConnConfig.RuntimeParams["lock_timeout"]; !set {
		cfg.ConnConfig.RuntimeParams["lock_timeout"] = MigrationLockTimeout
	}
	migratePool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgdb: migrate %s: connect: %w", schema, err)
	}
	defer migratePool.Close()
	// Service migrations are unqualified SQL: run them only where they land
	// in schema.
	var current *string
	if err := migratePool.QueryRow(ctx, "SELECT current_schema()").Scan(&current); err != nil {
		return fmt.Errorf("pgdb: migrate %s: %w", schema, err)
	}
	if current == nil || *current != schema {
		return fmt.Errorf("pgdb: migrate %s: the pool's search_path does not lead to schema %s (open the pool with pgdb.Open)", schema, schema)
	}
	db := stdlib.OpenDBFromPool(migratePool)
	defer db.Close()

	provider, err := newProvider(db, schema, fsys, logger)
	if err != nil {
		return fmt.Errorf("pgdb: migrate %s: %w", schema, err)
	}
	applied := 0
	for attempt := 1; ; attempt++ {
		results, err := provider.Up(ctx)
		for _, r := range results {
			if r.Error == nil {
				applied++
				logger.Info("migration applied", "schema", schema, "version", r.Source.Version,
					"source", migrationName(r.Source), "duration", r.Duration)
			}
		}
		if err == nil {
			break
		}
		if !hasCode(err, "55P03") || attempt == lockRetries { // lock_not_available
			return fmt.Errorf("pgdb: migrate %s: %w", schema, err)
		}
		// The migration gave up its locks (rolled back); the service's work goes on while it
		// waits to try again.
		wait := min(time.Second<<(attempt-1), 30*time.Second)
		logger.Warn("migration waited too long for a lock and will try again; a long transaction using its table is in the way",
			"schema", schema, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("pgdb: migrate %s: %w", schema, ctx.Err())
		}
	}
	if applied == 0 {
		logger.Debug("schema up to date", "schema", schema)
	}
	return nil
}

// MigrationLockTimeout bounds each lock a migration waits for, unless the pool's connections
// set lock_timeout themselves. A migration altering a table queues behind every transaction
// reading it, and while it queues every later reader and writer of the table (and of tables
// it already altered) queues behind it: without a bound, one long report would stop
// reservations for as long as it ran. With one, the migration gives its locks up, waits, and
// tries again (up to lockRetries times, about 10 minutes).
const MigrationLockTimeout = "2s"

const lockRetries = 25

func newProvider(db *sql.DB, schema string, fsys fs.FS, logger *slog.Logger) (*goose.Provider, error) {
	// The lock id is per schema: services sharing a database migrate in
	// parallel, copies of one service take turns. Polled every second, for
	// up to 5 minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID(schema)), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("advisory lock: %w", err)
	}
	store, err := newSchemaStore(schema)
	if err != nil {
		return nil, err
	}
	shared := goose.NewGoMigration(SharedVersion,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, fmt.Sprintf(sharedTables, pgx.Identifier{schema}.Sanitize()))
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			q := pgx.Identifier{schema}.Sanitize()
			_, err := tx.ExecContext(ctx, fmt.Sprintf("DROP TABLE %[1]s.processed_events; DROP TABLE %[1]s.outbox", q))
			return err
		}},
	)
	trace := goose.NewGoMigration(SharedTraceVersion,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, fmt.Sprintf(sharedTraceColumn, pgx.Identifier{schema}.Sanitize()))
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s.outbox DROP COLUMN trace_parent", pgx.Identifier{schema}.Sanitize()))
			return err
		}},
	)
	pruneIndex := goose.NewGoMigration(SharedPruneIndexVersion,
		&goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error {
			return execOnOneConn(ctx, db, schema, sharedPruneIndex)
		}},
		&goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error {
			return execOnOneConn(ctx, db, schema, []string{`DROP INDEX CONCURRENTLY IF EXISTS %[1]s.processed_events_by_age`})
		}},
	)
	provider, err := goose.NewProvider(goose.DialectCustom, db, fsys,
		goose.WithStore(store),
		goose.WithSessionLocker(locker),
		goose.WithGoMigrations(shared, trace, pruneIndex),
		// Only our own migrations, never ones another package registered globally.
		goose.WithDisableGlobalRegistry(true),
		// A service may number its migrations in ranges, one per package (fulfilment: its
		// orders 2-19, notify 20 and up), so a new one can land below one already applied.
		goose.WithAllowOutofOrder(true),
		goose.WithSlog(logger),
	)
	if err != nil {
		return nil, fmt.Errorf("goose: %w", err)
	}
	return provider, nil
}

// execOnOneConn runs statements (%[1]s in them the schema) one by one on one connection, so a
// SET applies to those after it, each outside a transaction.
func execOnOneConn(ctx context.Context, db *sql.DB, schema string, statements []string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := pgx.Identifier{schema}.Sanitize()
	for _, st := range statements {
		if strings.Contains(st, "%[1]s") {
			st = fmt.Sprintf(st, q)
		}
		if _, err := conn.ExecContext(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// lockID derives the advisory lock key from the schema name.
func lockID(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("handoff/pgdb.Migrate:" + schema))
	return int64(h.Sum64())
}

// checkReservedVersion rejects a service migration numbered 1 with a clear
// message rather than goose's generic duplicate-version error.
func checkReservedVersion(fsys fs.FS) error {
	if fsys == nil {
		return nil
	}
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	for _, f := range files {
		if v, err := goose.NumericComponent(f); err == nil && (v == SharedVersion || v >= sharedLaterFrom) {
			return fmt.Errorf("migration %s uses version %d, reserved for the shared migrations (version %d and from %d); number service migrations from 2", f, v, SharedVersion, sharedLaterFrom)
		}
	}
	return nil
}

func migrationName(s *goose.Source) string {
	switch {
	case s.Path == "" && s.Version == SharedTraceVersion:
		return "shared: the outbox's trace_parent"
	case s.Path == "" && s.Version == SharedPruneIndexVersion:
		return "shared: processed_events_by_age"
	case s.Path == "":
		return "shared tables (outbox, processed_events)"
	}
	return path.Base(s.Path)
}

// schemaStore is goose's Postgres store with its version table inside the
// service schema. goose's own table-exists check does not handle quoted
// identifiers, hence the override.
type schemaStore struct {
	database.Store
	schema string
}

func newSchemaStore(schema string) (*schemaStore, error) {
	s, err := database.NewStore(database.DialectPostgres, pgx.Identifier{schema, versionTable}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("goose store: %w", err)
	}
	return &schemaStore{Store: s, schema: schema}, nil
}

var _ database.StoreExtender = (*schemaStore)(nil)

func (s *schemaStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	var exists bool
	err := db.QueryRowContext(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
		s.schema, versionTable).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("look up %s.%s: %w", s.schema, versionTable, err)
	}
	return exists, nil
}
