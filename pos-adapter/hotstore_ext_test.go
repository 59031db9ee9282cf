package posadapter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// Invariant 4 under concurrency: a rush of hundreds of orders confirmed at once at one hot
// store, their events handled by two adapter copies side by side, reaches each of the store's
// two terminals (one on each copy) completely: one NEW_ORDER ticket per order, none twice,
// in strictly increasing feed order with no sequence skipped, and nothing after.
func TestARushOfOrdersAtOneStoreReachesEachTerminalOfTwoAdapterCopiesOnceInOrder(t *testing.T) {
	e := newEnv(t)
	base2 := e.startCopy()
	_, credA := e.register("Counter", "rush-1")
	_, credB := e.register("Drive-through", "rush-1")
	fa := e.openFeed(e.terminal(overGRPC, credA), "rush-1")
	termB := posv1connect.NewTerminalServiceClient(e.h2c, base2, connect.WithGRPC(), connect.WithInterceptors(bearer(credB)))
	fb := e.openFeed(termB, "rush-1")

	const orders = 300
	published := make([]*fulfilmentv1.Order, orders)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range orders {
		published[i] = order("rush-1", i)
		wg.Go(func() { <-gate; e.publish("confirmed", published[i], nil) })
	}
	close(gate)
	wg.Wait()

	want := map[string]bool{}
	for _, o := range published {
		want[o.GetId()] = true
	}
	for name, f := range map[string]*feed{"terminal on copy 1": fa, "terminal on copy 2": fb} {
		got := f.take(orders, 60*time.Second)
		checkIncreasing(t, got)
		seen := map[string]bool{}
		for i, tk := range got {
			if tk.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER || !want[tk.GetOrderId()] || seen[tk.GetOrderId()] {
				t.Fatalf("%s: ticket %d is %v for order %s (seen before: %v)", name, i, tk.GetKind(), tk.GetOrderId(), seen[tk.GetOrderId()])
			}
			seen[tk.GetOrderId()] = true
			if i > 0 && tk.GetSequence() != got[i-1].GetSequence()+1 {
				t.Errorf("%s: sequence %d follows %d: a ticket skipped", name, tk.GetSequence(), got[i-1].GetSequence())
			}
		}
		f.quiet(500 * time.Millisecond)
	}
	var tickets, distinct int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT order_id) FROM tickets WHERE store_id = 'rush-1'`).Scan(&tickets, &distinct); err != nil {
		t.Fatal(err)
	}
	if tickets != orders || distinct != orders {
		t.Fatalf("%d tickets for %d orders stored, want %d, one each", tickets, distinct, orders)
	}
}
