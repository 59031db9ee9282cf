// Package inventory owns stores, per-store stock, holds (reservations) and the stock ledger,
// and answers the store locator ("the nearest open stores that have all of these").
//
// Who calls what: shoppers find stores through the gateway (StoreLocatorService); operators
// manage stores and stock through InventoryAdminService; fulfilment reserves, releases,
// commits and extends holds (the last three for many orders at once through change_holds, see
// holdchanges.go), and cart asks for availability, over NATS request/reply (the Subject*
// variables). Every change is published through the outbox in its transaction.
//
// The rules it keeps, under any concurrency and with any number of copies running:
//   - For every store and SKU, 0 <= reserved <= on_hand, reserved equals the sum of the open
//     holds, and a hold is only placed while on_hand - reserved - safety_stock covers it.
//   - Every change of on hand or reserved is one ledger row (movements) with the levels after
//     it, so the ledger sums to the levels; CheckInvariants verifies all of this.
//   - Every hold ends exactly once: committed, released, or expired by the sweeper.
//
// How reserves scale: concurrent reserve requests are queued in-process per shard of stores
// and each shard's worker decides a whole queue in one transaction (rows locked once, in
// (store, SKU) order; requests decided in arrival order against the locked levels; one commit).
// A hot SKU therefore costs one row lock and one commit per batch, not per order. The
// database constraints stay the last line of defence, so copies side by side remain correct.
//
// Stores are read from an in-memory cache (storecache.go); a store another copy changed is seen
// within milliseconds through the store events and at worst within Config.StoreCacheMaxAge by
// the locator. A reserve does not trust it alone: its locking round trip also compares the
// cache's version of each of its stores with the table's (by primary key) and decides from
// the row when they differ, so a store paused or closed anywhere takes no more holds. Stock
// and holds are always read, locked, in the transaction that changes them, and every write
// whose row count matters is checked by the server before COMMIT (execRows in ledger.go).
package inventory

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/pgdb"
)

// Schema is the Postgres schema inventory owns by default.
const Schema = "inventory"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are inventory's goose migrations, for pgdb.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Config configures inventory. Zero values take the defaults.
type Config struct {
	// Pool connects to inventory's schema (search_path set by pgdb.Open).
	Pool *pgxpool.Pool
	// Logger receives the service's logs.
	Logger *slog.Logger
	// SweepInterval is how often Run releases open holds past their deadline. Default 5s.
	SweepInterval time.Duration
	// SweepBatch is the most holds one sweeper transaction releases. Default 500.
	SweepBatch int
	// ReserveWorkers is how many reserve transactions this process runs at once: stores are
	// spread over that many queues, each drained by one transaction at a time. Default 1.
	// Every commit that writes an event goes through the outbox's NOTIFY, which Postgres
	// serialises across the whole cluster, so a second concurrent reserve transaction mostly
	// waits for the first one's commit and halves the batches: measured on 2 cores, spread
	// orders from 16 callers ran at 3.2–5.1 k holds/s with 1 worker, 1.7 k/s with 2. The price
	// of 1: a batch stuck behind a row another copy holds delays this process's other stores
	// for that long. Raise it with the hardware (and the outbox without NOTIFY).
	ReserveWorkers int
	// MaxReserveBatch is the most reserve requests decided in one transaction. Default 256.
	MaxReserveBatch int
	// DefaultHoldTTL is the deadline of holds whose reserve request names none. Default 30m.
	DefaultHoldTTL time.Duration
	// NATS, when set, carries the store events of every copy of inventory to this one's store
	// cache (see storecache.go), so a store another copy changes is seen here within
	// milliseconds. Without it such a change is seen within StoreCacheMaxAge.
	NATS *nats.Conn
	// StoreCacheMaxAge bounds how stale the store cache may be: it is checked against the
	// table (versions only; changed rows re-read) before any use more than this long after the
	// last check began. A store another copy closed or changed is thus seen as before for at
	// most this long, even when its event is lost. Default 10s.
	StoreCacheMaxAge time.Duration
	// LocalClock is this process's clock (nil: time.Now); tests give a fast or a slow one.
	// Deadlines and occurrence times in requests are judged by the database's clock, read
	// through this one and its measured offset (dbclock): the sweeps that end holds compare
	// with the database's now().
	LocalClock func() time.Time
}

// Limits of the APIs.
const (
	maxHoldTTL        = 7 * 24 * time.Hour
	defaultRadius     = 10_000.0
	maxRadius         = 100_000.0
	maxOrderLines     = 100
	maxLineQuantity   = 999
	maxAvailabilitySK = 200
)

// Service is inventory: its rules, its storage and its APIs.
type Service struct {
	db     *pgxpool.Pool
	schema string // db's (pgdb.PoolSchema)
	log    *slog.Logger
	cfg    Config
	zones  zoneCache
	stores *storeCache
	// clock is the database's, which deadlines in requests are judged by.
	clock *dbclock.Clock
	res   *reserver

	// failDropDelta is a failpoint for tests (set through export_test.go): the stock UPDATE of
	// the next transactions leaves out one row it should change.
	failDropDelta atomic.Bool
	// loseCommitReply, set by tests, fails a change_holds transaction's write round trip after
	// it has committed, as a connection lost during COMMIT does.
	loseCommitReply atomic.Bool
}

// New returns the inventory service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 500
	}
	if cfg.ReserveWorkers <= 0 {
		cfg.ReserveWorkers = 1
	}
	if cfg.MaxReserveBatch <= 0 {
		cfg.MaxReserveBatch = 256
	}
	if cfg.DefaultHoldTTL <= 0 {
		cfg.DefaultHoldTTL = 30 * time.Minute
	}
	if cfg.StoreCacheMaxAge <= 0 {
		cfg.StoreCacheMaxAge = 10 * time.Second
	}
	log := cfg.Logger.With("service", "inventory")
	s := &Service{db: cfg.Pool, schema: pgdb.PoolSchema(cfg.Pool), log: log, cfg: cfg,
		clock: dbclock.New(cfg.LocalClock, log)}
	// Measured before the first request, not only when Run starts; a failure leaves the
	// process's own clock until Run measures again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := s.clock.Measure(ctx, cfg.Pool); err != nil {
		s.log.Debug("the database's clock not measured yet; this process's is used until it is", "err", err)
	}
	cancel()
	s.stores = newStoreCache(cfg.Pool, s.log, &s.zones, cfg.StoreCacheMaxAge)
	if cfg.NATS == nil {
		s.log.Info("store cache without store events (no NATS connection given): store changes made by other copies are seen within StoreCacheMaxAge",
			"max_age", cfg.StoreCacheMaxAge)
	} else if err := s.stores.watch(cfg.NATS); err != nil {
		s.log.Warn("store cache cannot hear store events: store changes made by other copies are seen within StoreCacheMaxAge",
			"max_age", cfg.StoreCacheMaxAge, "err", err)
	}
	s.res = newReserver(s, cfg.ReserveWorkers, cfg.MaxReserveBatch)
	return s
}

// Run does inventory's background work until ctx ends: the sweeper that releases open holds
// past their deadline, and the measurement of the database's clock (every minute). Any number
// of copies may sweep at once; each hold ends once. When ctx
// ends, Run also stops what New started, as Close does.
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	clockDone := make(chan struct{})
	go func() {
		defer close(clockDone)
		s.clock.Run(ctx, s.db)
	}()
	defer func() { <-clockDone }()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if n, err := s.SweepExpiredHolds(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("hold sweep failed; retrying at the next tick", "err", err)
		} else if n > 0 {
			s.log.Info("expired holds released", "holds", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// DBClock is the database's clock as this copy goes by it; its offset is served on /metrics
// (dbclock.Clock.Collector).
func (s *Service) DBClock() *dbclock.Clock { return s.clock }

// Close stops the background work New started: the store cache's subscription to the store
// events, its NATS status listener and any check of the cache nobody waits for, and waits for
// them, so none of it touches the pool or the NATS connection after their owner closes them.
// Run calls it when its ctx ends; a caller that never runs Run calls it when done. The service
// still answers afterwards (its store cache is then kept within StoreCacheMaxAge by the checks
// its callers wait for). Calling it again does nothing.
func (s *Service) Close() {
	s.stores.close()
}
