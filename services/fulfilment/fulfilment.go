// Package fulfilment owns orders: the checkout saga that turns a priced cart into an order
// held at a store, the order's state machine and history, pickup codes, the timers of an open
// order (expiry, reminders, escalation) and the shopper's and the store's views of it.
// Customer notifications are its sub-package notify.
//
// # Placing an order (the saga)
//
// The cart calls place_order over NATS with an idempotency key. The order id is derived from
// (customer id, idempotency key), so every retry of a checkout, in any process, works on the
// same order, and inventory (idempotent by order id) on the same holds:
//
//  1. Reserve at inventory: every line at the named store, or at the nearest store within the
//     radius that can fill them all, with a short deadline (Config.PlacementHoldTTL).
//  2. One write (a single round trip, one implicit transaction) inserts the order in its
//     outcome state: CONFIRMED (store, ready-by estimate; the pickup code is derived, never
//     stored) or REJECTED (shortages), with its history, its OrderChanged event (outbox), its
//     customer notification and, for CONFIRMED, the effect "extend the holds to the order's
//     pickup horizon" (ready-by + pickup window + grace, see keepHolds). From then on the
//     order keeps its stock through an outage between fulfilment and inventory of that
//     length. The effects worker sends the extension at its next round, with every other
//     effect of that round in one change_holds request.
//  3. An order that exists already (a retry, a concurrent copy of the same checkout) makes the
//     insert fail on the key; that order is returned as it is (a PENDING one is first driven
//     on). Reserve answered the retry from the holds the order already has, so nothing is held
//     twice.
//
// So a checkout costs two transactions on its critical path (inventory's reserve, fulfilment's
// insert) and behind it a share of an effects round (claim, one change_holds request, delete,
// each for many orders) besides the outbox relay; the store's details and its queue (for the
// ready-by estimate) come from short-lived caches. This is the faster of the two sagas: the
// slower one writes the order PENDING before reserving and needs a third transaction on the
// critical path. Its price: a process that dies between 1 and 2 leaves a short hold and no
// order. The hold is its own compensation (inventory's sweeper ends it at its deadline), and
// the shopper's retry with the same key reserves nothing new and creates the order. When the
// outcome of step 1 is unknown (inventory timed out or was unreachable), or the store's details
// cannot be read, the order is written PENDING with its request, answered PENDING, and driven
// on by the recovery loop (FOR UPDATE SKIP LOCKED, so any number of copies can run it) until it
// is CONFIRMED or REJECTED (after Config.PendingGiveUp).
//
// # The order's life
//
// The transition table lives in package domain. Every transition is one transaction of two
// round trips: BEGIN, lock the order row and read its history (pipelined); check the table;
// then, pipelined with COMMIT, update the row, append a history entry, enqueue the OrderChanged
// event (id derived from order id and history sequence, so a rewrite is a duplicate) and the
// customer notification, and record the inventory effect (release, commit, extend) in
// order_effects. The effects worker carries effects out after the commit and deletes them,
// retrying until inventory has done them, in order per order; a round's effects of many orders
// go to inventory as one change_holds request, made in one inventory transaction. So holds end
// even when the process dies right after a transition. Holds are extended again when the
// order's pickup horizon moves later (ready late), and by the timer loop when an order stays
// open until its holds come within Config.HoldRefreshMargin of their deadline. A commit that
// ends fewer holds than the order has lines (they had ended: goods left unheld) is logged at
// Error and counted (handoff_fulfilment_commit_shortfall_total). Timers (expiry, the
// expiring-soon reminder, the not-accepted escalation, the refresh of long-open orders' holds)
// are columns of the order, run by the timer loop; they survive restarts.
//
// WatchOrder streams get the order as a transition of this process leaves it, or as its event
// carries it, without reading the database; they read it when they start, after a gap in what
// they heard, and every Config.WatchPoll.
//
// # Who may do what
//
// OrderService serves a shopper their own orders; StoreOrderService serves staff the orders of
// their stores (caller.go reads who is calling from the edge's metadata). Anything else is
// NotFound, whether it exists or not. The pickup code is HMAC-SHA256(secret, order id) cut to
// six digits: shown to the order's own shopper only, never stored, and wrong codes are
// counted per order, locking hand-over for a while after Config.PickupMaxWrong of them.
package fulfilment

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
	"github.com/handoff-dev/handoff/services/inventory"
)

// Schema is the Postgres schema fulfilment owns by default.
const Schema = "fulfilment"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are fulfilment's goose migrations (its own 00002-00019, notify's 00020+), for
// pgdb.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Config configures fulfilment. Pool, NATS and PickupCodeSecret are required; every duration
// has a default fit for production, and tests shorten them.
type Config struct {
	// Pool connects to fulfilment's schema (search_path set by pgdb.Open).
	Pool *pgxpool.Pool
	// NATS reaches inventory (request/reply) and carries the order events WatchOrder follows.
	NATS *nats.Conn
	// JS consumes inventory's store state events (a closing that cancels open orders). Default:
	// JetStream over NATS.
	JS jetstream.JetStream
	// PickupCodeSecret derives pickup codes (HMAC-SHA256); at least 16 bytes, the same in every
	// copy of the service. Changing it changes the code of every open order.
	PickupCodeSecret []byte
	// Logger receives the service's logs.
	Logger *slog.Logger
	// Notify configures the customer-notification dispatcher that Run starts. Notifications
	// are written for the channels of its Senders only: none configured, none written.
	Notify notify.DispatcherConfig

	// ReserveTimeout bounds the reserve call of a checkout. Default 2s.
	ReserveTimeout time.Duration
	// LateReserve is how long after its caller gave up a reserve may still hold stock:
	// inventory decides a batch it has begun, within 10s. An order ended while PENDING is
	// released again once this has passed. Default 20s.
	LateReserve time.Duration
	// PlacementHoldTTL is the deadline given to holds when reserving, before the order exists:
	// how long the holds of an order that was never created stay, and how long inventory may be
	// out of reach right after a confirmation before the order loses its stock (the extension
	// recorded with the confirmation has not reached it yet). Default 10m.
	PlacementHoldTTL time.Duration
	// PendingAfter is how old a PENDING order must be before the recovery loop drives it on
	// (a younger one may still be in the hands of its checkout). Default 5s.
	PendingAfter time.Duration
	// PendingGiveUp rejects an order still PENDING this long after it was placed. Default 10m.
	PendingGiveUp time.Duration
	// HoldGrace is added to the pickup deadline to make the holds' deadline, so that
	// fulfilment's own expiry comes first. Default 15m.
	HoldGrace time.Duration
	// HoldRefreshMargin: the timer loop extends the holds of an order still open when their
	// deadline (its pickup horizon, set at confirmation) is nearer than this. It must be
	// shorter than PlacementHoldTTL. Default PlacementHoldTTL/2.
	HoldRefreshMargin time.Duration
	// NotAcceptedAfter publishes not_accepted for an order still CONFIRMED this long of the
	// store's open hours after confirmation (the POS escalates it). Default 5m.
	NotAcceptedAfter time.Duration
	// ExpiringSoonBefore sends the expiring-soon reminder this long before the pickup
	// deadline (none for shorter windows). Default 10m.
	ExpiringSoonBefore time.Duration
	// Each PickupMaxWrong wrong pickup codes in a row lock hand-over, for PickupLockout the
	// first time and twice as long each time after, up to a day. Defaults 5 and 5m.
	PickupMaxWrong int
	PickupLockout  time.Duration
	// ReadyByQueueCap caps the orders ahead counted in the ready-by estimate. Default 8.
	ReadyByQueueCap int
	// SweepInterval is how often the recovery, timer and effects loops look at the database
	// without being woken. Default 1s.
	SweepInterval time.Duration
	// Clock is this process's clock (tests set one running wrong). Default time.Now. The
	// timer and recovery loops fire by the database's clock, not this one: see timersRound.
	Clock func() time.Time
	// StoreCacheTTL is how long a store's details (name, prep time, pickup window, hours) are
	// reused at most: a change is heard from inventory's store events at once, so this only
	// bounds one whose event was lost (see storecache.go). Default 30s.
	StoreCacheTTL time.Duration
	// QueueCountTTL is how long a store's queue count (orders ahead, for the ready-by
	// estimate) is reused, with this process's confirmations counted on top (not other
	// copies': see queueCounts). Default 2s.
	QueueCountTTL time.Duration
	// WatchPoll is how often WatchOrder re-reads an order without hearing of a change: the
	// safety net for events lost on the way (core NATS is at most once). Default 15s.
	WatchPoll time.Duration
	// PersonalDataRetention is how long after an order ended its shopper's contact fields
	// (pickup name, email, note) are kept before the hourly sweep clears them (redact.go).
	// Default 90 days; negative keeps them for ever.
	PersonalDataRetention time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReserveTimeout, 2*time.Second)
	def(&c.LateReserve, 20*time.Second)
	def(&c.PlacementHoldTTL, 10*time.Minute)
	def(&c.PendingAfter, 5*time.Second)
	def(&c.PendingGiveUp, 10*time.Minute)
	def(&c.HoldGrace, 15*time.Minute)
	def(&c.HoldRefreshMargin, c.PlacementHoldTTL/2)
	def(&c.NotAcceptedAfter, 5*time.Minute)
	def(&c.ExpiringSoonBefore, 10*time.Minute)
	def(&c.PickupLockout, 5*time.Minute)
	def(&c.SweepInterval, time.Second)
	def(&c.StoreCacheTTL, 30*time.Second)
	def(&c.QueueCountTTL, 2*time.Second)
	def(&c.WatchPoll, 15*time.Second)
	if c.PersonalDataRetention == 0 {
		c.PersonalDataRetention = 90 * 24 * time.Hour
	}
	if c.PickupMaxWrong <= 0 {
		c.PickupMaxWrong = 5
	}
	if c.ReadyByQueueCap <= 0 {
		c.ReadyByQueueCap = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// Service is fulfilment: its rules, its storage, its APIs and its background loops.
type Service struct {
	db     *pgxpool.Pool
	schema string // db's (pgdb.PoolSchema)
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    Config
	log    *slog.Logger
	secret []byte
	inv    inventoryClient
	stores *storeCache
	queue  *queueCounts

	placing singleflight.Group // concurrent checkouts of one order, in this process
	// placements sends new orders' writes together (see sendPlacement).
	placements *coalesce.Batcher[*writeBatch, struct{}]
	// changes makes concurrent changes of orders together (see transact).
	changes *coalesce.Batcher[changeRequest, *order]
	hub     *watchHub
	// notifyChannels are the notification channels with a sender: only theirs are written.
	notifyChannels notify.Channels
	// notifications writes this schema's notification rows, spacing its own NOTIFYs.
	notifications notify.Writer
	// clock is the database's clock as this copy last read it. Statements that decide by the
	// database's time read it in their transaction (statement_timestamp()) and pass it through
	// clock.Observe or clock.Read, which keep the offset and warn of a wrong clock; times written
	// where no statement reads it first (placing an order) come from clock.NowOrRead, without a
	// round trip once an offset is known, so an order's history keeps its order whatever the
	// copy's clock says.
	clock *dbclock.Clock

	effectsWake chan struct{}

	// storeReadHook, set by tests, runs in Accept and MarkReady between reading the store's
	// details and the transition.
	storeReadHook atomic.Pointer[func()]
	// loseCommitReply, set by tests, fails a combined change's write round trip after it has
	// committed, as a connection lost during COMMIT does.
	loseCommitReply atomic.Bool
	// staleReads, set by tests, makes that many changes write their order as read before a
	// write they did not see (its Writes one behind), so that updateOrder refuses them.
	staleReads atomic.Int32
	// reannouncedHook, set by tests, runs after a re-announcement has committed and before the
	// stream it was for is remembered.
	reannouncedHook atomic.Pointer[func()]
}

// New returns the fulfilment service. Nothing runs until Run.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Pool == nil:
		return nil, errors.New("fulfilment: Config.Pool is required")
	case cfg.NATS == nil:
		return nil, errors.New("fulfilment: Config.NATS is required")
	case len(cfg.PickupCodeSecret) < domain.MinSecretLen:
		return nil, fmt.Errorf("fulfilment: Config.PickupCodeSecret must be at least %d bytes", domain.MinSecretLen)
	}
	if cfg.JS == nil {
		js, err := jetstream.New(cfg.NATS)
		if err != nil {
			return nil, fmt.Errorf("fulfilment: JetStream: %w", err)
		}
		cfg.JS = js
	}
	cfg.setDefaults()
	if cfg.HoldRefreshMargin >= cfg.PlacementHoldTTL {
		return nil, fmt.Errorf("fulfilment: HoldRefreshMargin (%s) must be shorter than PlacementHoldTTL (%s)", cfg.HoldRefreshMargin, cfg.PlacementHoldTTL)
	}
	log := cfg.Logger.With("service", "fulfilment")
	s := &Service{
		schema:      pgdb.PoolSchema(cfg.Pool),
		db:          cfg.Pool,
		nc:          cfg.NATS,
		js:          cfg.JS,
		cfg:         cfg,
		log:         log,
		secret:      append([]byte(nil), cfg.PickupCodeSecret...),
		inv:         inventoryClient{nc: cfg.NATS},
		hub:         newWatchHub(),
		effectsWake: make(chan struct{}, 1),

		notifyChannels: notify.ChannelsOf(cfg.Notify.Senders),
	}
	s.clock = dbclock.New(s.now, log)
	s.placements = coalesce.New(maxPlacementBatch, s.sendPlacements)
	s.changes = coalesce.New(maxChangeBatch, s.changeTogether)
	s.stores = newStoreCache(s.inv, cfg.StoreCacheTTL, log)
	if err := s.stores.watch(cfg.NATS); err != nil {
		// Without the events a cached store could keep hours it no longer has for a whole TTL.
		log.Warn("store cache off: cannot hear inventory's store events; every use reads the store", "err", err)
	}
	s.queue = newQueueCounts(cfg.QueueCountTTL)
	return s, nil
}

// Run does fulfilment's background work until ctx ends: the recovery loop (PENDING orders),
// the timer loop (expiry, reminders, escalations, refreshing the holds of long-open orders),
// the effects worker (releases, commits and extensions at inventory), the WatchOrder event feed,
// the customer-notification dispatcher and the re-announcement of open orders to an events
// stream made anew (runStreamWatch). Its events leave through the outbox relay the stack
// runs for the schema. Every loop is safe to run in several copies at once. When ctx ends, Run
// also stops what New started, as Close does.
func (s *Service) Run(ctx context.Context) error {
	defer s.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.hub.run(ctx, s.nc, s.log) })
	g.Go(func() error { s.runRecovery(ctx); return nil })
	g.Go(func() error { s.runTimers(ctx); return nil })
	g.Go(func() error { s.runEffects(ctx); return nil })
	g.Go(func() error {
		return s.consumeInventory(ctx, s.js, storeStatesConsumer, inventory.SubjectStoreStateChanged, s.handleStoreState)
	})
	g.Go(func() error {
		return s.consumeInventory(ctx, s.js, storeHoursConsumer, inventory.SubjectStoreUpdated, s.handleStoreUpdated)
	})
	g.Go(func() error { s.runClosings(ctx); return nil })
	g.Go(func() error { s.runStreamWatch(ctx); return nil })
	g.Go(func() error { s.runRedaction(ctx); return nil })
	ncfg := s.cfg.Notify
	if ncfg.PickupCode == nil {
		ncfg.PickupCode = s.PickupCode
	}
	if ncfg.OrderEnded == nil {
		ncfg.OrderEnded = s.orderEnded
	}
	g.Go(func() error { return notify.NewDispatcher(s.db, ncfg).Run(ctx) })
	g.Go(func() error { s.notifications.WatchServed(ctx, s.db); return nil })
	return g.Wait()
}

// DBClock is the database's clock as this copy goes by it; its offset is served on /metrics
// (dbclock.Clock.Collector).
func (s *Service) DBClock() *dbclock.Clock { return s.clock }

// Close stops hearing inventory's store events (New subscribes to them for the store cache)
// and, since it could no longer hear of changes, switches the cache off. Run closes the service
// when it returns; a service that never runs may be closed by its owner, or hears them as long
// as its NATS connection lives.
func (s *Service) Close() { s.stores.close() }

// afterStoreRead runs the test hook set for it, if any.
func (s *Service) afterStoreRead() {
	if h := s.storeReadHook.Load(); h != nil {
		(*h)()
	}
}

// PickupCode returns an order's pickup code. It is never stored; whoever needs to show it to
// the order's shopper (an email sender, say) derives it here.
func (s *Service) PickupCode(orderID string) string { return domain.PickupCode(s.secret, orderID) }

// now is the service's own clock, at the database's precision, so that times written and read
// back compare equal; s.clock moves it to the database's.
func (s *Service) now() time.Time { return s.cfg.Clock().UTC().Truncate(time.Microsecond) }

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// orderEnded names the state of order id once it has ended ("" while it is open, or not
// found), for the notification dispatcher: an email carrying the pickup code is not sent for
// an order that has ended.
func (s *Service) orderEnded(ctx context.Context, id string) (string, error) {
	var st int16
	err := s.db.QueryRow(ctx, `SELECT state FROM orders WHERE id = $1`, id).Scan(&st)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read order %s: %w", id, err)
	case !domain.Final(domain.State(st)):
		return "", nil
	}
	return domain.StateName(domain.State(st)), nil
}
