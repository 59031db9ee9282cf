package fulfilment_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// blocking reports whether another session waits for a lock the session pid holds.
func (e *env) blocking(pid uint32) bool {
	var waiting bool
	if err := e.pool.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)))`,
		int32(pid)).Scan(&waiting); err != nil {
		e.t.Fatal(err)
	}
	return waiting
}

// Staff at work on many orders at once: their changes share transactions, and each still gets
// exactly its own outcome: the legal ones are made once, the refused ones change nothing, a
// wrong pickup code is counted, two changes of one order are made one after the other.
func TestConcurrentChangesOfOrdersAreMadeTogetherEachWithItsOwnOutcome(t *testing.T) {
	// Transactions that lock orders for a change.
	locks := &batchTracer{match: func(sql string) bool {
		return strings.Contains(sql, "FROM orders WHERE id") && strings.Contains(sql, "FOR UPDATE")
	}}
	e := newEnv(t, envOptions{config: ownPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = locks })})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.62, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "SKU-1", 100)
	const n = 24
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i] = e.placeAt("s1", fmt.Sprint("shopper-", i), "k", "SKU-1", 1).GetId() })
	}
	wg.Wait()

	// all runs the calls at once and returns their errors in order.
	all := func(calls []func() error) []error {
		errs := make([]error, len(calls))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, call := range calls {
			wg.Go(func() { <-start; errs[i] = call() })
		}
		locks.batches.Store(0)
		close(start)
		wg.Wait()
		return errs
	}
	accept := func(store, id string) func() error {
		return func() error {
			_, err := e.store.AcceptOrder(e.asStaff(store), &fulfilmentv1.AcceptOrderRequest{StoreId: store, OrderId: id})
			return err
		}
	}
	markReady := func(id string) func() error {
		return func() error {
			_, err := e.store.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: id})
			return err
		}
	}

	// Round 1: orders 0-19 accepted, order 0 twice; 20 and 21 marked ready before being
	// accepted (illegal); 22 accepted by another store's staff (not theirs to see).
	var calls []func() error
	for i := range 20 {
		calls = append(calls, accept("s1", ids[i]))
	}
	// Order 0's second accept is another member of staff's: the same one's would be a retry,
	// answered with the order as accepted (TestARetriedChangeGetsTheOrderItMade).
	acceptByAnother := func() error {
		ctx := metadata.AppendToOutgoingContext(e.ctx, fulfilment.MetadataStaffStores, "s1", fulfilment.MetadataActor, "staff:barista-2")
		_, err := e.store.AcceptOrder(ctx, &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: ids[0]})
		return err
	}
	calls = append(calls, acceptByAnother, markReady(ids[20]), markReady(ids[21]), accept("s2", ids[22]))
	errs := all(calls)
	t.Logf("round 1: %d changes in %d transactions", len(calls), locks.batches.Load())
	if got := locks.batches.Load(); got >= int64(len(calls)) {
		t.Errorf("%d concurrent changes took %d transactions; want fewer, made together", len(calls), got)
	}
	for i := 1; i < 20; i++ {
		if errs[i] != nil {
			t.Errorf("accept order %d: %v", i, errs[i])
		}
	}
	if (errs[0] == nil) == (errs[20] == nil) {
		t.Errorf("order 0 accepted twice at once: %v and %v; want exactly one to succeed", errs[0], errs[20])
	}
	for _, err := range []error{errs[0], errs[20]} {
		if err != nil && status.Code(err) != codes.FailedPrecondition {
			t.Errorf("second accept of order 0: %v; want FailedPrecondition", err)
		}
	}
	wantCode(t, "order 20 ready before accepted", errs[21], codes.FailedPrecondition)
	wantCode(t, "order 21 ready before accepted", errs[22], codes.FailedPrecondition)
	wantCode(t, "another store's staff accepting order 22", errs[23], codes.NotFound)
	for i, id := range ids {
		want := confirmed
		if i < 20 {
			want = preparing
		}
		if got := e.stateOf(id); got != want {
			t.Errorf("order %d is %s; want %s", i, got, want)
		}
	}

	// Round 2: 0-19 ready. Round 3: 0-9 handed over with their codes, 10-14 with a wrong one.
	calls = calls[:0]
	for i := range 20 {
		calls = append(calls, markReady(ids[i]))
	}
	for i, err := range all(calls) {
		if err != nil {
			t.Errorf("mark order %d ready: %v", i, err)
		}
	}
	codes0 := make([]string, 15)
	for i := range codes0 {
		codes0[i] = e.codeOf(fmt.Sprint("shopper-", i), ids[i])
		if i >= 10 {
			codes0[i] = otherCode(codes0[i])
		}
	}
	calls = calls[:0]
	for i := range 15 {
		calls = append(calls, func() error { _, err := e.handOver("s1", ids[i], codes0[i]); return err })
	}
	errs = all(calls)
	t.Logf("round 3: %d hand-overs in %d transactions", len(calls), locks.batches.Load())
	if got := locks.batches.Load(); got >= int64(len(calls)) {
		t.Errorf("%d concurrent hand-overs took %d transactions; want fewer, made together", len(calls), got)
	}
	for i, err := range errs {
		var wrong int
		if err := e.pool.QueryRow(e.ctx, `SELECT wrong_codes FROM orders WHERE id = $1`, ids[i]).Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		switch {
		case i < 10 && (err != nil || e.stateOf(ids[i]) != collected || wrong != 0):
			t.Errorf("order %d handed over with its code: %v, %s, %d wrong codes; want COLLECTED", i, err, e.stateOf(ids[i]), wrong)
		case i >= 10 && (status.Code(err) != codes.PermissionDenied || e.stateOf(ids[i]) != ready || wrong != 1):
			t.Errorf("order %d with a wrong code: %v, %s, %d wrong codes; want PermissionDenied, READY, the code counted", i, err, e.stateOf(ids[i]), wrong)
		}
	}

	// Round 4: the write of order 23 fails (a trigger refuses it), which fails the combined
	// transaction it shares with 20 and 21: each change is then made alone, so 20 and 21 are
	// accepted and 23 gets its own error. To have the three in one transaction, the outbox is
	// locked here against writes, order 22's accept waits on it to write its event, and the
	// three queue up behind it.
	if _, err := e.pool.Exec(e.ctx, fmt.Sprintf(`
		CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'order %% refused by the test', NEW.id; END $$;
		CREATE TRIGGER refuse_order BEFORE UPDATE ON orders FOR EACH ROW
		WHEN (NEW.id = '%s') EXECUTE FUNCTION refuse_order()`, ids[23])); err != nil {
		t.Fatal(err)
	}
	holder, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(e.ctx, `LOCK TABLE outbox IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- accept("s1", ids[22])() }()
	deadline := time.Now().Add(10 * time.Second)
	for !e.blocking(holder.Conn().PgConn().PID()) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	go func() {
		for e.svc.QueuedChanges() < 3 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		_ = holder.Rollback(e.ctx)
	}()
	errs = all([]func() error{accept("s1", ids[20]), accept("s1", ids[21]), accept("s1", ids[23])})
	if err := <-first; err != nil {
		t.Errorf("accept order 22: %v", err)
	}
	for i, err := range errs[:2] {
		if err != nil || e.stateOf(ids[20+i]) != preparing {
			t.Errorf("accept order %d beside a failing one: %v, %s; want PREPARING", 20+i, err, e.stateOf(ids[20+i]))
		}
	}
	if err := errs[2]; err == nil || !strings.Contains(status.Convert(err).Message(), "refused by the test") || e.stateOf(ids[23]) != confirmed {
		t.Errorf("accept of the order whose write fails: %v, %s; want its own error, CONFIRMED", err, e.stateOf(ids[23]))
	}

	// Each change is in the history once.
	var doubled, entries int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE c > 1), coalesce(sum(c), 0) FROM
		(SELECT order_id, to_state, count(*) AS c FROM order_history WHERE to_state > 2 GROUP BY 1, 2) h`).Scan(&doubled, &entries); err != nil {
		t.Fatal(err)
	}
	if want := 20 + 20 + 10 + 3; doubled != 0 || entries != want {
		t.Errorf("%d staff changes in the history, %d of them doubled; want %d, each once", entries, doubled, want)
	}
	for i := range 10 {
		e.waitHolds(ids[i], map[string]int{"committed": 1})
	}
	e.waitEvents(ids[0], "confirmed", "preparing", "ready", "collected")
	e.checkInvariants()
}

// An order locked by another transaction (placement recovery holds PENDING orders while it
// asks inventory) holds up its own change only: the changes of other orders, which go in
// batches one after another, are made meanwhile.
func TestALockedOrderHoldsUpOnlyItsOwnChange(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "SKU-1", 10)
	locked := e.placeAt("s1", "shopper-1", "k", "SKU-1", 1).GetId()
	free := e.placeAt("s1", "shopper-2", "k", "SKU-1", 1).GetId()
	accept := func(id string) error {
		_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: id})
		return err
	}

	holder, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(e.ctx) }()
	if _, err := holder.Exec(e.ctx, `SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, locked); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- accept(locked) }()
	for deadline := time.Now().Add(10 * time.Second); !e.blocking(holder.Conn().PgConn().PID()); {
		if time.Now().After(deadline) {
			t.Fatal("the accept of the locked order never waited on its lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- accept(free) }()
	select {
	case err := <-done:
		if err != nil || e.stateOf(free) != preparing {
			t.Fatalf("accept of another order: %v, %s; want PREPARING", err, e.stateOf(free))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("another order's accept waited for the locked order's lock")
	}
	select {
	case err := <-first:
		t.Fatalf("the locked order's accept ended (%v) while its row was still locked", err)
	default:
	}
	if err := holder.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil || e.stateOf(locked) != preparing {
		t.Fatalf("accept of the order once unlocked: %v, %s; want PREPARING", err, e.stateOf(locked))
	}
}

// A combined change that committed though the reply to its COMMIT was lost counts as made: its
// callers get their own outcomes, instead of their changes being decided again on the changed
// orders (an accept refused as illegal, a wrong pickup code counted twice).
func TestAChangeWhoseCommitReplyIsLostButCommittedCountsAsMade(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "SKU-1", 10)
	a := e.placeAt("s1", "shopper-a", "k", "SKU-1", 1).GetId()
	b := e.placeAt("s1", "shopper-b", "k", "SKU-1", 1).GetId()
	for _, step := range []func() error{
		func() error {
			_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: b})
			return err
		},
		func() error {
			_, err := e.store.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: b})
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	fulfilment.LoseCommitReplies(e.svc, true)
	_, acceptErr := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: a})
	_, wrongErr := e.handOver("s1", b, "000000")
	fulfilment.LoseCommitReplies(e.svc, false)

	if acceptErr != nil || e.stateOf(a) != preparing {
		t.Errorf("accept whose COMMIT's reply was lost: %v, %s; want it made (PREPARING)", acceptErr, e.stateOf(a))
	}
	var wrong int
	if err := e.pool.QueryRow(e.ctx, `SELECT wrong_codes FROM orders WHERE id = $1`, b).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if status.Code(wrongErr) != codes.PermissionDenied || wrong != 1 {
		t.Errorf("a wrong code whose COMMIT's reply was lost: %v, counted %d times; want PermissionDenied, counted once", wrongErr, wrong)
	}
	var entries int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_state = $2`, a, int16(preparing)).Scan(&entries); err != nil || entries != 1 {
		t.Errorf("the accept is in the history %d times (%v); want once", entries, err)
	}
}
