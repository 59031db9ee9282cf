// Package pgstats keeps the planner statistics of a schema's tables current, as PostgreSQL's
// autoanalyze does, for servers where autovacuum is off and for the first minute of a fresh
// schema, before autovacuum's first round.
//
// Why it matters: the services run the same statements over and over on long-lived
// connections, and Postgres caches one generic plan per statement and connection. A plan made
// while a table holds a few rows and has no statistics can pick an index that is a full scan
// (a cart's update by id through the partial index of open carts, inventory's extension of an
// order's holds through the index of all open holds): cheap then, and it stays cached as the
// table grows, so every call costs more than the last (measured: 50 ms per cart update at
// 70,000 carts, and checkouts/s falling by a third within 40 seconds). Analyzing the table
// invalidates the cached plans, and the next ones are made on real numbers.
package pgstats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes Run. Zero values take the defaults.
type Config struct {
	// Interval is about how often Run looks for tables to analyze (see spread). Default 5s.
	Interval time.Duration
	// Logger gets a warning when the server's autovacuum is off, and a debug line per table
	// analyzed. Default slog.Default().
	Logger *slog.Logger
}

// A table is analyzed once it has grown by more rows than minGrowth + growthShare of the rows
// it had at its last analysis (when it has doubled, say), until its statistics count keepUpTo
// rows. The degenerate plans come from tables believed nearly empty, where a full scan and a
// lookup by key cost about the same; from ten thousand rows on a lookup by key wins by far,
// and growth no longer turns a cached plan bad. Beyond that the statistics are autovacuum's
// business: an analysis reads up to 30,000 rows (about 150 ms of a busy machine's CPU for a
// large table), and analyzing every tenth of growth, as autoanalyze does, showed as latency
// spikes under load.
//
// Growth, not changes: the live rows counted now against those counted at the last analysis.
// Carts and orders are updated four or five times for each row added, and counting changed
// rows analyzed them every few seconds under load (140-250 ms each for 9,000 orders),
// although their size, the one figure that turns cached plans bad, had barely moved.
const (
	minGrowth   = 50
	growthShare = 1.0
	keepUpTo    = 10_000
)

// staleSQL lists the ordinary tables of schema $1 that grew enough since their last analysis
// and were small then (never analyzed: reltuples is -1, taken as 0).
const staleSQL = `
	SELECT c.relname
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_stat_user_tables s ON s.relid = c.oid
	WHERE n.nspname = $1 AND c.relkind = 'r'
	  AND s.n_live_tup - greatest(c.reltuples, 0) > $2 + $3 * greatest(c.reltuples, 0)
	  AND greatest(c.reltuples, 0) < $4
	ORDER BY c.relname`

// Run analyzes, every Interval until ctx ends, the tables of schema that need it (see Once).
// A failed round is logged and the next one tries again.
func Run(ctx context.Context, pool *pgxpool.Pool, schema string, cfg Config) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var autovacuum string
	if err := pool.QueryRow(ctx, `SELECT current_setting('autovacuum')`).Scan(&autovacuum); err == nil && autovacuum != "on" {
		log.Warn("PostgreSQL's autovacuum is off: Handoff keeps its tables' planner statistics itself, but nothing removes dead rows; turn autovacuum on for production", "schema", schema)
	}
	for {
		analyzed, err := Once(ctx, pool, schema)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn("keeping planner statistics failed; trying again", "schema", schema, "err", err)
		case len(analyzed) > 0:
			log.Debug("tables analyzed", "schema", schema, "tables", analyzed)
		}
		t := time.NewTimer(spread(cfg.Interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// spread is a wait of about interval: between half and one and a half of it, at random.
// Services started together (the one-process mode starts five) would otherwise look at their
// tables at the same moments, and tables that grow together would be analyzed together.
func spread(interval time.Duration) time.Duration {
	return interval/2 + rand.N(interval)
}

// analyzing lets one ANALYZE run at a time in this process. An analysis takes a core for up to
// a tenth of a second; five services analyzing at once held up every request on a 2-core
// machine (checkout p99 from 70 to 117 ms in the run that showed it).
var analyzing sync.Mutex

// Once analyzes the tables of schema that have grown since their last analysis by more than 50
// rows and as many as they had then, while that was under 10,000 rows, one at a time in the
// process, and returns their names. The counts come from the
// server's cumulative statistics, which trail the writes by up to a second.
func Once(ctx context.Context, pool *pgxpool.Pool, schema string) ([]string, error) {
	rows, err := pool.Query(ctx, staleSQL, schema, minGrowth, growthShare, keepUpTo)
	if err != nil {
		return nil, fmt.Errorf("find tables to analyze in %s: %w", schema, err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find tables to analyze in %s: %w", schema, err)
	}
	var errs []error
	analyzed := stale[:0]
	for _, table := range stale {
		analyzing.Lock()
		_, err := pool.Exec(ctx, "ANALYZE "+pgx.Identifier{schema, table}.Sanitize())
		analyzing.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("analyze %s.%s: %w", schema, table, err))
			continue
		}
		analyzed = append(analyzed, table)
	}
	return analyzed, errors.Join(errs...)
}
