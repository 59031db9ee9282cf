package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/handoff-dev/handoff/internal/hours"
)

// The store cache: every store, with its parsed schedule, in this process's memory, so that
// neither the locator nor a reserve reads the stores table or decodes opening hours. Stores
// change rarely; reserves and locator queries come hundreds of times a second.
//
// How it stays current, and how stale it can be:
//   - Changes made by this process (CreateStore, UpdateStore, SetStoreState, LoadDemo, a store
//     read by GetStore or inside a reserve) go in at once.
//   - Changes made by another copy reach it through the store events (store.created, .updated,
//     .state_changed, see stores.go), heard on a core NATS subscription: the event names the
//     store and the cache re-reads that row. Typically milliseconds after the other copy's
//     commit (the outbox relay's delay plus one primary-key read).
//   - The safety net for a lost event (core NATS is at most once; a disconnect; no NATS given):
//     the cache is never used while its last check against the table started more than
//     Config.StoreCacheMaxAge ago (default 10s). A check compares every store's (version,
//     create_time) and re-reads only those that differ, so it is cheap even at 40,000 stores,
//     and past half that age it runs in the background, so steady traffic never waits for it.
//     A reconnect to NATS (events were missed) forces a check before the next use.
//
// So a store changed by another copy (closed, paused, new hours, deleted behind the service's
// back) may still be seen as before by the locator for at most StoreCacheMaxAge. A reserve is
// not: its transaction sends the cache's (version, create time) of its stores with the locking
// reads and gets back, by primary key, the rows that differ (and stores the cache lacks); it
// decides from those rows and puts them in the cache. What the invariants rest on is not
// cached: stock rows and holds are locked and read in the reserve's transaction.
//
// Its background work (the subscription, the status listener, checks nobody waits for, re-reads
// on events) ends with Service.Close, or when Run's ctx ends.
//
// Entries are immutable (a change replaces the entry) and merged by version: a slow read never
// replaces a newer entry. Stores with the same zone and hours share one parsed schedule and its
// open-status memo, which is valid until the schedule's next opening or closing.

// storeEntry is one store as the cache holds it.
type storeEntry struct {
	row   *storeRow
	hours *sharedHours
	putAt time.Time // when it entered the cache: a check that began earlier cannot delete it
}

// sharedHours is a schedule parsed once for every store with the same zone and hours.
type sharedHours struct {
	timeZone         string
	hoursRaw, excRaw []byte

	once       sync.Once
	sched      *hours.Schedule
	weekly     []hoursJSON
	exceptions []exceptionJSON
	err        error

	memo atomic.Pointer[statusMemo]
}

// statusMemo is a computed status and the instants between which it holds.
type statusMemo struct {
	st          hours.Status
	from, until time.Time
}

func (h *sharedHours) parse(zones *zoneCache) error {
	h.once.Do(func() {
		loc, err := zones.load(h.timeZone)
		if err != nil {
			h.err = err
			return
		}
		r := &storeRow{hoursRaw: h.hoursRaw, excRaw: h.excRaw}
		if h.weekly, h.exceptions, h.err = r.decodeHours(); h.err != nil {
			return
		}
		h.sched, h.err = buildSchedule(loc, h.weekly, h.exceptions)
	})
	return h.err
}

// decoded returns the parsed weekly hours and exceptions (parsing them on first use).
func (h *sharedHours) decoded(zones *zoneCache) ([]hoursJSON, []exceptionJSON, error) {
	if err := h.parse(zones); err != nil {
		return nil, nil, err
	}
	return h.weekly, h.exceptions, nil
}

// statusAt is the schedule's status at now. StatusAt's answer only changes at an opening or a
// closing, or when the local date changes (its look-ahead counts days from today), so it is
// kept until the first of those.
func (h *sharedHours) statusAt(zones *zoneCache, now time.Time) (hours.Status, error) {
	if m := h.memo.Load(); m != nil && !now.Before(m.from) && now.Before(m.until) {
		return m.st, nil
	}
	if err := h.parse(zones); err != nil {
		return hours.Status{}, err
	}
	st := h.sched.StatusAt(now)
	local := now.In(h.sched.Location)
	until := time.Date(local.Year(), local.Month(), local.Day()+1, 0, 0, 0, 0, h.sched.Location)
	for _, t := range []time.Time{st.Closes, st.NextOpen} {
		if !t.IsZero() && t.Before(until) {
			until = t
		}
	}
	h.memo.Store(&statusMemo{st: st, from: now, until: until})
	return st, nil
}

// storeCache is the stores table in memory, with a spatial index for the locator.
type storeCache struct {
	db     *pgxpool.Pool
	log    *slog.Logger
	zones  *zoneCache
	maxAge time.Duration

	mu      sync.RWMutex
	byID    map[string]*storeEntry
	bands   map[int32][]*storeEntry // latitude bands, each sorted by (lng, id)
	shared  map[string]*sharedHours // by zone and hours
	loaded  bool
	freshAt time.Time // the last full check began then
	dirty   uint64    // bumped when a full check is due before the next use
	checked uint64    // the dirty count the last full check covered

	refreshMu  sync.Mutex // one check at a time
	refreshing atomic.Bool

	// The cache's own background work (checks nobody waits for, re-reads on store events, the
	// NATS status listener) runs under life and ends with close: none of it may outlive the
	// service, whose pool and NATS connection are then being closed by their owner.
	life      context.Context
	stopLife  context.CancelFunc
	bgMu      sync.Mutex
	closed    bool
	bg        sync.WaitGroup
	sub       *nats.Subscription
	nc        *nats.Conn
	statusLis chan nats.Status
}

func newStoreCache(db *pgxpool.Pool, log *slog.Logger, zones *zoneCache, maxAge time.Duration) *storeCache {
	life, stop := context.WithCancel(context.Background())
	return &storeCache{db: db, log: log, zones: zones, maxAge: maxAge, life: life, stopLife: stop,
		byID: map[string]*storeEntry{}, bands: map[int32][]*storeEntry{}, shared: map[string]*sharedHours{}}
}

// enter registers a piece of background work; false once the cache is closed. The caller
// calls c.bg.Done when it ends.
func (c *storeCache) enter() bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed {
		return false
	}
	c.bg.Add(1)
	return true
}

// close stops the store events and the background work and waits for what is running. The
// cache still answers: it is then kept within maxAge by the checks its users wait for.
func (c *storeCache) close() {
	c.bgMu.Lock()
	if c.closed {
		c.bgMu.Unlock()
		return
	}
	c.closed = true
	sub, nc, lis := c.sub, c.nc, c.statusLis
	c.bgMu.Unlock()
	c.stopLife()
	if sub != nil {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			c.log.Warn("store cache: unsubscribe from store events", "err", err)
		}
	}
	if lis != nil {
		nc.RemoveStatusListener(lis) // closes lis: its goroutine ends
	}
	c.bg.Wait()
}

// bandDeg is the height of a latitude band of the spatial index: about 11 km, so a query of
// the default 10 km radius looks at three bands, and within each only the stores in its
// longitude range (binary search).
const bandDeg = 0.1

func bandOf(lat float64) int32 { return int32(math.Floor(lat / bandDeg)) }

func compareByLng(a, b *storeEntry) int {
	if c := cmp.Compare(a.row.lng, b.row.lng); c != 0 {
		return c
	}
	return cmp.Compare(a.row.id, b.row.id)
}

// ready makes sure the cache may be used: loaded, and checked against the table within
// maxAge. Past half of that it starts a check in the background.
func (c *storeCache) ready(ctx context.Context) error {
	c.mu.RLock()
	age, ok := time.Since(c.freshAt), c.loaded && c.dirty == c.checked
	c.mu.RUnlock()
	if ok && age < c.maxAge {
		if age >= c.maxAge/2 {
			c.refreshInBackground()
		}
		return nil
	}
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.mu.RLock()
	age, ok = time.Since(c.freshAt), c.loaded && c.dirty == c.checked
	c.mu.RUnlock()
	if ok && age < c.maxAge {
		return nil // another caller checked while this one waited
	}
	return c.refreshLocked(ctx)
}

// backgroundRefreshTimeout bounds a check nobody waits for.
const backgroundRefreshTimeout = 30 * time.Second

func (c *storeCache) refreshInBackground() {
	if !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	if !c.enter() {
		c.refreshing.Store(false)
		return
	}
	go func() {
		defer c.bg.Done()
		defer c.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(c.life, backgroundRefreshTimeout)
		defer cancel()
		c.refreshMu.Lock()
		defer c.refreshMu.Unlock()
		c.mu.RLock()
		due := time.Since(c.freshAt) >= c.maxAge/2
		c.mu.RUnlock()
		if !due {
			return
		}
		if err := c.refreshLocked(ctx); err != nil {
			// Debug: the first use past maxAge checks again and returns the error to its caller.
			c.log.Debug("background store cache check failed", "err", err)
		}
	}()
}

// invalidate makes the next use check the whole table first (events may have been missed).
func (c *storeCache) invalidate() {
	c.mu.Lock()
	c.dirty++
	c.mu.Unlock()
}

const storeVersionsSQL = `SELECT id, version, create_time FROM stores`

// storeStamp tells two reads of a store apart: a change moves its version on, and a store
// deleted and created again with the same id has another create time.
type storeStamp struct {
	version int64
	created time.Time
}

// is reports whether e is the store as st stamps it.
func (e *storeEntry) is(st storeStamp) bool {
	return e.row.version == st.version && e.row.createTime.Equal(st.created)
}

// stamps reads the stamps of the stores sql selects (id, version, create_time).
func (c *storeCache) stamps(ctx context.Context, sql string, args ...any) (map[string]storeStamp, error) {
	rows, err := c.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	out := map[string]storeStamp{}
	var (
		id string
		st storeStamp
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &st.version, &st.created}, func() error {
		out[id] = st
		return nil
	})
	return out, err
}

// refreshLocked loads every store, or, once loaded, compares every store's version with the
// cache's and re-reads those that differ. The caller holds refreshMu.
func (c *storeCache) refreshLocked(ctx context.Context) error {
	start := time.Now()
	c.mu.RLock()
	loaded, dirty := c.loaded, c.dirty
	c.mu.RUnlock()
	var (
		rows []*storeRow
		seen map[string]bool
	)
	if !loaded {
		var err error
		if rows, err = c.read(ctx, "SELECT "+storeColumns+" FROM stores"); err != nil {
			return fmt.Errorf("load stores: %w", err)
		}
		seen = make(map[string]bool, len(rows))
		for _, r := range rows {
			seen[r.id] = true
		}
	} else {
		current, err := c.stamps(ctx, storeVersionsSQL)
		if err != nil {
			return fmt.Errorf("check stores: %w", err)
		}
		var changed []string
		c.mu.RLock()
		for id, st := range current {
			if e := c.byID[id]; e == nil || !e.is(st) {
				changed = append(changed, id)
			}
		}
		c.mu.RUnlock()
		if len(changed) > 0 {
			if rows, err = c.read(ctx, "SELECT "+storeColumns+" FROM stores WHERE id = ANY($1)", changed); err != nil {
				return fmt.Errorf("re-read changed stores: %w", err)
			}
		}
		seen = make(map[string]bool, len(current))
		for id := range current {
			seen[id] = true
		}
	}
	entries := c.entries(rows, start)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		c.putLocked(e)
	}
	for id, e := range c.byID {
		if !seen[id] && e.putAt.Before(start) {
			c.removeLocked(e)
		}
	}
	if len(c.shared) > 2*len(c.byID)+1000 {
		c.compactSharedLocked()
	}
	c.loaded = true
	if start.After(c.freshAt) {
		c.freshAt = start
	}
	c.checked = dirty
	return nil
}

func (c *storeCache) read(ctx context.Context, sql string, args ...any) ([]*storeRow, error) {
	rows, err := c.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*storeRow, error) { return scanStore(r) })
}

// entries makes cache entries of rows read at or after at, sharing parsed hours.
func (c *storeCache) entries(rows []*storeRow, at time.Time) []*storeEntry {
	out := make([]*storeEntry, len(rows))
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range rows {
		out[i] = c.entryLocked(r, at)
	}
	return out
}

func (c *storeCache) entryLocked(r *storeRow, at time.Time) *storeEntry {
	key := r.timeZone + "\x00" + string(r.hoursRaw) + "\x00" + string(r.excRaw)
	h := c.shared[key]
	if h == nil {
		h = &sharedHours{timeZone: r.timeZone, hoursRaw: r.hoursRaw, excRaw: r.excRaw}
		c.shared[key] = h
	}
	r.hoursRaw, r.excRaw = h.hoursRaw, h.excRaw // one copy of identical hours
	return &storeEntry{row: r, hours: h, putAt: at}
}

// compactSharedLocked forgets parsed hours no store uses any more.
func (c *storeCache) compactSharedLocked() {
	used := map[*sharedHours]bool{}
	for _, e := range c.byID {
		used[e.hours] = true
	}
	for k, h := range c.shared {
		if !used[h] {
			delete(c.shared, k)
		}
	}
}

// putLocked keeps e unless the cache holds the same or a newer version of the same store (a
// store deleted and created again has another create time: the later read wins).
func (c *storeCache) putLocked(e *storeEntry) {
	old := c.byID[e.row.id]
	if old != nil {
		if old.row.createTime.Equal(e.row.createTime) && old.row.version >= e.row.version {
			return
		}
		c.removeLocked(old)
	}
	c.byID[e.row.id] = e
	b := bandOf(e.row.lat)
	band := c.bands[b]
	i, _ := slices.BinarySearchFunc(band, e, compareByLng)
	c.bands[b] = slices.Insert(band, i, e)
}

func (c *storeCache) removeLocked(e *storeEntry) {
	if c.byID[e.row.id] == e {
		delete(c.byID, e.row.id)
	}
	b := bandOf(e.row.lat)
	band := c.bands[b]
	if i, found := slices.BinarySearchFunc(band, e, compareByLng); found && band[i] == e {
		band = slices.Delete(band, i, i+1)
		if len(band) == 0 {
			delete(c.bands, b)
		} else {
			c.bands[b] = band
		}
	}
}

// put adds rows this process has just read or written (unless the cache holds a newer version)
// and returns entries of exactly these rows, for answers about them.
func (c *storeCache) put(rows ...*storeRow) []*storeEntry {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*storeEntry, len(rows))
	for i, r := range rows {
		out[i] = c.entryLocked(r, now)
		c.putLocked(out[i])
	}
	return out
}

// get returns the cached stores among ids (missing ones are absent from the map).
func (c *storeCache) get(ids []string) map[string]*storeEntry {
	out := make(map[string]*storeEntry, len(ids))
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, id := range ids {
		if e := c.byID[id]; e != nil {
			out[id] = e
		}
	}
	return out
}

// within returns the stores within radius metres of (lat, lng), nearest first.
func (c *storeCache) within(lat, lng, radius float64) []*candidate {
	bx := boundingBox(lat, lng, radius)
	ranges := [][2]float64{{bx.minLng, bx.maxLng}}
	if bx.wraps {
		ranges = [][2]float64{{bx.minLng, 180}, {-180, bx.maxLng}}
	}
	var out []*candidate
	c.mu.RLock()
	for b := bandOf(bx.minLat); b <= bandOf(bx.maxLat); b++ {
		band := c.bands[b]
		for _, rg := range ranges {
			i, _ := slices.BinarySearchFunc(band, rg[0], func(e *storeEntry, lng float64) int { return cmp.Compare(e.row.lng, lng) })
			for ; i < len(band) && band[i].row.lng <= rg[1]; i++ {
				r := band[i].row
				if r.lat < bx.minLat || r.lat > bx.maxLat {
					continue
				}
				if d := distanceMeters(lat, lng, r.lat, r.lng); d <= radius {
					out = append(out, &candidate{st: band[i], distance: d})
				}
			}
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b *candidate) int {
		if c := cmp.Compare(a.distance, b.distance); c != 0 {
			return c
		}
		return cmp.Compare(a.st.row.id, b.st.row.id)
	})
	return out
}

// recheckWithin compares the cache's stores within radius metres of (lat, lng) with the table
// and re-reads those that differ (or are gone), reporting whether any did: for a decision the
// cache's staleness would get wrong (a nearest-store reserve about to answer that none can take
// the order). Stores the cache does not have yet are left to its next whole check.
func (c *storeCache) recheckWithin(ctx context.Context, lat, lng, radius float64) (bool, error) {
	cands := c.within(lat, lng, radius)
	if len(cands) == 0 {
		return false, nil
	}
	ids := make([]string, len(cands))
	for i, cd := range cands {
		ids[i] = cd.st.row.id
	}
	now, err := c.stamps(ctx, storeVersionsSQL+` WHERE id = ANY($1)`, ids)
	if err != nil {
		return false, fmt.Errorf("check stores in the radius: %w", err)
	}
	var changed []string
	for _, cd := range cands {
		if st, ok := now[cd.st.row.id]; !ok || !cd.st.is(st) {
			changed = append(changed, cd.st.row.id)
		}
	}
	if len(changed) == 0 {
		return false, nil
	}
	return true, c.reload(ctx, changed)
}

// reload re-reads stores another copy changed (their event names them) and drops those gone.
func (c *storeCache) reload(ctx context.Context, ids []string) error {
	start := time.Now()
	rows, err := c.read(ctx, "SELECT "+storeColumns+" FROM stores WHERE id = ANY($1)", ids)
	if err != nil {
		return fmt.Errorf("re-read stores %v: %w", ids, err)
	}
	entries := c.entries(rows, start)
	c.mu.Lock()
	defer c.mu.Unlock()
	found := map[string]bool{}
	for _, e := range entries {
		c.putLocked(e)
		found[e.row.id] = true
	}
	for _, id := range ids {
		if e := c.byID[id]; e != nil && !found[id] && e.putAt.Before(start) {
			c.removeLocked(e)
		}
	}
	return nil
}

// storeEventReloadTimeout bounds the re-read an event causes.
const storeEventReloadTimeout = 5 * time.Second

// watch keeps the cache current with the store events of every copy (this one's too: they are
// harmless, the version check ignores what it already has). A plain core NATS subscription:
// every copy must hear every event, and nothing needs to survive a restart (the cache does not).
// A reconnect forces a full check before the next use: events sent meanwhile were missed.
func (c *storeCache) watch(nc *nats.Conn) error {
	if !c.enter() {
		return errors.New("store cache closed")
	}
	sub, err := nc.Subscribe(SubjectStoreEvents, c.onStoreEvent)
	if err != nil {
		c.bg.Done()
		return fmt.Errorf("subscribe to %s: %w", SubjectStoreEvents, err)
	}
	// A status listener, not the connection's reconnect handler: that is the owner's, and there
	// is only one.
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	c.bgMu.Lock()
	c.sub, c.nc, c.statusLis = sub, nc, status
	c.bgMu.Unlock()
	go func() {
		defer c.bg.Done()
		for st := range status { // closed by close, through RemoveStatusListener
			if st == nats.CLOSED {
				nc.RemoveStatusListener(status)
				return
			}
			c.invalidate()
			c.log.Info("NATS reconnected; store cache will be checked against the table before its next use (store events sent meanwhile were missed)")
		}
	}()
	// The server knows the subscription before the cache is first loaded, so no change after
	// that load can slip by unheard.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		nc.RemoveStatusListener(status)
		c.bgMu.Lock()
		c.sub, c.statusLis = nil, nil
		c.bgMu.Unlock()
		return fmt.Errorf("flush subscription to %s: %w", SubjectStoreEvents, err)
	}
	return nil
}

func (c *storeCache) onStoreEvent(m *nats.Msg) {
	id, err := StoreOfEvent(m.Subject, m.Data)
	if !c.enter() {
		return // closed: the subscription is going away
	}
	defer c.bg.Done()
	if err != nil || id == "" {
		c.log.Warn("unreadable store event; store cache will be checked in full before its next use", "subject", m.Subject, "err", err)
		c.invalidate()
		return
	}
	ctx, cancel := context.WithTimeout(c.life, storeEventReloadTimeout)
	defer cancel()
	if err := c.reload(ctx, []string{id}); err != nil {
		// Debug: the full check this forces returns the error to whoever needs the cache next.
		c.log.Debug("store event: re-read failed; store cache will be checked in full before its next use", "store_id", id, "err", err)
		c.invalidate()
		return
	}
	c.log.Debug("store changed elsewhere; cache updated", "store_id", id, "subject", m.Subject)
}
