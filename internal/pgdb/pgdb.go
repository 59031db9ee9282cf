// Package pgdb owns how a service reaches its Postgres schema: Open gives a
// pool whose sessions see only that schema, Migrate brings the schema up to
// date (the tables every service has, then the service's own migrations),
// and a few helpers classify Postgres errors.
//
// Every service owns one schema (named after the service unless configured)
// and may be given its own database URL, so a deployment can split services
// into separate databases without touching their SQL.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Option adjusts Open.
type Option func(*options)

type options struct {
	maxConns        int32
	defaultMaxConns int32
	appName         string
	logger          *slog.Logger
	keyedPlans      bool
}

// WithMaxConns caps the pool's connections, whatever the URL says (without it or
// WithDefaultMaxConns: the URL's pool_max_conns, else pgxpool's max(4, CPUs)).
func WithMaxConns(n int32) Option { return func(o *options) { o.maxConns = n } }

// WithDefaultMaxConns caps the pool's connections at n unless the URL sets pool_max_conns: an
// operator's setting in the URL is not overridden by a default it never asked for.
func WithDefaultMaxConns(n int32) Option { return func(o *options) { o.defaultMaxConns = n } }

// WithAppName sets application_name, so pg_stat_activity shows who is who.
func WithAppName(name string) Option { return func(o *options) { o.appName = name } }

// WithKeyedPlans is for a service whose statements find their rows by key, through an index
// (all that run per request; a janitor's or an admin listing's may scan): each connection then
// plans a statement once, when it first runs it, instead of on every call. Postgres otherwise
// keeps re-planning statements with array parameters (= ANY($1), unnest($1)), because it
// estimates the plan for the arrays at hand cheaper than one for any array; under load that
// planning cost as much as running them (cart's batched UPDATEs: 0.3 ms of planning a call).
// enable_seqscan=off keeps that one plan on the indexes even when it is made while a table is
// nearly empty (a fresh system), where a scan of the whole table is cheaper and would then go on
// being used as the table grows; a statement with no index to use still scans, and because
// enable_seqscan=off prices such a plan at 10^10, JIT compilation is turned off, which that
// price would otherwise set off for it (150 ms for a janitor's DELETE of nothing). Statements
// whose best plan depends on their arrays' contents (two arrays against a two-column key, say)
// do not belong in such a pool: a service that has some runs KeyedPlansSQL at the start of the
// transactions that want these settings instead.
func WithKeyedPlans() Option { return func(o *options) { o.keyedPlans = true } }

// keyedPlanParams are the settings of WithKeyedPlans.
var keyedPlanParams = map[string]string{"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off", "jit": "off"}

// KeyedPlansSQL gives the current transaction the settings of WithKeyedPlans. A connection
// caches one generic plan per statement, whichever transaction made it, so every transaction
// that runs such a statement must start with it.
var KeyedPlansSQL = func() string {
	var sets []string
	for _, k := range slices.Sorted(maps.Keys(keyedPlanParams)) {
		sets = append(sets, fmt.Sprintf("set_config('%s', '%s', true)", k, keyedPlanParams[k]))
	}
	return "SELECT " + strings.Join(sets, ", ")
}()

// WithLogger sets where Open logs.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// IdleInTransactionTimeout is how long Postgres lets a session of a pool from Open sit idle
// inside a transaction before it ends the session (idle_in_transaction_session_timeout), unless
// the database URL sets its own. A process frozen or cut off mid-transaction (SIGSTOP, a paused
// VM, a partition: its connection stays open, and TCP takes hours to give up) otherwise keeps
// its locks: the outbox relay's advisory lock, with which no other copy relays a single event,
// or an inbox row another copy's redelivery waits on. No Handoff transaction waits on its
// client anywhere near this long: the longest, a relay round, waits at most its AckTimeout
// (10 s) for JetStream, all its waits together.
const IdleInTransactionTimeout = "30s"

// schemaName is what Handoff accepts as a schema: a plain lower-case
// identifier, so it means the same quoted or not, and not pg_* (reserved).
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidSchema reports whether name can be a service schema.
func ValidSchema(name string) error {
	if !schemaName.MatchString(name) || strings.HasPrefix(name, "pg_") {
		return fmt.Errorf("schema name %q: want lower-case letters, digits and _, at most 63, not starting with a digit or pg_", name)
	}
	return nil
}

// SchemaKey names, in each connection's pgconn.PgConn.CustomData of a pool from Open, the
// schema its search_path leads to: code handed only a transaction (the outbox's writers) can
// tell which service's tables it writes without asking the server.
const SchemaKey = "handoff.schema"

// SchemaOf is the schema of the pool c came from (see SchemaKey), or "" for a connection not
// made by Open (or none: a writer that only queues its statements has no connection).
func SchemaOf(c *pgx.Conn) string {
	if c == nil || c.PgConn() == nil {
		return ""
	}
	s, _ := c.PgConn().CustomData()[SchemaKey].(string)
	return s
}

// PoolSchema is the schema of a pool from Open (the search_path it gives every connection),
// or "" for another pool.
func PoolSchema(p *pgxpool.Pool) string {
	s := strings.Trim(p.Config().ConnConfig.RuntimeParams["search_path"], `"`)
	if ValidSchema(s) != nil {
		return ""
	}
	return s
}

// setsMaxConns reports whether a database URL or connection string sets pool_max_conns: the
// settings pgx parses out of it (decoded, a service file's included) name it. Text that only
// looks like it, inside a password or another setting's value, does not count.
func setsMaxConns(url string) bool {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return false // Open refuses the URL anyway
	}
	_, set := cfg.RuntimeParams["pool_max_conns"]
	return set
}

// ConnConfig parses a database URL for a connection of its own, outside any pool: pgxpool's
// settings in it (pool_max_conns and the like) are left out, which pgx.ParseConfig would send
// to the server as parameters, and the server refuses the connection for them.
func ConnConfig(url string) (*pgx.ConnConfig, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	return cfg.ConnConfig, nil
}

// Open connects to url and returns a pool whose every connection has
// search_path set to schema, so service SQL names its tables unqualified. It
// creates the schema when missing and fails if the server cannot be reached.
func Open(ctx context.Context, url, schema string, opts ...Option) (*pgxpool.Pool, error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if err := ValidSchema(schema); err != nil {
		return nil, fmt.Errorf("pgdb: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may contain the password; say only what is wrong.
		return nil, errors.New("pgdb: parse database URL: invalid URL or connection string")
	}
	// A startup parameter, not a SET: it survives DISCARD ALL / RESET and is
	// in place before any statement runs.
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	if o.keyedPlans {
		maps.Copy(cfg.ConnConfig.RuntimeParams, keyedPlanParams)
	}
	if o.appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = o.appName
	}
	if _, set := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = IdleInTransactionTimeout
	}
	switch {
	case o.maxConns > 0:
		cfg.MaxConns = o.maxConns
	case o.defaultMaxConns > 0 && !setsMaxConns(url):
		cfg.MaxConns = o.defaultMaxConns
	}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		c.PgConn().CustomData()[SchemaKey] = schema
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgdb: create pool for %s: %w", describe(cfg), err)
	}
	if err := ensureSchema(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgdb: open %s: %w", describe(cfg), err)
	}
	o.logger.Debug("postgres pool open", "server", describe(cfg), "schema", schema, "max_conns", cfg.MaxConns)
	return pool, nil
}

// ensureSchema creates schema unless it exists. Checking first lets a role
// without CREATE on the database use a schema made for it by an admin.
func ensureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	var exists bool
	if err := pool.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema %s: %w", schema, err)
	}
	if exists {
		return nil
	}
	_, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
	// Two processes creating it at once: IF NOT EXISTS does not cover the
	// race, the loser gets a unique violation on pg_namespace.
	if err != nil && !IsUniqueViolation(err) && !hasCode(err, "42P06") {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}

// describe names the server and database without credentials, for logs and errors.
func describe(cfg *pgxpool.Config) string {
	return fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
}

// IsUniqueViolation reports a unique or primary key violation (23505), such
// as a second order for the same idempotency key.
func IsUniqueViolation(err error) bool { return hasCode(err, "23505") }

// IsSerializationFailure reports a SERIALIZABLE / REPEATABLE READ conflict
// (40001): the transaction did nothing and may be retried as a whole.
func IsSerializationFailure(err error) bool { return hasCode(err, "40001") }

// LostRace reports a transaction Postgres aborted to settle a conflict with another, a
// serialization failure (40001) or a deadlock (40P01): it did nothing and may simply run again.
func LostRace(err error) bool { return hasCode(err, "40001") || hasCode(err, "40P01") }

func hasCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// Acquire takes a connection of pool for a transaction its caller drives with its own BEGIN
// and COMMIT statements, pipelined in batches with the reads and writes (two round trips for
// a whole transaction instead of one per statement). release gives the connection back, first
// rolling back a transaction left open by a refusal or a failure half-way: pgxpool would close
// a connection returned inside a transaction.
func Acquire(ctx context.Context, pool *pgxpool.Pool) (conn *pgxpool.Conn, release func(), err error) {
	conn, err = pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			// Bounded: on a connection that stopped answering (half open) the rollback would
			// otherwise wait for TCP to give up, minutes, holding up whatever queues behind the
			// caller. A rollback that times out closes the connection, and the pool drops it.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
		conn.Release()
	}, nil
}

// rollbackTimeout bounds the rollback of a transaction left open at release (see Acquire).
var rollbackTimeout = 5 * time.Second

// XactIDSQL reads the current transaction's id, for [Committed]: queue it in the transaction
// before its writes.
const XactIDSQL = `SELECT pg_current_xact_id()::text`

// Committed reports whether the transaction xid (read with XactIDSQL) committed although the
// round trip that ended it failed with err. An error Postgres answered means it did not, as
// does one pgconn says nothing was sent for; anything else (the connection lost, the deadline
// passed during COMMIT) may hide a commit, which Postgres is asked about on another connection
// of db, for up to timeout (ctx's cancellation aside: the caller's work is done or not
// whether it still waits). Doing the work again as if it had not committed would find it
// done. The outcome, when one is found, and a failure to ask (false) go to log.
func Committed(ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, xid string, err error, timeout time.Duration, log *slog.Logger) bool {
	if _, answered := errors.AsType[*pgconn.PgError](err); answered || xid == "" || pgconn.SafeToRetry(err) {
		return false // Postgres refused it, or nothing of it was sent
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	for {
		var st *string
		if qerr := db.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&st); qerr != nil {
			log.Warn("pgdb: the outcome of a transaction whose end was not answered is unknown; taken as not committed", "xid", xid, "err", err, "status_err", qerr)
			return false
		}
		switch {
		case st != nil && *st == "committed":
			log.Info("pgdb: a transaction committed though the answer to its end was lost", "xid", xid, "err", err)
			return true
		case st == nil || *st != "in progress":
			return false
		}
		// The server has not finished with it yet (the connection broke mid-COMMIT).
		select {
		case <-ctx.Done():
			log.Warn("pgdb: a transaction whose end was not answered is still in progress; taken as not committed", "xid", xid, "err", err)
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}
