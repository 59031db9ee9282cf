package fulfilment_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/inventory"
)

// holdRequests records the change_holds requests fulfilment sends: how many changes each has,
// and how many of them are extensions.
type holdRequests struct {
	mu      sync.Mutex
	sizes   []int
	extends []int
}

func (e *env) spyHoldChanges() *holdRequests {
	e.t.Helper()
	r := &holdRequests{}
	sub, err := e.cart.Subscribe(inventory.SubjectChangeHolds, func(m *nats.Msg) {
		var req inventoryv1.ChangeHoldsRequest
		if proto.Unmarshal(m.Data, &req) == nil {
			ext := 0
			for _, c := range req.GetChanges() {
				if c.GetExtend() != nil {
					ext++
				}
			}
			r.mu.Lock()
			r.sizes = append(r.sizes, len(req.GetChanges()))
			r.extends = append(r.extends, ext)
			r.mu.Unlock()
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.cart.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (r *holdRequests) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sizes
	r.sizes, r.extends = nil, nil
	return out
}

// takeExtends returns, per request with any, how many extensions it carried.
func (r *holdRequests) takeExtends() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, n := range r.extends {
		if n > 0 {
			out = append(out, n)
		}
	}
	r.sizes, r.extends = nil, nil
	return out
}

func (e *env) waitNoEffects() {
	e.t.Helper()
	testenv.CheckFor(e.t, 15*time.Second, 10*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_effects`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d effects still pending", n)
		}
		return nil
	})
}

func TestManyHandOversCommitEveryHoldOnceAndARedeliveredBatchChangesNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.62, -122.33, 5*time.Minute, time.Hour)
	for _, st := range []string{"s1", "s2"} {
		e.setStock(st, "LATTE-16", 100)
		e.setStock(st, "MUFFIN", 100)
	}
	const n = 40
	orders := make([]*fulfilmentv1.Order, n)
	store := func(i int) string { return fmt.Sprintf("s%d", i%2+1) }
	for i := range n {
		orders[i] = e.mustPlace(checkout(fmt.Sprintf("shopper-%d", i), "k", store(i), line{"LATTE-16", 2}, line{"MUFFIN", 1}), confirmed)
		e.accept(store(i), orders[i].GetId())
		e.markReady(store(i), orders[i].GetId())
	}
	e.waitNoEffects() // the confirmations' extensions
	spy := e.spyHoldChanges()
	var wg sync.WaitGroup
	for i, o := range orders {
		wg.Go(func() {
			if _, err := e.handOver(store(i), o.GetId(), o.GetPickupCode()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, o := range orders {
		e.waitHolds(o.GetId(), map[string]int{"committed": 2})
	}
	e.waitNoEffects()
	changes := 0
	sizes := spy.take()
	for _, s := range sizes {
		changes += s
	}
	if changes != n {
		t.Fatalf("%d hold changes sent in %d requests, want one commit per order (%d)", changes, len(sizes), n)
	}
	t.Logf("%d commits went to inventory in %d requests %v", n, len(sizes), sizes)
	check := func(when string) {
		t.Helper()
		for _, st := range []string{"s1", "s2"} {
			if got := e.available(st, "LATTE-16"); got != 100-n/2*2 {
				t.Fatalf("%s: LATTE-16 available at %s %d, want %d", when, st, got, 100-n/2*2)
			}
			if got := e.available(st, "MUFFIN"); got != 100-n/2 {
				t.Fatalf("%s: MUFFIN available at %s %d, want %d", when, st, got, 100-n/2)
			}
		}
		var sales, onHand int
		if err := e.invPool.QueryRow(e.ctx, `SELECT count(*), coalesce(sum(-on_hand_delta), 0) FROM movements WHERE kind = 'hold_committed'`).Scan(&sales, &onHand); err != nil {
			t.Fatal(err)
		}
		if sales != 2*n || onHand != 3*n {
			t.Fatalf("%s: ledger has %d sales of %d units, want %d of %d", when, sales, onHand, 2*n, 3*n)
		}
		e.checkInvariants()
	}
	check("after the hand-overs")

	// The worker died after inventory committed and before it deleted its effects: once their
	// lease is over, every one of them is due again at once, and is done again, together.
	ids := make([]string, n)
	for i, o := range orders {
		ids[i] = o.GetId()
	}
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO order_effects (order_id, kind) SELECT unnest($1::text[]), $2`, ids, int16(domain.CommitAll)); err != nil {
		t.Fatal(err)
	}
	e.waitNoEffects()
	if sizes := spy.take(); len(sizes) != 1 || sizes[0] != n {
		t.Fatalf("the %d redelivered commits went to inventory as %v, want one request of all of them", n, sizes)
	}
	check("after the redelivered batch")
}

// logRecorder keeps the records a logger receives at Error, and passes everything on.
type logRecorder struct {
	slog.Handler
	mu     *sync.Mutex
	errors *[]slog.Record
}

func recordErrors(next *slog.Logger) (*slog.Logger, func() []slog.Record) {
	r := &logRecorder{Handler: next.Handler(), mu: &sync.Mutex{}, errors: new([]slog.Record)}
	return slog.New(r), func() []slog.Record {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Clone(*r.errors)
	}
}

func (r *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelError {
		r.mu.Lock()
		*r.errors = append(*r.errors, rec.Clone())
		r.mu.Unlock()
	}
	return r.Handler.Handle(ctx, rec)
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{Handler: r.Handler.WithAttrs(as), mu: r.mu, errors: r.errors}
}

func (r *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{Handler: r.Handler.WithGroup(name), mu: r.mu, errors: r.errors}
}

// attrs returns a record's attributes by key, as strings.
func attrs(rec slog.Record) map[string]string {
	out := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

// counterValue reads the counter name (with label = value, when label is given) from the
// default registry.
func counterValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func commitShortfalls(t *testing.T) float64 {
	return counterValue(t, "handoff_fulfilment_commit_shortfall_total", "certain", "true")
}

// onHand reads sku's on hand at store from inventory.
func (e *env) onHand(store, sku string) int32 {
	e.t.Helper()
	var n int32
	if err := e.invPool.QueryRow(e.ctx, `SELECT on_hand FROM stock WHERE store_id = $1 AND sku = $2`, store, sku).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// readyWithTwoLines places, accepts and readies an order of two lines at a fresh store s1, its
// holds extended and no effect left to make.
func (e *env) readyWithTwoLines() *fulfilmentv1.Order {
	e.t.Helper()
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	e.setStock("s1", "MUFFIN", 10)
	o := e.mustPlace(checkout("alice", "k", "s1", line{"LATTE-16", 2}, line{"MUFFIN", 1}), confirmed)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour))
	e.waitNoEffects()
	return o
}

// A hold of a READY order expired at inventory before its hand-over's commit came (inventory
// out of reach past the hold's grace; fulfilment is not told): the goods left the store all the
// same, so inventory sells them late and on hand drops for them. Fulfilment warns and counts
// it; nothing is short.
func TestHandOverAfterAHoldExpiredSellsItsGoodsLate(t *testing.T) {
	var errorLogs func() []slog.Record
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.Logger, errorLogs = recordErrors(c.Logger) }})
	o := e.readyWithTwoLines()
	if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = now() - interval '1 second' WHERE order_id = $1 AND line_id = 'l2'`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"open": 1, "expired": 1})

	shortBefore := commitShortfalls(t)
	lateBefore := counterValue(t, "handoff_fulfilment_late_sales_total", "", "")
	if _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"committed": 1, "expired": 1})
	e.waitNoEffects()
	if latte, muffin := e.onHand("s1", "LATTE-16"), e.onHand("s1", "MUFFIN"); latte != 8 || muffin != 9 {
		t.Errorf("on hand after the hand-over: LATTE-16 %d, MUFFIN %d; want 8 and 9", latte, muffin)
	}
	if got := counterValue(t, "handoff_fulfilment_late_sales_total", "", "") - lateBefore; got != 1 {
		t.Errorf("late sales counter rose by %v, want 1", got)
	}
	if got := commitShortfalls(t) - shortBefore; got != 0 {
		t.Errorf("commit shortfall counter rose by %v, want 0: the expired hold's goods were sold", got)
	}
	if errs := errorLogs(); len(errs) > 0 {
		t.Errorf("errors logged for a hand-over whose goods were all sold: %v", errs)
	}
	e.checkInvariants()
}

// A hold of a READY order released behind fulfilment's back (an operator's ReleaseHolds): the
// hand-over that still happens commits nothing for it, so on-hand never drops for the goods
// that left. Fulfilment cannot undo the hand-over, but it must not stay silent: it logs the
// shortfall at Error and counts it.
func TestHandOverOfAnOrderWhoseHoldWasReleasedIsReportedAsACommitShortfall(t *testing.T) {
	var errorLogs func() []slog.Record
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.Logger, errorLogs = recordErrors(c.Logger) }})
	o := e.readyWithTwoLines()
	if _, err := e.inv.ReleaseHolds(e.ctx, o.GetId(), "l2", inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED); err != nil {
		t.Fatal(err)
	}

	before := commitShortfalls(t)
	if _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"committed": 1, "released": 1})
	e.waitNoEffects()
	if got := commitShortfalls(t) - before; got != 1 {
		t.Fatalf("commit shortfall counter rose by %v, want 1", got)
	}
	var found bool
	for _, rec := range errorLogs() {
		a := attrs(rec)
		if a["order_id"] == o.GetId() && a["committed_holds"] == "1" && a["active_lines"] == "2" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no Error log naming order %s with 1 of 2 holds committed; errors logged: %v", o.GetId(), errorLogs())
	}
	e.checkInvariants()
}

// A hand-over whose holds are all there reports no shortfall.
func TestHandOverWithItsHoldsReportsNoCommitShortfall(t *testing.T) {
	var errorLogs func() []slog.Record
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.Logger, errorLogs = recordErrors(c.Logger) }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	if _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"committed": 1})
	e.waitNoEffects()
	if errs := errorLogs(); len(errs) > 0 {
		t.Fatalf("errors logged for a hand-over with its holds: %v", errs)
	}
}

// A round of effects whose answer is bigger than the NATS max payload: ten confirmed orders of
// 80 lines, their extensions due together, answer with 800 holds, about twice the 64 KiB the
// server takes. The worker sends them in parts its answers fit in; sent as one request, the
// answer could not come back (inventory extended the holds, the worker heard nothing), and
// the same round failed for ever, the commits and releases behind those extensions waiting
// until the holds expired.
func TestAnEffectsRoundTooBigForOneAnswerIsSentInParts(t *testing.T) {
	const maxPayload = 64 << 10
	e := newEnv(t, envOptions{nats: func(o *server.Options) { o.MaxPayload = maxPayload }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	const orders, lines = 10, 80
	var ls []line
	for i := range lines {
		sku := fmt.Sprintf("SKU-%03d", i)
		e.setStock("s1", sku, 100)
		ls = append(ls, line{sku, 1})
	}
	ids := make([]string, orders)
	for i := range orders {
		ids[i] = e.mustPlace(checkout(fmt.Sprintf("shopper-%d", i), "k", "s1", ls...), confirmed).GetId()
	}
	e.waitNoEffects() // the confirmations' own extensions
	spy := e.spyHoldChanges()
	// want_holds is what the worker expects each answer to hold: right first, then far too
	// low, so that the part it sends comes back too big and is sent again in halves.
	for round, want := range []int{lines, 1} {
		deadline := time.Now().Add(time.Duration(3+round) * time.Hour)
		if _, err := e.pool.Exec(e.ctx, `INSERT INTO order_effects (order_id, kind, deadline, want_holds)
			SELECT unnest($1::text[]), $2, $3, $4`, ids, int16(domain.ExtendHolds), deadline, want); err != nil {
			t.Fatal(err)
		}
		e.waitNoEffects()
		if sizes := spy.take(); len(sizes) < 2 {
			t.Errorf("round %d: the %d extensions went to inventory as %v, want more than one request", round, orders, sizes)
		}
		var extended int
		if err := e.invPool.QueryRow(e.ctx, `SELECT count(*) FROM holds WHERE order_id = ANY($1) AND state = 'open' AND expire_time >= $2`,
			ids, deadline.Truncate(time.Microsecond)).Scan(&extended); err != nil {
			t.Fatal(err)
		}
		if extended != orders*lines {
			t.Fatalf("round %d: %d holds extended, want %d", round, extended, orders*lines)
		}
	}
	for _, id := range ids {
		if st := e.stateOf(id); st != confirmed {
			t.Fatalf("order %s is %v, want it confirmed still", id, st)
		}
	}
}
