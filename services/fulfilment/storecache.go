package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// The store cache keeps what orders need of their stores (name, prep time, pickup window,
// opening hours): every checkout, acceptance and MarkReady needs them, and they change rarely.
// Deadlines are counted in the hours, so a copy must not go on counting in hours the store no
// longer has. How it stays current, as the cart's and inventory's caches do:
//   - Every copy hears every store event (created, updated, state_changed) on a plain core NATS
//     subscription, not the shared durable consumer (which gives each event to one copy), and
//     marks the store stale: its next use reads it from inventory. Inventory publishes the event
//     after its change committed (outbox), so that read sees the change.
//   - The copy handling an update for the hours consumer puts the store as it read it in.
//   - A checkout asks for the store at least as new as the version its holds were placed against
//     (Hold.store_version): an older entry is read again.
//   - A disconnect or reconnect marks every store stale (events sent meanwhile were missed); an
//     event lost otherwise (core NATS is at most once) is covered by Config.StoreCacheTTL.
//
// So an acceptance, MarkReady or checkout uses hours older than the store's only when it read
// them before this copy heard the update's event: within NATS's delivery time of inventory's
// relay publishing it. Such an order is still counted again in the new hours, by one of two:
//   - the hours consumer (any copy), which counts every open order of the store when it handles
//     the update, if the order's transition had committed by then;
//   - the transition's own copy, which, when it has heard a store event (or a reconnect) since
//     it read the store, counts the order again once the transition has committed
//     (recountIfStoreChanged).
//
// What is left: a transition that read the old hours and committed after the consumer looked
// at the store's orders, on a copy that heard the event only after that commit: the event's
// delivery to this copy lagging its delivery to the consumer's copy by more than the consumer's
// store read and order scan (milliseconds); or an event lost on a live connection (core NATS
// is at most once), which leaves Config.StoreCacheTTL.
//
// A stale entry is kept to fall back on: when inventory cannot be asked, older hours beat none
// (without them a pickup window runs in plain time, overnight included).
type storeCache struct {
	inv inventoryClient
	ttl time.Duration
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]cachedStore
	// gen counts staleness marks; marked is the mark at which each store was last marked stale,
	// markedAll the last mark of every store. A read of a store begun at an earlier mark may
	// have missed the change: it must not make an entry fresh again.
	gen       uint64
	marked    map[string]uint64
	markedAll uint64
	// off: the store events cannot be heard, so nothing is reused (Close, or no subscription).
	off bool

	loading singleflight.Group
	// failLookups makes reads of stores from inventory fail, as when it is away, for tests
	// (FailStoreLookups).
	failLookups atomic.Bool

	stopOnce sync.Once
	stop     func() // ends the subscription and the status listener; nil before watch
}

type cachedStore struct {
	info    storeInfo
	version int64     // the store's version (Store.version) the entry was read at
	fetched time.Time // zero: marked stale, kept only to fall back on
}

// storeLoadTimeout bounds reading a store's details from inventory.
const storeLoadTimeout = 2 * time.Second

func newStoreCache(inv inventoryClient, ttl time.Duration, log *slog.Logger) *storeCache {
	return &storeCache{inv: inv, ttl: ttl, log: log, entries: map[string]cachedStore{}, marked: map[string]uint64{}}
}

// get returns the store's details, read from inventory unless a fresh entry at least minVersion
// is cached (0: any).
func (c *storeCache) get(ctx context.Context, storeID string, minVersion int64) (storeInfo, error) {
	c.mu.Lock()
	e, ok := c.entries[storeID]
	gen, mark, off := c.gen, c.markOfLocked(storeID), c.off
	c.mu.Unlock()
	if ok && !off && !e.fetched.IsZero() && time.Since(e.fetched) < c.ttl && e.version >= minVersion {
		return e.info, nil
	}
	// Shared by every use of the store meanwhile that began after its same staleness mark and
	// needs no newer version, so detached from the first caller's context (one that gives up
	// must not fail the others), with a timeout of its own.
	key := storeID + "@" + strconv.FormatUint(mark, 10) + "@" + strconv.FormatInt(minVersion, 10)
	ch := c.loading.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeLoadTimeout)
		defer cancel()
		if c.failLookups.Load() {
			return storeInfo{}, status.Error(codes.Unavailable, "store lookups fail (test hook)")
		}
		st, err := c.inv.getStore(ctx, storeID)
		if err != nil {
			return storeInfo{}, err
		}
		c.put(st, gen)
		return storeInfoOf(storeID, st), nil
	})
	var v any
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case r := <-ch:
		v, err = r.Val, r.Err
	}
	if err != nil {
		if ok && e.version >= minVersion {
			return e.info, nil // stale beats nothing while inventory is away
		}
		// An entry older than the version asked for (a placement's holds were made at a later
		// one) may hold hours a change has replaced since: the caller waits for a read instead
		// (a placement stays PENDING for the recovery loop), as it would with no entry.
		return storeInfo{}, err
	}
	return v.(storeInfo), nil
}

// generation is the staleness count to pass to put and changedSince for a read of a store
// beginning now.
func (c *storeCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// changedSince reports whether the store was marked stale (an event, a reconnect) after
// generation gen: what was read of it then may predate a change.
func (c *storeCache) changedSince(storeID string, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markOfLocked(storeID) > gen
}

func (c *storeCache) markOfLocked(storeID string) uint64 { return max(c.marked[storeID], c.markedAll) }

// put keeps st, read from inventory by a read that began at generation gen, unless the cache
// marked anything stale since (the read may predate that change) or holds a newer version.
func (c *storeCache) put(st *inventoryv1.Store, gen uint64) {
	id := st.GetId()
	if id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off || c.markOfLocked(id) > gen {
		return
	}
	if e, ok := c.entries[id]; ok && e.version > st.GetVersion() {
		return
	}
	c.entries[id] = cachedStore{info: storeInfoOf(id, st), version: st.GetVersion(), fetched: time.Now()}
}

// markStale makes the next use of the store (every store: no id) read it again.
func (c *storeCache) markStale(storeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if storeID == "" {
		c.markedAll = c.gen
	} else {
		c.marked[storeID] = c.gen
	}
	for id, e := range c.entries {
		if storeID == "" || id == storeID {
			e.fetched = time.Time{}
			c.entries[id] = e
		}
	}
}

// storeEventsFlushTimeout bounds making sure the server knows the subscription.
const storeEventsFlushTimeout = 5 * time.Second

// watch marks stores stale on their events, heard by this copy whichever copy handles them
// for the hours consumer, and every store on a disconnect or reconnect. If it cannot subscribe,
// the cache is switched off rather than trusted blind.
func (c *storeCache) watch(nc *nats.Conn) error {
	sub, err := nc.Subscribe(inventory.SubjectStoreEvents, c.onStoreEvent)
	if err != nil {
		c.switchOff()
		return fmt.Errorf("subscribe to %s: %w", inventory.SubjectStoreEvents, err)
	}
	// A status listener, not the connection's reconnect/disconnect handlers: those are the
	// owner's, and there is only one of each.
	lis := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	c.stop = func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			c.log.Warn("store cache: unsubscribe from store events", "err", err)
		}
		nc.RemoveStatusListener(lis) // closes lis: the loop below ends
	}
	go func() {
		for st := range lis {
			c.markStale("")
			if st == nats.CLOSED {
				c.close()
				continue
			}
			if st == nats.CONNECTED {
				c.log.Info("NATS reconnected; cached stores will be read again (store events sent meanwhile were missed)")
			}
		}
	}()
	// The server knows the subscription before the cache is first used, so no change after
	// a store is first read can slip by unheard.
	if err := nc.FlushTimeout(storeEventsFlushTimeout); err != nil {
		c.close()
		return fmt.Errorf("flush subscription to %s: %w", inventory.SubjectStoreEvents, err)
	}
	return nil
}

// close stops hearing store events and switches the cache off: it could no longer hear of
// changes.
func (c *storeCache) close() {
	c.stopOnce.Do(func() {
		c.switchOff()
		if c.stop != nil {
			c.stop()
		}
	})
}

func (c *storeCache) switchOff() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off = true
	c.gen++
	c.markedAll = c.gen
}

func (c *storeCache) onStoreEvent(m *nats.Msg) {
	id, err := inventory.StoreOfEvent(m.Subject, m.Data)
	if err != nil || id == "" {
		// A store event we cannot read (or a new kind): every store is read again, to be safe.
		c.log.Warn("unreadable inventory store event; every cached store will be read again", "subject", m.Subject, "err", err)
		c.markStale("")
		return
	}
	c.markStale(id)
	c.log.Debug("store changed; its cached details will be read again", "store_id", id, "subject", m.Subject)
}
