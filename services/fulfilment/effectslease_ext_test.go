package fulfilment_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/inventory"
)

// fakeInventory answers change_holds on e's NATS, each request after delay, calling do (when
// set) with its changes first. A request whose answer would come within margin of its caller's
// deadline, or after it, is abandoned unanswered and not done, as inventory's handler, its
// context ended, rolls its transaction back. It returns how many times each order's change was
// done.
func (e *env) fakeInventory(delay, margin time.Duration, do func(changes []*inventoryv1.HoldChange)) func() map[string]int {
	e.t.Helper()
	var mu sync.Mutex
	done := map[string]int{}
	var wg sync.WaitGroup
	sub, err := e.cart.Subscribe(inventory.SubjectChangeHolds, func(m *nats.Msg) {
		wg.Go(func() { // requests are served side by side, as inventory's are
			var req inventoryv1.ChangeHoldsRequest
			if err := proto.Unmarshal(m.Data, &req); err != nil {
				e.t.Error(err)
				return
			}
			ms, err := strconv.ParseInt(m.Header.Get(natsrpc.DeadlineHeader), 10, 64)
			if err != nil {
				e.t.Errorf("change_holds without a deadline: %v", err)
				return
			}
			time.Sleep(delay)
			if time.Now().Add(margin).After(time.UnixMilli(ms)) {
				return
			}
			if do != nil {
				do(req.GetChanges())
			}
			res := &inventoryv1.ChangeHoldsResponse{}
			mu.Lock()
			for _, c := range req.GetChanges() {
				done[c.GetRelease().GetOrderId()]++
				res.Results = append(res.Results, &inventoryv1.HoldChangeResult{})
			}
			mu.Unlock()
			data, err := proto.Marshal(res)
			if err != nil {
				e.t.Error(err)
				return
			}
			_ = m.Respond(data)
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe(); wg.Wait() })
	if err := e.cart.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int, len(done))
		for k, v := range done {
			out[k] = v
		}
		return out
	}
}

// A round of effects slower than its lease: two copies of fulfilment work the queue, inventory
// answers each request in 300 ms, and the round's six releases of orders of 100 lines go in six
// requests (a 64 KiB max payload fits one answer each): 1.8 s, against a lease of 1 s. The
// round must stop sending well within its lease and leave the rest to the next claim; running
// on, its effects were claimed by the other copy while it still worked them, and every
// release was made twice.
func TestAnEffectsRoundSlowerThanItsLeaseLeavesTheRestForTheNextClaim(t *testing.T) {
	t.Cleanup(fulfilment.SetEffectLease(time.Second))
	e := newEnv(t, envOptions{copies: 2, noInventory: true, nats: func(o *server.Options) { o.MaxPayload = 64 << 10 }})
	done := e.fakeInventory(300*time.Millisecond, 50*time.Millisecond, nil)
	const orders = 6
	ids := make([]string, orders)
	for i := range ids {
		ids[i] = fmt.Sprintf("order-%d", i)
	}
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO order_effects (order_id, kind, want_holds) SELECT unnest($1::text[]), $2, 100`,
		ids, int16(domain.ReleaseAll)); err != nil {
		t.Fatal(err)
	}
	e.waitNoEffects()
	got := done()
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("order %s released %d times, want once: %v", id, got[id], got)
		}
	}
}

// A worker whose round outlived its lease (stalled, say) finds its effects claimed by another
// worker by the time it records their outcome: it leaves them to that worker, which records
// its own. Deleted as done instead, the next effect of the order could be sent while the
// other worker's send of this one is still in flight.
func TestAnEffectClaimedAgainMeanwhileIsLeftToItsNewWorker(t *testing.T) {
	e := newEnv(t, envOptions{noInventory: true})
	e.fakeInventory(0, 0, func(changes []*inventoryv1.HoldChange) {
		// Another worker claims the effects while inventory makes them.
		for _, c := range changes {
			if _, err := e.pool.Exec(e.ctx, `UPDATE order_effects SET claims = claims + 1, due = now() + interval '1 hour'
				WHERE order_id = $1`, c.GetRelease().GetOrderId()); err != nil {
				t.Error(err)
			}
		}
	})
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO order_effects (order_id, kind) VALUES ('order-1', $1)`, int16(domain.ReleaseAll)); err != nil {
		t.Fatal(err)
	}
	// The round is over once its effect is not due at once any more: claimed by the other
	// worker (due in an hour), and, unfenced, deleted.
	var claims, left int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*), coalesce(max(claims), 0) FROM order_effects`).Scan(&left, &claims); err != nil {
			t.Fatal(err)
		}
		if left == 0 || claims >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the effect was not worked: %d left, claimed %d times", left, claims)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the first worker records its outcome
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*), coalesce(max(claims), 0) FROM order_effects`).Scan(&left, &claims); err != nil {
		t.Fatal(err)
	}
	if left != 1 || claims != 2 {
		t.Fatalf("%d effects left, claimed %d times; want the effect left to the worker that claimed it since (claims 2)", left, claims)
	}
}
