// Package cart owns shoppers' carts: their lines, the chosen pickup store, and checkout.
//
// Shoppers reach it through the gateway (CartService); the caller is the customer of the
// verified token (see caller.go) and a cart is only ever visible to its own customer: another
// customer's cart reads as NotFound, exactly like one that does not exist.
//
// Lines are validated and priced by the catalog over NATS (catalog.SubjectBatchGetVariants),
// and the pickup store is checked and named by inventory; both answers are kept in memory for
// a few seconds (Config.CacheTTL) and dropped as soon as the catalog's product events or
// inventory's store events say they changed (ownerevents.go), so a cart shows today's prices
// without asking on every call. Availability at the chosen store is asked live whenever it is
// shown, and degrades to "unknown" when inventory does not answer. Checkout hands the priced
// lines to fulfilment (handoff.rpc.fulfilment.place_order), which is idempotent by (customer,
// idempotency key); the cart is marked checked out only once an order exists.
//
// Storage and concurrency: a cart is one row, its lines a JSON array in it. Every change reads
// the row, applies the change in Go and writes it back with one conditional UPDATE that only
// matches the version it read, an open cart and no running checkout lease, bumping the version
// (carts.go). So a refused or lost change leaves the cart exactly as it was, a caller's
// expected_version gives optimistic concurrency between a shopper's devices, and a change
// without one is simply tried again on the newer cart. While a checkout is placing the order the
// cart is frozen by a short lease: other changes are refused with Aborted, so the order always
// has the lines the shopper checked out.
package cart

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/pgdb"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Schema is the Postgres schema the cart owns by default.
const Schema = "cart"

// PoolOptions are the options of the cart's Postgres pool: the cart's statements find their
// carts by id or customer (the abandoned-cart sweep through its index), so each is planned once
// per connection (pgdb.WithKeyedPlans).
// Its batched writes' array parameters otherwise had every call planned anew: 0.3 ms a call,
// as much as running them.
func PoolOptions() []pgdb.Option { return []pgdb.Option{pgdb.WithKeyedPlans()} }

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the cart's goose migrations, for pgdb.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Config configures the cart service.
type Config struct {
	// Pool connects to the cart's schema (search_path set by pgdb.Open).
	Pool *pgxpool.Pool
	// NATS asks catalog (prices), inventory (stores, availability) and fulfilment (orders).
	NATS *nats.Conn
	// JS delivers fulfilment's order events: a cart checked out as an order answered PENDING
	// opens again when that order is rejected later (see rejected.go). Nil: not heard.
	JS jetstream.JetStream
	// Currency is the catalog's ISO 4217 currency, e.g. "USD"; every price must be in it.
	// Default "USD".
	Currency string
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// CheckoutTimeout bounds the wait for fulfilment to place an order. Default 15s.
	CheckoutTimeout time.Duration
	// LookupTimeout bounds each catalog and inventory question. Default 3s.
	LookupTimeout time.Duration
	// AbandonAfter is how long an open cart may sit unchanged before Run deletes it.
	// Default 30 days; negative keeps carts forever.
	AbandonAfter time.Duration
	// CheckedOutRetention is how long a checked-out cart is kept after its last change before
	// Run deletes it: it answers a retry of its checkout, and its order keeps its lines. Default
	// 30 days; negative keeps them forever.
	CheckedOutRetention time.Duration
	// CacheTTL is the longest the cart uses a catalog variant or an inventory store it was told
	// about without asking again. The owners' events drop a changed one at once; the TTL only
	// bounds how long an event missed without a visible disconnect can leave it stale.
	// Default 5s; negative switches the caches off (every use asks).
	CacheTTL time.Duration
}

// Service is the cart: its rules, its storage and its API.
type Service struct {
	db       *pgxpool.Pool
	nc       *nats.Conn
	js       jetstream.JetStream
	currency string
	log      *slog.Logger

	checkoutTimeout time.Duration
	lookupTimeout   time.Duration
	// checkoutLease freezes a cart while its order is placed; longer than checkoutTimeout so
	// the lease outlives the call it protects.
	checkoutLease  time.Duration
	abandonAfter   time.Duration
	keepCheckedOut time.Duration

	// What the catalog and inventory said, by SKU and by store id (see ownerevents.go).
	variantCache *lookupCache[*catalogv1.Variant]
	storeCache   *lookupCache[*inventoryv1.Store]
	// stopWatching ends the owners' event subscriptions (nil when there are none).
	stopWatching func()

	// Checkout's writes to the cart row, batched (see checkoutwrites.go).
	claims *coalesce.Batcher[claimReq, *cartRow]
	marks  *coalesce.Batcher[markReq, *cartMark]
	// rows are the carts as this copy last wrote them, where edits start (see mutate).
	rows *rowCache
	// edits are the edits' UPDATEs, batched (see editwrites.go).
	edits *coalesce.Batcher[editReq, *editDone]
	// loseEditReplies makes that many edit batches report failure after their write (tests).
	loseEditReplies atomic.Int32
	// creates are new carts' INSERTs, batched (see createwrites.go).
	creates *coalesce.Batcher[createReq, *cartRow]
}

// New returns the cart service.
func New(cfg Config) *Service {
	if cfg.Currency == "" {
		cfg.Currency = "USD"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CheckoutTimeout <= 0 {
		cfg.CheckoutTimeout = 15 * time.Second
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 3 * time.Second
	}
	if cfg.AbandonAfter == 0 {
		cfg.AbandonAfter = 30 * 24 * time.Hour
	}
	if cfg.CheckedOutRetention == 0 {
		cfg.CheckedOutRetention = 30 * 24 * time.Hour
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 5 * time.Second
	}
	s := &Service{
		db:              cfg.Pool,
		nc:              cfg.NATS,
		js:              cfg.JS,
		currency:        cfg.Currency,
		log:             cfg.Logger.With("service", "cart"),
		checkoutTimeout: cfg.CheckoutTimeout,
		lookupTimeout:   cfg.LookupTimeout,
		checkoutLease:   cfg.CheckoutTimeout + 30*time.Second, // see settle
		abandonAfter:    cfg.AbandonAfter,
		keepCheckedOut:  cfg.CheckedOutRetention,
		variantCache:    newLookupCache[*catalogv1.Variant](cfg.CacheTTL),
		storeCache:      newLookupCache[*inventoryv1.Store](cfg.CacheTTL),
		rows:            newRowCache(),
	}
	s.claims = coalesce.New(maxCartWriteBatch, s.claimMany)
	s.marks = coalesce.New(maxCartWriteBatch, s.markMany)
	s.edits = coalesce.New(maxCartWriteBatch, s.editMany)
	s.creates = coalesce.New(maxCartWriteBatch, s.createMany)
	if cfg.CacheTTL > 0 {
		if err := s.watchOwners(); err != nil {
			// Without the events a cached answer could be stale for a whole TTL: ask every time.
			s.log.Warn("catalog and store caches off: cannot hear their owners' events", "err", err)
			s.variantCache.off()
			s.storeCache.off()
		}
	}
	return s
}

// Close stops listening to the catalog's and inventory's events and, since the caches could no
// longer hear of changes, switches them off. Run closes the service when it returns; a service
// that never runs may be closed by its owner, or lives as long as its NATS connection.
func (s *Service) Close() {
	if s.stopWatching != nil {
		s.stopWatching()
	}
	s.variantCache.off()
	s.storeCache.off()
}

// RegisterNATS serves nothing: nobody asks the cart over NATS.
func (s *Service) RegisterNATS(*natsrpc.Service) error { return nil }

// LoadDemo loads nothing: the demo chain has no carts.
func (s *Service) LoadDemo(context.Context, demo.Chain) (bool, error) { return false, nil }

// OwnData reports false: carts, the demo's or not, are no reason to leave the demo out.
func (s *Service) OwnData(context.Context, demo.Chain) (bool, error) { return false, nil }

// Run deletes abandoned open carts every hour until ctx ends (checked-out carts are kept: an
// order points at its cart), opens again the carts whose PENDING orders are rejected, and
// deletes the carts of customers fulfilment has forgotten (forget.go).
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	g, ctx := errgroup.WithContext(ctx)
	if s.js != nil {
		g.Go(func() error { return s.consumeRejected(ctx) })
		g.Go(func() error { return s.consumeForgotten(ctx) })
	}
	g.Go(func() error { return s.sweepLoop(ctx) })
	return g.Wait()
}

// sweepLoop deletes abandoned carts (DeleteAbandoned) and old checked-out ones
// (DeleteCheckedOut) hourly until ctx ends.
func (s *Service) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		s.sweep(ctx, "abandoned carts", s.abandonAfter, s.DeleteAbandoned)
		s.sweep(ctx, "old checked-out carts", s.keepCheckedOut, s.DeleteCheckedOut)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep runs one of sweepLoop's deletions, unless its age is negative (keep for ever), and logs
// what it did.
func (s *Service) sweep(ctx context.Context, what string, age time.Duration, del func(context.Context) (int64, error)) {
	if age < 0 {
		return
	}
	n, err := del(ctx)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		s.log.Warn("deleting "+what+" failed; trying again in an hour", "err", err)
	case n > 0:
		s.log.Info(what+" deleted", "count", n, "older_than", age)
	}
}

// checkedOutBatch bounds the carts one statement of DeleteCheckedOut deletes, so that a first
// sweep of a large table does not hold one long transaction.
const checkedOutBatch = 5000

// DeleteCheckedOut deletes checked-out carts neither created nor changed within
// CheckedOutRetention and returns how many. Kept, they were one row per order for ever, read by
// nobody once their checkout could no longer be retried.
func (s *Service) DeleteCheckedOut(ctx context.Context) (int64, error) {
	var n int64
	for {
		tag, err := s.db.Exec(ctx, deleteCheckedOutSQL, s.keepCheckedOut.Microseconds(), checkedOutBatch)
		if err != nil {
			return n, err
		}
		n += tag.RowsAffected()
		if tag.RowsAffected() < checkedOutBatch {
			return n, nil
		}
	}
}

// deleteCheckedOutSQL deletes up to $2 checked-out carts older than $1 microseconds, found
// through carts_checked_out (cart's 00007).
const deleteCheckedOutSQL = `DELETE FROM carts WHERE ctid = ANY (ARRAY(
	SELECT ctid FROM carts WHERE state = 'checked_out'
	  AND create_time < now() - $1::bigint * interval '1 microsecond' -- the index's column
	  AND update_time < now() - $1::bigint * interval '1 microsecond'
	LIMIT $2))`

// DeleteAbandoned deletes open carts neither changed nor checked out for longer than
// AbandonAfter and returns how many. A cart whose checkout's lease lapsed unsettled may have an
// order (its answer lost, the cart never looked at since): it is settled first, so the cart of
// an order is kept checked out, and one that made none opens and goes with the others. When
// fulfilment cannot say now, the sweep settles no more and those carts wait for the next one.
func (s *Service) DeleteAbandoned(ctx context.Context) (int64, error) {
	age := s.abandonAfter.Microseconds()
	rows, err := s.db.Query(ctx, `
		SELECT `+cartColumns+` FROM carts
		WHERE state = 'open' AND checkout_until < now()
		  AND create_time < now() - $1::bigint * interval '1 microsecond'
		  AND update_time < now() - $1::bigint * interval '1 microsecond'
		  AND (checkout_time IS NULL OR checkout_time < now() - $1::bigint * interval '1 microsecond') -- NULL: leased before cart's 00006
		LIMIT 1000`, age)
	if err != nil {
		return 0, err
	}
	lapsed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*cartRow, error) {
		c := &cartRow{}
		return c, r.Scan(c.scanTargets()...)
	})
	if err != nil {
		return 0, err
	}
	for _, c := range lapsed {
		if err := s.settle(ctx, c); err != nil {
			// Fulfilment cannot say now; the others would wait as long each. The next sweep asks again.
			s.log.InfoContext(ctx, "abandoned-cart sweep: a lapsed checkout's outcome is not known yet; its cart and the rest are kept for the next sweep", "cart_id", c.ID, "err", err)
			break
		}
	}
	tag, err := s.db.Exec(ctx, `
		DELETE FROM carts
		WHERE state = 'open'
		  AND create_time < now() - $1::bigint * interval '1 microsecond' -- the index's column
		  AND update_time < now() - $1::bigint * interval '1 microsecond'
		  AND checkout_until IS NULL
		  AND (checkout_time IS NULL OR checkout_time < now() - $1::bigint * interval '1 microsecond')`, age)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
