package posadapter_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/streams"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Events that wait while the adapter is down are then handled many to a transaction: each
// store's tickets still get its next sequence numbers in event order, and the escalation timers
// end up as if the events had been handled one by one.
func TestABatchOfEventsNumbersEachStoresTicketsInEventOrderAndKeepsTheTimers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.admin().SetStoreSettings(ctx, connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "bat-a", EscalateAfter: durationpb.New(time.Hour)}})); err != nil {
		t.Fatal(err)
	}
	e.stopAdapter()

	type raised struct{ order, kind string }
	want := map[string][]raised{}
	var wantTimers []string
	stores := []string{"bat-a", "bat-b", "bat-c"}
	for i := range 30 {
		store := stores[i%3]
		o := order(store, i)
		e.publish("confirmed", o, nil)
		want[store] = append(want[store], raised{o.GetId(), "new_order"})
		switch {
		case store == "bat-a" && i%2 == 0:
			// Accepted in the same batch: the store's timer must not survive it.
			e.publish("preparing", then(o, fulfilmentv1.OrderState_ORDER_STATE_PREPARING), nil)
		case store == "bat-a":
			wantTimers = append(wantTimers, o.GetId())
			// The store runs its own timer: fulfilment's escalation is not for it.
			e.publish("not_accepted", then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
		case store == "bat-b" && i%2 == 1:
			e.publish("cancelled", then(o, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED), &fulfilmentv1.Transition{
				ToState: fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, Reason: "changed my mind"})
			want[store] = append(want[store], raised{o.GetId(), "order_cancelled"})
		case store == "bat-b":
			e.publish("not_accepted", then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
			want[store] = append(want[store], raised{o.GetId(), "escalation"})
		}
	}
	e.start()
	for _, s := range stores {
		e.waitTickets(s, len(want[s]))
	}

	for _, s := range stores {
		rows, err := e.pool.Query(ctx, `SELECT seq, order_id, kind FROM tickets WHERE store_id = $1 ORDER BY seq`, s)
		if err != nil {
			t.Fatal(err)
		}
		var (
			got  []raised
			seqs []int64
			r    raised
			seq  int64
		)
		if _, err := pgx.ForEachRow(rows, []any{&seq, &r.order, &r.kind}, func() error {
			got, seqs = append(got, r), append(seqs, seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want[s]) {
			t.Fatalf("store %s tickets %v,\nwant in event order %v", s, got, want[s])
		}
		for i, q := range seqs {
			if q != int64(i+1) {
				t.Fatalf("store %s sequences %v; want 1..%d without gaps", s, seqs, len(seqs))
			}
		}
	}
	rows, err := e.pool.Query(ctx, `SELECT order_id FROM escalation_timers WHERE cleared_time IS NULL ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	timers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	slices.Sort(wantTimers)
	if err != nil || !slices.Equal(timers, wantTimers) {
		t.Fatalf("escalation timers %v (%v); want the store's orders not accepted %v", timers, err, wantTimers)
	}
	var tickets, txs int
	if err := e.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text) FROM tickets`).Scan(&tickets, &txs); err != nil {
		t.Fatal(err)
	}
	if txs*4 > tickets {
		t.Fatalf("%d tickets raised in %d transactions; want the waiting events handled in batches", tickets, txs)
	}

	// A terminal that connects now reads them in that order.
	_, cred := e.register("Counter", "bat-b")
	f := e.openFeed(e.terminal(overGRPC, cred), "bat-b")
	got := f.take(len(want["bat-b"]), 10*time.Second)
	for i, tk := range got {
		if tk.GetOrderId() != want["bat-b"][i].order || tk.GetSequence() != uint64(i+1) {
			t.Fatalf("ticket %d is #%d for %s; want #%d for %s", i, tk.GetSequence(), tk.GetOrderId(), i+1, want["bat-b"][i].order)
		}
	}
}

// The process that raises a ticket sends it to its own terminals as soon as it is committed,
// without waiting for the outbox relay and JetStream (here: without them at all).
func TestTicketsReachThisProcessesTerminalsOnCommitWithoutTheRelay(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.CatchUpInterval = time.Hour }))
	_, cred := e.register("Counter", "local-1")
	f := e.openFeed(e.terminal(overGRPCWeb, cred), "local-1")
	f.quiet(100 * time.Millisecond)
	// The relay cannot publish tickets any more: they stay in the outbox.
	if err := e.js.DeleteStream(context.Background(), streams.TicketsStream); err != nil {
		t.Fatal(err)
	}
	var orders []string
	for i := range 5 {
		o := order("local-1", i)
		orders = append(orders, o.GetId())
		e.publish("confirmed", o, nil)
	}
	got := f.take(5, 5*time.Second)
	for i, tk := range got {
		if tk.GetOrderId() != orders[i] || tk.GetSequence() != uint64(i+1) {
			t.Fatalf("ticket %d is #%d for %s; want #%d for %s", i, tk.GetSequence(), tk.GetOrderId(), i+1, orders[i])
		}
	}
	var pending int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&pending); err != nil || pending != 5 {
		t.Fatalf("outbox holds %d (%v); want the 5 tickets, never published", pending, err)
	}
	f.quiet(200 * time.Millisecond)
}
