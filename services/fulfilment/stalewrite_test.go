package fulfilment

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// staleWriteEnv is a schema of fulfilment's with one CONFIRMED order in it.
type staleWriteEnv struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	id   string
	now  time.Time
}

func newStaleWriteEnv(t *testing.T, name string) *staleWriteEnv {
	e := &staleWriteEnv{t: t, ctx: t.Context(), id: "order-" + name}
	e.pool = testenv.Pool(t, testenv.UniqueSchema(t, name), Migrations())
	e.now = time.Now().UTC().Truncate(time.Microsecond)
	o := &order{
		ID: e.id, CustomerID: "c1", IdempotencyKey: "k1", CartID: "cart1", State: domain.Confirmed,
		StoreID: "s1", StoreName: "Store 1", Currency: "USD", Version: 2,
		Lines:        []orderLine{{ID: "l1", SKU: "LATTE-16", Product: "Latte", Quantity: 1, UnitMinor: 450}},
		ReadyBy:      e.now.Add(10 * time.Minute),
		PickupWindow: time.Hour, HoldDeadline: e.now.Add(2 * time.Hour),
		CreateTime: e.now, UpdateTime: e.now,
	}
	var w writeBatch
	if err := insertOrder(e.ctx, &w, o, e.now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := insertHistory(e.ctx, &w, o.ID, []historyEntry{
		{Seq: 1, To: domain.Pending, Actor: systemActor("saga"), Time: e.now},
		{Seq: 2, From: domain.Pending, To: domain.Confirmed, Event: "confirmed", Actor: systemActor("saga"), Time: e.now},
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.sendAlone(e.ctx, e.pool); err != nil {
		t.Fatal(err)
	}
	return e
}

// read reads the order as a writer does before deciding a change.
func (e *staleWriteEnv) read() *order {
	e.t.Helper()
	o, err := readOrder(e.ctx, e.pool, e.id, 0)
	if err != nil || o == nil {
		e.t.Fatalf("read order %s: %v, %v", e.id, o, err)
	}
	return o
}

// accept makes o PREPARING as staff's AcceptOrder does, and queues its row and history in w.
func (e *staleWriteEnv) accept(w execer, o *order) {
	e.t.Helper()
	c, err := o.step(domain.Accept, &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_STAFF, Id: "barista"}, "accepted", "", e.now)
	if err != nil {
		e.t.Fatal(err)
	}
	o.AcceptTime = e.now
	if err := updateOrder(e.ctx, w, o, e.now.Add(time.Hour)); err != nil {
		e.t.Fatal(err)
	}
	if err := insertHistory(e.ctx, w, o.ID, []historyEntry{c.entry}); err != nil {
		e.t.Fatal(err)
	}
}

// timersRound changes o as a timer round that fires nothing does (its hold deadline extended,
// timer_at moved on: no transition, no history entry) and queues its row in w.
func (e *staleWriteEnv) timersRound(w execer, o *order) {
	e.t.Helper()
	o.HoldDeadline = o.HoldDeadline.Add(time.Hour)
	if err := updateOrder(e.ctx, w, o, e.now.Add(2*time.Hour)); err != nil {
		e.t.Fatal(err)
	}
}

// wantRefused checks err is updateOrder's refusal of a stale copy: 40001, naming the order.
func (e *staleWriteEnv) wantRefused(what string, err error) {
	e.t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !pgdb.IsSerializationFailure(err) || !strings.Contains(pe.Message, e.id) {
		e.t.Fatalf("%s: %v; want a serialization failure (40001) naming order %s", what, err, e.id)
	}
}

// wantRow checks the row and its history are as staff's acceptance left them.
func (e *staleWriteEnv) wantRow(what string, state domain.State, version, writes int64) {
	e.t.Helper()
	var (
		s               int16
		v, wr, lastSeq  int64
		lastTo, entries int64
		holdDeadline    time.Time
	)
	if err := e.pool.QueryRow(e.ctx, `SELECT o.state, o.version, o.writes, o.hold_deadline,
			(SELECT max(seq) FROM order_history WHERE order_id = o.id),
			(SELECT to_state FROM order_history WHERE order_id = o.id ORDER BY seq DESC LIMIT 1),
			(SELECT count(*) FROM order_history WHERE order_id = o.id)
		FROM orders o WHERE id = $1`, e.id).Scan(&s, &v, &wr, &holdDeadline, &lastSeq, &lastTo, &entries); err != nil {
		e.t.Fatal(err)
	}
	if domain.State(s) != state || v != version || wr != writes || lastSeq != version || domain.State(lastTo) != state || entries != version {
		e.t.Fatalf("%s: row state %s version %d writes %d, history %d entries up to %d (%s); want state %s version %d writes %d and its history with it",
			what, domain.StateName(domain.State(s)), v, wr, entries, lastSeq, domain.StateName(domain.State(lastTo)),
			domain.StateName(state), version, writes)
	}
}

// The timers/staff race: a timer round that only moves timer_at or extends holds (no
// transition, no history entry) read the order CONFIRMED; staff accepted it meanwhile
// (PREPARING, history and all). The round's copy must not be written over the acceptance:
// without the check of writes it was, silently, and the order's row said CONFIRMED while its
// history said PREPARING (a mutation test's finding, with the round's FOR UPDATE SKIP LOCKED
// removed; here the stale copy is written directly, as such a round would). The write fails
// with 40001 naming the order, and the row keeps the acceptance.
func TestAStaleCopyOfAnOrderIsNotWrittenOverANewerWrite(t *testing.T) {
	e := newStaleWriteEnv(t, "stale_copy")
	timers, staff := e.read(), e.read()

	var w writeBatch
	e.accept(&w, staff)
	if err := w.sendAlone(e.ctx, e.pool); err != nil {
		t.Fatalf("staff's acceptance: %v", err)
	}
	e.wantRow("after the acceptance", domain.Preparing, 3, 1)

	// Alone, as a write batch (an implicit transaction).
	w = writeBatch{}
	e.timersRound(&w, timers)
	err := w.sendAlone(e.ctx, e.pool)
	e.wantRow("after the stale copy sent alone", domain.Preparing, 3, 1)
	e.wantRefused("the timer round's stale copy, sent alone", err)

	// In a transaction, as the timer round sends it: the transaction fails.
	timers = e.read()
	timers.Writes = 0 // as read before the acceptance
	err = pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
		var w writeBatch
		e.timersRound(&w, timers)
		return w.sendIn(e.ctx, tx)
	})
	e.wantRefused("the timer round's stale copy, in its transaction", err)
	e.wantRow("after the stale copy in a transaction", domain.Preparing, 3, 1)

	// A stale copy with a transition of its own (a cancellation decided on CONFIRMED): nothing
	// of its batch is written, its history entry included.
	cancel := e.read()
	cancel.State, cancel.Version, cancel.Writes = domain.Confirmed, 2, 0 // as read before the acceptance
	c, err := cancel.step(domain.CustomerCancel, &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: "c1"}, "changed my mind", "", e.now)
	if err != nil {
		t.Fatal(err)
	}
	w = writeBatch{}
	if err := updateOrder(e.ctx, &w, cancel, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := insertHistory(e.ctx, &w, cancel.ID, []historyEntry{c.entry}); err != nil {
		t.Fatal(err)
	}
	e.wantRefused("a stale cancellation", w.sendAlone(e.ctx, e.pool))
	e.wantRow("after the stale cancellation", domain.Preparing, 3, 1)

	// The copy the acceptance left in memory is the row as written: it writes again.
	w = writeBatch{}
	e.timersRound(&w, staff)
	if err := w.sendAlone(e.ctx, e.pool); err != nil {
		t.Fatalf("a write of the acceptance's own copy: %v", err)
	}
	e.wantRow("after a write of the current copy", domain.Preparing, 3, 2)
	// And a copy read afresh does too.
	w = writeBatch{}
	e.timersRound(&w, e.read())
	if err := w.sendAlone(e.ctx, e.pool); err != nil {
		t.Fatalf("a write of a copy read afresh: %v", err)
	}
	e.wantRow("after a write of a fresh copy", domain.Preparing, 3, 3)
}

// A write that waits for another transaction's lock on the row checks writes again on the row
// that one commits (READ COMMITTED re-reads an updated row before updating it): a stale copy
// queued behind a newer write fails once that commits, instead of overwriting it.
func TestAStaleCopyWaitingForTheRowLockFailsOnceTheNewerWriteCommits(t *testing.T) {
	e := newStaleWriteEnv(t, "stale_wait")
	timers := e.read()

	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(e.ctx) }()
	staff, err := queryOrders(e.ctx, tx, `SELECT `+orderColumns+` FROM orders WHERE id = $1 FOR UPDATE`, e.id)
	if err != nil || len(staff) != 1 {
		t.Fatalf("lock the order: %v, %v", staff, err)
	}
	e.accept(tx, staff[0])

	done := make(chan error, 1)
	go func() {
		var w writeBatch
		e.timersRound(&w, timers)
		done <- w.sendAlone(e.ctx, e.pool)
	}()
	// The stale write is waiting for the row's lock.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the stale write did not wait for the row's lock: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the stale write never waited for the row's lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := tx.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.wantRefused("the stale copy that waited for the lock", <-done)
	e.wantRow("after the stale copy that waited", domain.Preparing, 3, 1)
}

// Refusing an extension (refuseExtensionsSQL) writes the order's row too, outside updateOrder:
// it counts its write, so a copy read before it is not written over it.
func TestARefusedExtensionCountsItsWrite(t *testing.T) {
	e := newStaleWriteEnv(t, "stale_refused")
	before := e.read()
	var w writeBatch
	refuseExtensions(e.ctx, &w, []effect{{orderID: e.id, deadline: before.HoldDeadline}})
	if err := w.sendAlone(e.ctx, e.pool); err != nil {
		t.Fatal(err)
	}
	after := e.read()
	if after.Writes != before.Writes+1 || !after.HoldDeadline.Before(before.HoldDeadline) {
		t.Fatalf("after a refused extension: writes %d, hold deadline %s; want writes %d and the deadline taken as now",
			after.Writes, after.HoldDeadline, before.Writes+1)
	}
	w = writeBatch{}
	e.timersRound(&w, before)
	e.wantRefused("a copy read before the refused extension", w.sendAlone(e.ctx, e.pool))
}
