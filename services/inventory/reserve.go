package inventory

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"

	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/tracing"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Reserves are coalesced: requests are queued per shard of stores (a store always maps to the
// same shard), and each shard has at most one transaction running, which takes everything
// queued behind it. A lone request therefore runs at once, alone; under load, the requests
// that arrived while one transaction ran share the next one: one lock of the union of their
// stock rows, in (store, SKU) order, one decision pass in arrival order against the locked
// levels, one pipelined round of writes, one commit. A hot SKU costs one row lock and one
// commit per batch instead of per order, and many stores' orders share a commit too.
//
// Correctness does not rest on the coalescing: the rows are locked, the decisions use the
// locked values, the stock UPDATE re-checks availability, a lock per order id (orderLocksSQL)
// makes a second transaction for an order wait for the first and see its holds, and the holds'
// unique (order, line) key stops a duplicate from a copy of an older build, which takes no such
// lock.

var (
	reserveBatchSize = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "handoff_inventory_reserve_batch_requests",
		Help:    "Reserve requests decided in one transaction.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	reservePhase = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_inventory_reserve_batch_seconds",
		Help:    "Time of each phase of a reserve transaction: begin (get a connection), lock (BEGIN, lock the orders and stock rows, read existing holds and the stores whose row the cache does not have), decide, write_commit (holds, levels, ledger, events, COMMIT).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	}, []string{"phase"})
	reserveQueueWait = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "handoff_inventory_reserve_queue_seconds",
		Help:    "Time a reserve request waited in its shard's queue before its transaction began.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
	})
	reserveOutcomes = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_inventory_reserve_outcomes_total",
		Help: "Reserve answers by outcome (reserved, insufficient_stock, store_unavailable, duplicate, error).",
	}, []string{"outcome"})
)

// reserveJob is one request waiting for its batch.
type reserveJob struct {
	req    *reserveRequest
	queued time.Time
	// span is the caller's span (tracing on): the stock events its holds write continue its
	// trace, though the batch runs on a context of its own.
	span trace.SpanContext
}

type reserveAnswer struct {
	res *inventoryv1.ReserveHoldsResponse
	err error
}

// reserver batches the reserves of each shard of stores: the requests arriving while a shard's
// transaction runs go together as its next one.
type reserver struct {
	s      *Service
	shards []*coalesce.Batcher[*reserveJob, *inventoryv1.ReserveHoldsResponse]
}

func newReserver(s *Service, shards, maxBatch int) *reserver {
	r := &reserver{s: s}
	for range shards {
		r.shards = append(r.shards, coalesce.New(maxBatch, r.run))
	}
	return r
}

func (r *reserver) shardOf(storeID string) *coalesce.Batcher[*reserveJob, *inventoryv1.ReserveHoldsResponse] {
	h := fnv.New32a()
	_, _ = h.Write([]byte(storeID))
	return r.shards[h.Sum32()%uint32(len(r.shards))]
}

// submit queues req on its store's shard and waits for the answer. A caller that gives up
// still has its request decided (and possibly committed) if its batch had begun: reserves are
// idempotent by order id, so its retry gets the same holds.
func (r *reserver) submit(ctx context.Context, req *reserveRequest) (*inventoryv1.ReserveHoldsResponse, error) {
	return r.shardOf(req.storeID).Do(ctx, &reserveJob{req: req, queued: time.Now(), span: tracing.SpanContext(ctx)})
}

// batchTimeout bounds one reserve transaction, independently of any one caller.
const batchTimeout = 10 * time.Second

// run decides one shard's batch in one transaction.
func (r *reserver) run(ctx context.Context, jobs []*reserveJob) []coalesce.Result[*inventoryv1.ReserveHoldsResponse] {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	out := make([]coalesce.Result[*inventoryv1.ReserveHoldsResponse], len(jobs))
	answers, err := r.s.reserveBatchWithRetry(ctx, jobs)
	if err != nil && len(jobs) > 1 {
		// Whatever broke the batch must not fail the innocent: decide each one alone.
		r.s.log.Warn("reserve batch failed; deciding its requests one by one", "requests", len(jobs), "err", err)
		for i, j := range jobs {
			a, err := r.s.reserveBatchWithRetry(ctx, []*reserveJob{j})
			if err != nil {
				a = []reserveAnswer{{err: err}}
			}
			out[i] = deliver(a[0])
		}
		return out
	}
	for i := range jobs {
		a := reserveAnswer{err: err}
		if err == nil {
			a = answers[i]
		}
		out[i] = deliver(a)
	}
	return out
}

// deliver counts an answer's outcome and hands it over.
func deliver(a reserveAnswer) coalesce.Result[*inventoryv1.ReserveHoldsResponse] {
	switch {
	case a.err != nil && rpcerr.IsStatus(a.err):
		reserveOutcomes.WithLabelValues("rejected").Inc()
	case a.err != nil:
		reserveOutcomes.WithLabelValues("error").Inc()
	default:
		reserveOutcomes.WithLabelValues(outcomeLabel(a.res.GetOutcome())).Inc()
	}
	return coalesce.Result[*inventoryv1.ReserveHoldsResponse]{Value: a.res, Err: a.err}
}

func outcomeLabel(o inventoryv1.ReserveOutcome) string {
	switch o {
	case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		return "reserved"
	case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK:
		return "insufficient_stock"
	case inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE:
		return "store_unavailable"
	}
	return "unknown"
}

// reserveBatchWithRetry runs a batch, again when it lost a race: a deadlock or serialization
// failure, or a duplicate order committed between our read of existing holds and our insert by
// a copy of an older build, which does not take the order locks (the rerun then finds those
// holds and returns them).
func (s *Service) reserveBatchWithRetry(ctx context.Context, jobs []*reserveJob) ([]reserveAnswer, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var answers []reserveAnswer
		answers, err = s.reserveBatch(ctx, jobs)
		if err == nil {
			return answers, nil
		}
		if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "holds_one_per_order_line" {
			txRetries.WithLabelValues("duplicate_order").Inc()
			continue
		}
		if !retryable(err) {
			return nil, err
		}
	}
	return nil, err
}

const (
	// changedStoresSQL reads, by primary key, the batch's stores whose row is not the one the
	// cache holds (given as id, version, create time; version 0 for a store it lacks): whether a
	// store takes orders is decided from the table, whatever the cache missed. Nearly always it
	// returns nothing.
	changedStoresSQL = `SELECT ` + storeColumns + ` FROM stores
		JOIN unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS c(cid, cversion, ccreated) ON id = c.cid
		WHERE version <> c.cversion OR create_time <> c.ccreated`
	// orderLocksSQL takes a transaction-scoped advisory lock per order id of the batch (keys
	// from lockKeys, sorted, each once; unnest gives them in array order), in the two-key
	// space, which the single-key locks of migrations and the demo load never share, under a
	// class of its own beside the outbox relay's.
	orderLocksSQL = `SELECT pg_advisory_xact_lock(hashtext('handoff.inventory.reserve'), k) FROM unnest($1::int4[]) AS k`
	// storeLocksSQL takes a shared transaction-scoped advisory lock per store of the batch (keys
	// from lockKeys), which SetStoreState takes exclusively (storeStateLockSQL): a change of a
	// store's state waits for the reserves that may have read the state before it to commit,
	// so its count of orders holding stock includes theirs, and a reserve that comes after it
	// reads the new state (its store read is a later statement, with a later snapshot).
	// Reserves do not wait for one another on it, and it writes nothing to the stores' rows.
	storeLocksSQL  = `SELECT pg_advisory_xact_lock_shared(hashtext('handoff.inventory.store'), k) FROM unnest($1::int4[]) AS k`
	batchHoldsSQL  = `SELECT ` + holdColumns + ` FROM holds WHERE order_id = ANY($1) ORDER BY order_id, line_id`
	insertHoldsSQL = `INSERT INTO holds (id, order_id, line_id, store_id, sku, quantity, state, expire_time, store_version)
		SELECT u.id, u.order_id, u.line_id, u.store_id, u.sku, u.quantity, 'open', u.expire_time, u.store_version
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::bigint[])
			AS u(id, order_id, line_id, store_id, sku, quantity, expire_time, store_version)`
)

// reserveBatch decides jobs in one transaction and returns their answers in order.
func (s *Service) reserveBatch(ctx context.Context, jobs []*reserveJob) ([]reserveAnswer, error) {
	began := time.Now()
	reserveBatchSize.Observe(float64(len(jobs)))
	for _, j := range jobs {
		reserveQueueWait.Observe(began.Sub(j.queued).Seconds())
	}
	var (
		keys     []stockKey
		storeIDs []string
		orderIDs []string
	)
	for _, j := range jobs {
		for _, t := range j.req.totals {
			keys = append(keys, stockKey{j.req.storeID, t.sku})
		}
		storeIDs = append(storeIDs, j.req.storeID)
		orderIDs = append(orderIDs, j.req.orderID)
	}
	keys = sortedKeys(keys)

	// Stores come from the cache, checked in the transaction: its (version, create time) of
	// each store goes with the locking reads, and a store whose row differs (paused or closed
	// by another copy whose event has not arrived or was lost, new hours, new at another copy,
	// or no such store) is read there and decided from the row.
	if err := s.stores.ready(ctx); err != nil {
		return nil, fmt.Errorf("reserve: %w", err)
	}
	stores := s.stores.get(storeIDs)
	var (
		checkIDs      []string
		checkVersions []int64
		checkCreated  []time.Time
	)
	for _, id := range storeIDs {
		if slices.Contains(checkIDs, id) {
			continue
		}
		var v int64 // no store has version 0: a store the cache lacks is always read
		var ct time.Time
		if e := stores[id]; e != nil {
			v, ct = e.row.version, e.row.createTime
		}
		checkIDs, checkVersions, checkCreated = append(checkIDs, id), append(checkVersions, v), append(checkCreated, ct)
	}

	// Two round trips in all: BEGIN with the locking reads, then the writes with COMMIT. The
	// decisions in between are made while the locks are held.
	conn, release, err := pgdb.Acquire(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("reserve: %w", err)
	}
	defer release()
	phase := time.Now()
	reservePhase.WithLabelValues("begin").Observe(phase.Sub(began).Seconds())

	// Lock the orders, then the stock rows, then (seeing everything committed before the locks
	// were granted) read any holds these orders already have, and the stores the cache does not
	// have as they are.
	//
	// The order locks come first. Without them two transactions for one order id with other
	// line ids at two stores (two copies, or two shards of one) lock disjoint stock rows, each
	// reads the holds before the other commits, the (order, line) key cannot tell, and the order
	// ends up holding both sets of lines. With them the second waits for the first to end and
	// its read of the holds finds the first's, which refuse other lines (existingAnswer).
	//
	// No deadlock: only reserves take these locks, all of them at the start of the transaction,
	// in ascending key order, before any row lock. So a transaction waiting for an order lock
	// holds nothing but order locks of smaller keys, and whoever holds the lock it waits for is
	// either further along in the same ascending order or past its order locks, waiting only on
	// row locks (stock, holds) whose holders (reserves past their order locks, commits,
	// releases, extensions, the sweeper, stock changes) never wait for an order lock.
	//
	// The store locks come next, shared, in ascending key order too. Their one exclusive taker,
	// SetStoreState, holds only its store's row lock (which no reserve takes) while it waits, so
	// it waits for reserves that hold the store's lock, and they never wait for it; a reserve
	// queued behind it holds order locks and store locks of smaller keys, which SetStoreState
	// never asks for.
	var b pgx.Batch
	lockStores, skus := keyArrays(keys)
	b.Queue("BEGIN")
	b.Queue(keyedPlansSQL)
	b.Queue(orderLocksSQL, lockKeys(orderIDs))
	b.Queue(storeLocksSQL, lockKeys(storeIDs))
	b.Queue(lockLevelsSQL, lockStores, skus)
	b.Queue(batchHoldsSQL, orderIDs)
	b.Queue(changedStoresSQL, checkIDs, checkVersions, checkCreated)
	br := conn.SendBatch(ctx, &b)
	levels, existing, read, err := readBatchState(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("lock for reserve: %w", err)
	}
	for _, e := range s.stores.put(read...) {
		if old := stores[e.row.id]; old != nil {
			s.log.Debug("store cache was behind the table; corrected by a reserve", "store_id", e.row.id,
				"cached_version", old.row.version, "version", e.row.version, "state", e.row.state)
		}
		stores[e.row.id] = e
	}
	now := time.Now()
	reservePhase.WithLabelValues("lock").Observe(now.Sub(phase).Seconds())
	phase = now

	var (
		answers = make([]reserveAnswer, len(jobs))
		placed  []*hold
		ms      []movement
		deltas  stockDeltas
		traced  map[stockKey]trace.SpanContext // with tracing on: the last job to change each row
	)
	if tracing.Enabled() {
		traced = map[stockKey]trace.SpanContext{}
	}
	for i, j := range jobs {
		r := j.req
		// Holds the order has, from before or from an earlier request of this batch (a retry
		// racing its first attempt), answer only the same lines. An order that has none is
		// decided on this request's own store and lines, whatever an earlier request of the
		// batch, for another store or other lines, was told.
		if hs := placedFor(placed, existing, r.orderID); len(hs) > 0 {
			answers[i] = existingAnswer(hs, r.lines)
			continue
		}
		st, ok := stores[r.storeID]
		if !ok {
			answers[i] = reserveAnswer{err: rpcerr.NotFound("store_id", r.storeID)}
			continue
		}
		if msg, err := s.unavailable(st, now); err != nil {
			return nil, err
		} else if msg != "" {
			answers[i] = reserveAnswer{res: &inventoryv1.ReserveHoldsResponse{
				Outcome: inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE, Message: msg}}
			continue
		}
		var short []*inventoryv1.Shortage
		for _, t := range r.totals {
			avail := int32(0)
			if l := levels[stockKey{r.storeID, t.sku}]; l != nil {
				avail = l.available()
			}
			if t.quantity > avail {
				short = append(short, &inventoryv1.Shortage{Sku: t.sku, Requested: t.quantity, Available: avail})
			}
		}
		if len(short) > 0 {
			answers[i] = reserveAnswer{res: &inventoryv1.ReserveHoldsResponse{
				Outcome:   inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK,
				Shortages: short,
				Message:   fmt.Sprintf("not enough stock at store %s: %s", r.storeID, describeShortages(short)),
			}}
			continue
		}
		var hs []*hold
		for _, line := range r.lines {
			k := stockKey{r.storeID, line.GetSku()}
			l := levels[k]
			l.reserved += line.GetQuantity()
			id, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("hold id: %w", err)
			}
			// The version the store was read at in this transaction: a closing that commits
			// after it has a later one, and covers this order (see Hold.store_version).
			h := &hold{id: id.String(), orderID: r.orderID, lineID: line.GetLineId(), key: k, quantity: line.GetQuantity(),
				state: holdOpen, expireTime: r.expire, storeVersion: st.row.version}
			hs = append(hs, h)
			deltas.add(k, 0, line.GetQuantity())
			if traced != nil {
				traced[k] = j.span
			}
			ms = append(ms, movement{key: k, kind: kindHoldPlaced, reservedDelta: line.GetQuantity(), after: *l,
				actor: actorHolds, orderID: r.orderID, holdID: h.id})
		}
		placed = append(placed, hs...)
		answers[i] = reserveAnswer{res: reservedResponse(hs)}
	}
	phase = time.Now()
	reservePhase.WithLabelValues("decide").Observe(phase.Sub(now).Seconds())
	if len(placed) == 0 {
		return answers, nil // nothing to write; the deferred rollback ends the transaction
	}

	p := s.newPipeline()
	p.queueHolds(placed)
	p.queueDeltas(&deltas)
	p.queueMovements(ms)
	var traceOf func(stockKey) string
	if traced != nil {
		// A row changed by several orders of the batch has one event: it goes on the trace of
		// the last of them.
		traceOf = func(k stockKey) string { return tracing.TraceParent(tracing.WithSpanContext(ctx, traced[k])) }
	}
	if err := p.queueLevelEvents(&deltas, levels, func(stockKey) string { return kindHoldPlaced }, traceOf, now); err != nil {
		return nil, err
	}
	if err := p.commit(ctx); err != nil {
		return nil, err
	}
	if err := p.run(ctx, conn); err != nil {
		return nil, fmt.Errorf("write holds: %w", err)
	}
	reservePhase.WithLabelValues("write_commit").Observe(time.Since(phase).Seconds())
	return answers, nil
}

func readBatchState(br pgx.BatchResults) (map[stockKey]*level, map[string][]*hold, []*storeRow, error) {
	for range 4 { // BEGIN, the plan settings, the order locks, the store locks
		if _, err := br.Exec(); err != nil {
			return nil, nil, nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	levels, err := scanLevels(rows)
	if err != nil {
		return nil, nil, nil, err
	}
	rows, err = br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	hs, err := scanHolds(rows)
	if err != nil {
		return nil, nil, nil, err
	}
	existing := map[string][]*hold{}
	for _, h := range hs {
		existing[h.orderID] = append(existing[h.orderID], h)
	}
	if rows, err = br.Query(); err != nil {
		return nil, nil, nil, err
	}
	stores, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*storeRow, error) { return scanStore(r) })
	if err != nil {
		return nil, nil, nil, err
	}
	return levels, existing, stores, nil
}

// lockKeys returns the advisory lock keys of ids, order or store ids (orderLocksSQL,
// storeLocksSQL), sorted, each once: every transaction takes them in the same order. Two ids
// may share a key; they then only wait for each other, never deadlock.
func lockKeys(ids []string) []int32 {
	keys := make([]int32, 0, len(ids))
	for _, id := range ids {
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		keys = append(keys, int32(h.Sum32()))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func (p *pipeline) queueHolds(hs []*hold) {
	n := len(hs)
	ids, orders, lines, stores, skus := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	qty, exp, versions := make([]int32, n), make([]time.Time, n), make([]int64, n)
	for i, h := range hs {
		ids[i], orders[i], lines[i], stores[i], skus[i] = h.id, h.orderID, h.lineID, h.key.store, h.key.sku
		qty[i], exp[i], versions[i] = h.quantity, h.expireTime, h.storeVersion
	}
	p.execRows(int64(n), "insert holds", insertHoldsSQL, ids, orders, lines, stores, skus, qty, exp, versions)
}

// unavailable says why a store takes no orders now ("" when it does).
func (s *Service) unavailable(st *storeEntry, now time.Time) (string, error) {
	switch st.row.state {
	case statePaused, stateClosed:
		msg := fmt.Sprintf("store %s is %s", st.row.id, st.row.state)
		if st.row.stateReason != "" {
			msg += ": " + st.row.stateReason
		}
		return msg, nil
	}
	status, err := s.storeStatus(st, now)
	if err != nil {
		return "", err
	}
	if st.lastOrdersPassed(status, now) {
		return fmt.Sprintf("store %s closes at %s, within its %s prep time: it takes no more orders today",
			st.row.id, status.Closes.In(st.hours.sched.Location).Format("15:04 MST"), time.Duration(st.row.prepSec)*time.Second), nil
	}
	if status.Open {
		return "", nil
	}
	msg := fmt.Sprintf("store %s is outside its opening hours", st.row.id)
	if !status.NextOpen.IsZero() {
		msg += "; it opens " + status.NextOpen.In(st.hours.sched.Location).Format("Mon 2 Jan 15:04 MST")
	}
	return msg, nil
}

// placedFor returns orderID's holds in a reserve batch: those it had, or those the batch placed.
func placedFor(placed []*hold, existing map[string][]*hold, orderID string) []*hold {
	if hs := existing[orderID]; len(hs) > 0 {
		return hs
	}
	var out []*hold
	for _, h := range placed {
		if h.orderID == orderID {
			out = append(out, h)
		}
	}
	return out
}
