package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/outbox"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// stockKey names one stock row.
type stockKey struct{ store, sku string }

func compareKeys(a, b stockKey) int {
	if c := cmp.Compare(a.store, b.store); c != 0 {
		return c
	}
	return cmp.Compare(a.sku, b.sku)
}

// sortedKeys returns the distinct keys in lock order.
func sortedKeys(keys []stockKey) []stockKey {
	out := slices.Clone(keys)
	slices.SortFunc(out, compareKeys)
	return slices.Compact(out)
}

// level is a stock row's numbers and version (see migration 00005). A level read under the
// row's lock keeps the version it was read at; the transaction leaves the row at version+1.
type level struct {
	onHand, reserved, safety int32
	version                  int64
	// counted and countShort are when the row's last count was taken (nil: never) and the
	// units it could not take off (nil: not known, a count from before migration 00010), read
	// only where holds are committed.
	counted    *time.Time
	countShort *int32
}

// available is what may still be promised: on hand - reserved - safety stock, not below 0.
func (l level) available() int32 { return max(0, l.onHand-l.reserved-l.safety) }

func (l level) proto(k stockKey, at time.Time) *inventoryv1.StockLevel {
	return &inventoryv1.StockLevel{StoreId: k.store, Sku: k.sku, OnHand: l.onHand, Reserved: l.reserved,
		SafetyStock: l.safety, Available: l.available(), UpdateTime: timestamp(at), Version: l.version}
}

// lockLevelsSQL locks stock rows in (store_id, sku) order: every transaction that changes
// several rows locks them this way (reserves, releases, commits, the sweeper), so two of them
// can never wait for each other in a cycle.
const lockLevelsSQL = `SELECT st.store_id, st.sku, st.on_hand, st.reserved, st.safety_stock, st.version
	FROM stock st JOIN unnest($1::text[], $2::text[]) AS k(store_id, sku) ON st.store_id = k.store_id AND st.sku = k.sku
	ORDER BY st.store_id, st.sku
	FOR UPDATE OF st`

func keyArrays(keys []stockKey) (stores, skus []string) {
	stores, skus = make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		stores[i], skus[i] = k.store, k.sku
	}
	return stores, skus
}

func scanLevels(rows pgx.Rows) (map[stockKey]*level, error) { return scanLevelsOf(rows, false) }

// scanLevelsOf scans levels; withCount: each row ends with count_time and count_short.
func scanLevelsOf(rows pgx.Rows, withCount bool) (map[stockKey]*level, error) {
	out := map[stockKey]*level{}
	for rows.Next() {
		var k stockKey
		var l level
		dest := []any{&k.store, &k.sku, &l.onHand, &l.reserved, &l.safety, &l.version}
		if withCount {
			dest = append(dest, &l.counted, &l.countShort)
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return nil, err
		}
		out[k] = &l
	}
	rows.Close()
	return out, rows.Err()
}

// lockLevels locks the rows of keys (sorted, distinct) and returns their levels; a key
// without a row is absent from the map.
func lockLevels(ctx context.Context, tx pgx.Tx, keys []stockKey) (map[stockKey]*level, error) {
	stores, skus := keyArrays(keys)
	rows, err := tx.Query(ctx, lockLevelsSQL, stores, skus)
	if err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	levels, err := scanLevels(rows)
	if err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	return levels, nil
}

// Stored movement kinds.
var movementKinds = map[string]inventoryv1.MovementKind{
	"set":            inventoryv1.MovementKind_MOVEMENT_KIND_SET,
	"delivery":       inventoryv1.MovementKind_MOVEMENT_KIND_DELIVERY,
	"count":          inventoryv1.MovementKind_MOVEMENT_KIND_COUNT,
	"in_store_sale":  inventoryv1.MovementKind_MOVEMENT_KIND_IN_STORE_SALE,
	"return":         inventoryv1.MovementKind_MOVEMENT_KIND_RETURN,
	"damage":         inventoryv1.MovementKind_MOVEMENT_KIND_DAMAGE,
	"hold_placed":    inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_PLACED,
	"hold_released":  inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_RELEASED,
	"hold_committed": inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_COMMITTED,
}

const (
	kindSet           = "set"
	kindCount         = "count" // a correction found by counting: a count too (see occurrence.go)
	kindHoldPlaced    = "hold_placed"
	kindHoldReleased  = "hold_released"
	kindHoldCommitted = "hold_committed"
	kindInStoreSale   = "in_store_sale"
)

// Stored actor kinds.
var actorKinds = map[commonv1.ActorKind]string{
	commonv1.ActorKind_ACTOR_KIND_CUSTOMER: "customer",
	commonv1.ActorKind_ACTOR_KIND_STAFF:    "staff",
	commonv1.ActorKind_ACTOR_KIND_ADMIN:    "admin",
	commonv1.ActorKind_ACTOR_KIND_SYSTEM:   "system",
	commonv1.ActorKind_ACTOR_KIND_VENDOR:   "vendor",
}

func actorKindProto(s string) commonv1.ActorKind {
	for k, v := range actorKinds {
		if v == s {
			return k
		}
	}
	return commonv1.ActorKind_ACTOR_KIND_UNSPECIFIED
}

// Actors of the changes inventory makes by itself.
var (
	actorHolds   = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "inventory.holds"}
	actorSweeper = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "inventory.sweeper"}
	actorDemo    = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_SYSTEM, Id: "inventory.demo"}
)

// movement is one ledger row to write.
type movement struct {
	key                        stockKey
	kind                       string
	onHandDelta, reservedDelta int32
	after                      level
	actor                      *commonv1.Actor
	note, orderID, holdID      string
	// requested is the on-hand change asked, when it differs from the one made (a late sale
	// cut short); 0 otherwise.
	requested int32
	// occurred is when it happened, when that was not now (a commit's hand-over).
	occurred *time.Time
}

const insertMovementsSQL = `INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta, on_hand_after,
		reserved_after, safety_stock_after, actor_kind, actor_id, note, order_id, hold_id, stock_version, requested, occur_time)
	SELECT u.store_id, u.sku, u.kind, u.dh, u.dr, u.oh, u.rs, u.ss, u.ak, u.ai, u.note, u.order_id, NULLIF(u.hold_id, '')::uuid, u.sv,
		NULLIF(u.rq, 0), u.oc
	FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::int[], $8::int[],
		$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::int[], $16::timestamptz[])
		AS u(store_id, sku, kind, dh, dr, oh, rs, ss, ak, ai, note, order_id, hold_id, sv, rq, oc)`

// queueMovements adds one INSERT of every movement in ms to p (hold movements: no
// idempotency key, no returned ids).
func (p *pipeline) queueMovements(ms []movement) {
	if len(ms) == 0 {
		return
	}
	n := len(ms)
	var (
		stores, skus, kinds, aks, ais, notes, orders, holds = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		dh, dr, oh, rs, ss, rq = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		sv                     = make([]int64, n)
		oc                     = make([]*time.Time, n)
	)
	for i, m := range ms {
		stores[i], skus[i], kinds[i] = m.key.store, m.key.sku, m.kind
		dh[i], dr[i], oh[i], rs[i], ss[i] = m.onHandDelta, m.reservedDelta, m.after.onHand, m.after.reserved, m.after.safety
		aks[i], ais[i] = actorKinds[m.actor.GetKind()], m.actor.GetId()
		notes[i], orders[i], holds[i] = m.note, m.orderID, m.holdID
		sv[i] = m.after.version + 1 // the row's version once this transaction has written it
		rq[i], oc[i] = m.requested, m.occurred
	}
	p.execRows(int64(n), "insert movements", insertMovementsSQL,
		stores, skus, kinds, dh, dr, oh, rs, ss, aks, ais, notes, orders, holds, sv, rq, oc)
}

// applyDeltasSQL changes many stock rows at once. The last condition refuses, as a defence
// in depth, to raise reserved past what may be promised: the caller decided under the row
// lock, so a row it skips means a bug, and the row count check (execRows, on the server)
// aborts the transaction before its COMMIT.
const applyDeltasSQL = `UPDATE stock st SET on_hand = st.on_hand + d.dh, reserved = st.reserved + d.dr, update_time = now(),
		version = st.version + 1
	FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]) AS d(store_id, sku, dh, dr)
	WHERE st.store_id = d.store_id AND st.sku = d.sku
	  AND (d.dr <= 0 OR st.on_hand - st.reserved - st.safety_stock >= d.dr)`

// stockDeltas sums changes per stock row, remembering the order rows were first changed.
type stockDeltas struct {
	order []stockKey
	delta map[stockKey]*[2]int32 // on hand, reserved
}

func (d *stockDeltas) add(k stockKey, onHand, reserved int32) {
	if d.delta == nil {
		d.delta = map[stockKey]*[2]int32{}
	}
	v, ok := d.delta[k]
	if !ok {
		v = new([2]int32)
		d.delta[k] = v
		d.order = append(d.order, k)
	}
	v[0] += onHand
	v[1] += reserved
}

func (p *pipeline) queueDeltas(d *stockDeltas) {
	if len(d.order) == 0 {
		return
	}
	keys := sortedKeys(d.order)
	stores, skus := keyArrays(keys)
	dh, dr := make([]int32, len(keys)), make([]int32, len(keys))
	for i, k := range keys {
		dh[i], dr[i] = d.delta[k][0], d.delta[k][1]
	}
	if p.dropDelta && len(keys) > 0 {
		// Failpoint (tests only): one row fewer is written than was decided.
		stores, skus, dh, dr = stores[1:], skus[1:], dh[1:], dr[1:]
	}
	p.execRows(int64(len(keys)), "update stock levels", applyDeltasSQL, stores, skus, dh, dr)
}

// queueLevelEvents publishes StockLevelChanged for every changed row, with its final level and
// version; kinds says what changed each row (the last change, when the transaction made
// several). One event per row and transaction: two with one version would leave a reader that
// orders by version unable to tell which came last. traceOf, when not nil, gives each row's
// event the traceparent of the work that changed it (else the transaction's context's).
func (p *pipeline) queueLevelEvents(d *stockDeltas, levels map[stockKey]*level, kinds func(stockKey) string, traceOf func(stockKey) string, at time.Time) error {
	for _, k := range d.order {
		after := *levels[k]
		after.version++
		ev := &inventoryv1.StockLevelChanged{Level: after.proto(k, at), Kind: movementKinds[kinds(k)]}
		tp := ""
		if traceOf != nil {
			tp = traceOf(k)
		}
		if err := p.enqueue(SubjectStockChanged, ev, "", tp); err != nil {
			return err
		}
	}
	return nil
}

// pipeline collects writes and sends them to Postgres in one round trip (a pgx batch), then
// checks each result. A transaction that writes holds, levels, ledger rows and events pays
// for one network round trip, not one per statement; its events are one statement too
// (outbox.EnqueueBatch), however many there are.
type pipeline struct {
	batch     pgx.Batch
	checks    []func(pgconn.CommandTag) error
	events    []outbox.Event
	committed bool
	dropDelta bool   // failpoint, tests only: see Service.failDropDelta
	schema    string // the service's schema, for the outbox (its statements are only queued)
}

// newPipeline starts the writes of one transaction.
func (s *Service) newPipeline() pipeline {
	return pipeline{dropDelta: s.failDropDelta.Load(), schema: s.schema}
}

func (p *pipeline) exec(check func(pgconn.CommandTag) error, sql string, args ...any) {
	p.batch.Queue(sql, args...)
	p.checks = append(p.checks, check)
}

// execRows queues a write (INSERT, UPDATE or DELETE without RETURNING) that must change
// exactly n rows. The server checks the count, inside the transaction: the batch usually ends
// with COMMIT, and a check made here on reading the results would come after the commit, a
// half-done change already durable. inventory_assert_rows (migration 4) raises instead, which
// aborts the transaction, so the queued COMMIT never runs.
func (p *pipeline) execRows(n int64, what, sql string, args ...any) {
	k := len(args)
	checked := fmt.Sprintf("WITH w AS (%s RETURNING 1) SELECT inventory_assert_rows(count(*), $%d::bigint, $%d::text) FROM w", sql, k+1, k+2)
	p.exec(expectTag("SELECT 1"), checked, append(slices.Clip(args), n, what)...)
}

// enqueue adds an outbox event (with a fresh time-ordered id when eventID is ""), of the trace
// traceParent names ("": the transaction's context's); the events are written, in order, by
// one statement queued at commit (or at run).
func (p *pipeline) enqueue(subject string, msg proto.Message, eventID, traceParent string) error {
	if eventID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("event id: %w", err)
		}
		eventID = id.String()
	}
	p.events = append(p.events, outbox.Event{ID: eventID, Subject: subject, Msg: msg, TraceParent: traceParent})
	return nil
}

// queueEvents queues the INSERT of the events enqueued so far, through the outbox package,
// so its rules (subject check, NOTIFY) apply unchanged.
func (p *pipeline) queueEvents(ctx context.Context) error {
	if len(p.events) == 0 {
		return nil
	}
	before := p.batch.Len()
	if err := outbox.EnqueueBatch(ctx, outbox.InSchema(queuedTx{batch: &p.batch}, p.schema), p.events); err != nil {
		return err
	}
	for range p.batch.Len() - before {
		p.checks = append(p.checks, nil)
	}
	p.events = nil
	return nil
}

// commit queues the events and COMMIT: the pipeline then ends the transaction.
func (p *pipeline) commit(ctx context.Context) error {
	if err := p.queueEvents(ctx); err != nil {
		return err
	}
	p.exec(expectTag("COMMIT"), "COMMIT")
	p.committed = true
	return nil
}

// batchSender is a transaction or a connection with a transaction open.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// run sends the batch inside tx and checks every result.
func (p *pipeline) run(ctx context.Context, tx batchSender) error {
	if len(p.events) > 0 {
		if p.committed {
			return fmt.Errorf("pipeline: %d events enqueued after COMMIT", len(p.events)) // a bug: they would be lost
		}
		if err := p.queueEvents(ctx); err != nil {
			return err
		}
	}
	if p.batch.Len() == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, &p.batch)
	for _, check := range p.checks {
		tag, err := br.Exec()
		if err == nil && check != nil {
			err = check(tag)
		}
		if err != nil {
			_ = br.Close()
			return err
		}
	}
	return br.Close()
}

func expectTag(want string) func(pgconn.CommandTag) error {
	return func(tag pgconn.CommandTag) error {
		if tag.String() != want {
			return fmt.Errorf("%s answered %q", want, tag.String())
		}
		return nil
	}
}

// queuedTx lets outbox.EnqueueBatch add its statement to a pgx batch instead of running it
// at once: Exec queues. The embedded Tx is nil on purpose: should the outbox package ever use
// another method, the tests fail at once instead of the statement running out of order.
type queuedTx struct {
	pgx.Tx
	batch *pgx.Batch
}

func (q queuedTx) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.batch.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// Postgres error codes the service handles.
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

// txRetries counts transactions run again after losing a race. Deadlocks should never be
// among them (every transaction locks stock rows in one order); the tests check that.
var txRetries = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "handoff_inventory_transaction_retries_total",
	Help: "Transactions run again after losing a race, by reason (deadlock, serialization, duplicate_order).",
}, []string{"reason"})

// retryable reports a transaction that lost a race and may simply run again, counting it.
func retryable(err error) bool {
	switch code, _ := pgCode(err); code {
	case codeDeadlockDetected:
		txRetries.WithLabelValues("deadlock").Inc()
		return true
	case codeSerializationFailure:
		txRetries.WithLabelValues("serialization").Inc()
		return true
	}
	return false
}

// inTx runs fn in a transaction planned as keyedPlansSQL says, again (up to 3 times) when it
// lost a race.
func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	keyed := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, keyedPlansSQL); err != nil {
			return fmt.Errorf("plan settings: %w", err)
		}
		return fn(tx)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = pgx.BeginFunc(ctx, s.db, keyed)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return err
}
