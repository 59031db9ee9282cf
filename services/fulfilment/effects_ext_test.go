package fulfilment_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/inventory"
)

// holdRequests records the change_holds requests fulfilment sends: how many changes each has.
type holdRequests struct {
	mu    sync.Mutex
	sizes []int
}

func (e *env) spyHoldChanges() *holdRequests {
	e.t.Helper()
	r := &holdRequests{}
	sub, err := e.cart.Subscribe(inventory.SubjectChangeHolds, func(m *nats.Msg) {
		var req inventoryv1.ChangeHoldsRequest
		if proto.Unmarshal(m.Data, &req) == nil {
			r.mu.Lock()
			r.sizes = append(r.sizes, len(req.GetChanges()))
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
	r.sizes = nil
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
