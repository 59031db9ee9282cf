package posadapter_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// waitTickets waits until the adapter has raised n tickets for store.
func (e *env) waitTickets(store string, n int) {
	e.t.Helper()
	testenv.CheckFor(e.t, 20*time.Second, 20*time.Millisecond, func() error {
		var got int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM tickets WHERE store_id = $1`, store).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("store %s has %d tickets, want %d", store, got, n)
		}
		return nil
	})
}

func ack(t testing.TB, c posv1connect.TerminalServiceClient, store string, tickets ...*posv1.Ticket) {
	t.Helper()
	for _, tk := range tickets {
		if _, err := c.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: store, TicketId: tk.GetTicketId()})); err != nil {
			t.Fatalf("AckTicket %s: %v", tk.GetTicketId(), err)
		}
	}
}

// dedupe keeps the first of each ticket id, in arrival order.
func dedupe(ts []*posv1.Ticket) []*posv1.Ticket {
	seen := map[string]bool{}
	var out []*posv1.Ticket
	for _, t := range ts {
		if !seen[t.GetTicketId()] {
			seen[t.GetTicketId()] = true
			out = append(out, t)
		}
	}
	return out
}

func checkIncreasing(t testing.TB, ts []*posv1.Ticket) {
	t.Helper()
	for i := 1; i < len(ts); i++ {
		if ts[i].GetSequence() <= ts[i-1].GetSequence() {
			t.Fatalf("ticket %d has sequence %d after %d: not in order", i, ts[i].GetSequence(), ts[i-1].GetSequence())
		}
	}
}

func TestOfflineTerminalGetsAllFiftyTicketsInOrderOnceEachAfterReconnecting(t *testing.T) {
	e := newEnv(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			store := strings.ToLower("off-" + strings.ReplaceAll(p.name, "-", ""))
			_, cred := e.register("Front counter", store)
			term := e.terminal(p, cred)

			// Online with nothing to do, then the Wi-Fi drops.
			f := e.openFeed(term, store)
			f.quiet(100 * time.Millisecond)
			f.close()

			var orders []string
			for i := range 50 {
				o := order(store, i)
				orders = append(orders, o.GetId())
				e.publish("confirmed", o, nil)
				e.publish("confirmed", order("other-store", i), nil) // another store's traffic
			}
			e.waitTickets(store, 50)

			// Back online: it reads 20, acknowledges 10 and drops again before acknowledging more.
			f = e.openFeed(term, store)
			first := f.take(20, 10*time.Second)
			checkIncreasing(t, first)
			ack(t, term, store, first[:10]...)
			f.close()

			// Back again: everything not acknowledged (10 of them seen before), then live.
			f = e.openFeed(term, store)
			second := f.take(40, 10*time.Second)
			checkIncreasing(t, second)
			f.quiet(300 * time.Millisecond)
			all := dedupe(append(first, second...))
			if len(all) != 50 {
				t.Fatalf("%d distinct tickets after de-duplication, want 50", len(all))
			}
			for i, tk := range all {
				if tk.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER || tk.GetOrderId() != orders[i] || tk.GetStoreId() != store {
					t.Fatalf("ticket %d is %v for order %s of %s; want NEW_ORDER for %s", i, tk.GetKind(), tk.GetOrderId(), tk.GetStoreId(), orders[i])
				}
				if tk.GetOrder().GetPickupCode() != "" || tk.GetOrder().GetLines()[0].GetSku() != "LATTE-16" || tk.GetOrder().GetCustomerNote() != "extra hot" {
					t.Fatalf("ticket %d carries order %v; want its lines and note, never a pickup code", i, tk.GetOrder())
				}
			}
			if !strings.Contains(all[0].GetMessage(), "Shopper 0") {
				t.Fatalf("new-order ticket says %q; want the pickup name", all[0].GetMessage())
			}

			live := order(store, 50)
			e.publish("confirmed", live, nil)
			if got := f.take(1, 5*time.Second)[0]; got.GetOrderId() != live.GetId() || got.GetSequence() != 51 {
				t.Fatalf("live ticket for %s with sequence %d; want order %s, sequence 51", got.GetOrderId(), got.GetSequence(), live.GetId())
			}
		})
	}
}

func TestTwoTerminalsOfAStoreEachGetEveryTicketAndOtherStoresNone(t *testing.T) {
	e := newEnv(t)
	_, credA := e.register("Counter", "two-1")
	_, credB := e.register("Drive-through", "two-1")
	_, credOther := e.register("Elsewhere", "two-2")
	fa := e.openFeed(e.terminal(overGRPC, credA), "two-1")
	fb := e.openFeed(e.terminal(overGRPCWeb, credB), "two-1")
	fo := e.openFeed(e.terminal(overGRPC, credOther), "two-2")

	// Every kind of ticket, as fulfilment's events say.
	o := order("two-1", 1)
	e.publish("confirmed", o, nil)
	checkedIn := then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	checkedIn.CheckIn = &fulfilmentv1.CheckInInfo{Time: timestamppb.Now(), Bay: "Bay 7"}
	e.publish("checked_in", checkedIn, nil)
	e.publish("not_accepted", then(checkedIn, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), &fulfilmentv1.Transition{Reason: "not accepted within 5m0s"})
	prep := then(checkedIn, fulfilmentv1.OrderState_ORDER_STATE_PREPARING)
	e.publish("preparing", prep, nil) // staff's own action: no ticket
	gone := then(prep, fulfilmentv1.OrderState_ORDER_STATE_PREPARING)
	gone.Lines[0].State = fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE
	e.publish("line_unavailable", gone, &fulfilmentv1.Transition{LineId: "l1", Reason: "out of milk"})
	ready := then(gone, fulfilmentv1.OrderState_ORDER_STATE_READY)
	e.publish("ready", ready, nil)
	reminded := then(ready, fulfilmentv1.OrderState_ORDER_STATE_READY)
	e.publish("expiring_soon", reminded, nil)
	locked := then(reminded, fulfilmentv1.OrderState_ORDER_STATE_READY)
	e.publish("pickup_locked", locked, &fulfilmentv1.Transition{Reason: "5 wrong pickup codes"})
	e.publish("expired", then(locked, fulfilmentv1.OrderState_ORDER_STATE_EXPIRED), nil)
	o2 := order("two-1", 2)
	e.publish("confirmed", o2, nil)
	e.publish("cancelled", then(o2, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED), &fulfilmentv1.Transition{Reason: "shopper changed their mind"})

	want := []posv1.TicketKind{
		posv1.TicketKind_TICKET_KIND_NEW_ORDER, posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN,
		posv1.TicketKind_TICKET_KIND_ESCALATION, posv1.TicketKind_TICKET_KIND_LINE_UNAVAILABLE,
		posv1.TicketKind_TICKET_KIND_EXPIRY_REMINDER, posv1.TicketKind_TICKET_KIND_PICKUP_LOCKED,
		posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED, posv1.TicketKind_TICKET_KIND_NEW_ORDER,
		posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED,
	}
	for name, f := range map[string]*feed{"gRPC terminal": fa, "gRPC-web terminal": fb} {
		got := f.take(len(want), 10*time.Second)
		checkIncreasing(t, got)
		var kinds []posv1.TicketKind
		for _, tk := range got {
			kinds = append(kinds, tk.GetKind())
		}
		if !slices.Equal(kinds, want) {
			t.Fatalf("%s got %v, want %v", name, kinds, want)
		}
		if msg := got[1].GetMessage(); !strings.Contains(msg, "Bay 7") {
			t.Errorf("check-in ticket says %q; want the bay", msg)
		}
		if msg := got[3].GetMessage(); !strings.Contains(msg, "Latte") || !strings.Contains(msg, "out of milk") {
			t.Errorf("line-unavailable ticket says %q; want the line and the reason", msg)
		}
		if msg := got[8].GetMessage(); !strings.Contains(msg, "changed their mind") {
			t.Errorf("cancel ticket says %q; want the reason", msg)
		}
		f.quiet(200 * time.Millisecond)
	}
	fo.quiet(200 * time.Millisecond)
}

func TestAnOrderIsEscalatedOnceHoweverOftenItIsReported(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "dup-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "dup-1")
	o := order("dup-1", 1)
	id := e.publish("confirmed", o, nil)
	e.publishWithID(id, "confirmed", o, nil) // the outbox relay retrying: same Nats-Msg-Id
	got := f.take(1, 5*time.Second)[0]
	// Two escalation events of one order (two timers, or a rewrite with a new event id).
	e.publish("not_accepted", then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
	e.publish("not_accepted", then(then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
	esc := f.take(1, 5*time.Second)[0]
	if esc.GetKind() != posv1.TicketKind_TICKET_KIND_ESCALATION || esc.GetSequence() != got.GetSequence()+1 {
		t.Fatalf("got %v #%d; want the escalation right after the new order", esc.GetKind(), esc.GetSequence())
	}
	f.quiet(500 * time.Millisecond)
	e.waitTickets("dup-1", 2)
}

func TestEventsOlderThanTheReplayWindowRaiseNoTicket(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "old-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "old-1")
	// A first deployment reads the stream's history: last week's orders are not news.
	stale := order("old-1", 1)
	e.publishAt(time.Now().Add(-96*time.Hour), "stale-event", "confirmed", stale, nil)
	fresh := order("old-1", 2)
	e.publish("confirmed", fresh, nil)
	if got := f.take(1, 5*time.Second)[0]; got.GetOrderId() != fresh.GetId() || got.GetSequence() != 1 {
		t.Fatalf("first ticket is for %s (#%d); want only the fresh order %s", got.GetOrderId(), got.GetSequence(), fresh.GetId())
	}
	f.quiet(200 * time.Millisecond)
}

func TestCheckInReachesConnectedTerminalsWithinASecond(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "here-1")
	f := e.openFeed(e.terminal(overGRPCWeb, cred), "here-1")
	o := order("here-1", 1)
	e.publish("confirmed", o, nil)
	f.take(1, 5*time.Second)

	in := then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	in.CheckIn = &fulfilmentv1.CheckInInfo{Time: timestamppb.Now(), Bay: "Spot 12"}
	start := time.Now()
	e.publish("checked_in", in, nil)
	got := f.take(1, time.Second)[0]
	took := time.Since(start)
	if got.GetKind() != posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN || got.GetOrder().GetCheckIn().GetBay() != "Spot 12" ||
		!strings.Contains(got.GetMessage(), "Spot 12") {
		t.Fatalf("got %v %q (bay %q); want a check-in ticket with the bay", got.GetKind(), got.GetMessage(), got.GetOrder().GetCheckIn().GetBay())
	}
	t.Logf("check-in reached the terminal in %s", took)
}

func TestStoreOwnEscalationTimeRaisesEscalationForOrdersNotAccepted(t *testing.T) {
	e := newEnv(t)
	_, err := e.admin().SetStoreSettings(context.Background(), connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "esc-1", EscalateAfter: durationpb.New(time.Second)}}))
	if err != nil {
		t.Fatal(err)
	}
	_, cred := e.register("Counter", "esc-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "esc-1")
	late := order("esc-1", 1)
	accepted := order("esc-1", 2)
	start := time.Now()
	e.publish("confirmed", late, nil)
	e.publish("confirmed", accepted, nil)
	e.publish("preparing", then(accepted, fulfilmentv1.OrderState_ORDER_STATE_PREPARING), nil)
	// Fulfilment's own (deployment-wide) escalation is ignored for a store with its own time.
	e.publish("not_accepted", then(late, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
	got := f.take(3, 10*time.Second)
	esc := got[2]
	if esc.GetKind() != posv1.TicketKind_TICKET_KIND_ESCALATION || esc.GetOrderId() != late.GetId() {
		t.Fatalf("third ticket is %v for %s; want the escalation of %s", esc.GetKind(), esc.GetOrderId(), late.GetId())
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("escalated after %s; want after the store's 1s", took)
	}
	if !strings.Contains(esc.GetMessage(), "1s") {
		t.Errorf("escalation says %q; want the store's time", esc.GetMessage())
	}
	f.quiet(1500 * time.Millisecond) // the accepted order is never escalated

	res, err := e.admin().GetStoreSettings(context.Background(), connect.NewRequest(&posv1.GetStoreSettingsRequest{StoreId: "esc-1"}))
	if err != nil || res.Msg.GetSettings().GetEscalateAfter().AsDuration() != time.Second {
		t.Fatalf("GetStoreSettings = %v, %v", res, err)
	}
	_, err = e.admin().SetStoreSettings(context.Background(), connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "esc-1", EscalateAfter: durationpb.New(48 * time.Hour)}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "escalate_after") {
		t.Fatalf("48h escalation: %v; want InvalidArgument naming escalate_after", err)
	}
}

// An order confirmed while its store had no escalation time of its own has no store timer:
// fulfilment's deployment-wide not_accepted must still reach the terminals after the store gets
// one (it was dropped because the store now had a time).
func TestOrderConfirmedBeforeItsStoreHadAnEscalationTimeIsStillEscalated(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "esc-2")
	f := e.openFeed(e.terminal(overGRPC, cred), "esc-2")
	o := order("esc-2", 1)
	e.publish("confirmed", o, nil)
	f.take(1, 5*time.Second) // NEW_ORDER, and no store timer: the store has no time yet

	if _, err := e.admin().SetStoreSettings(context.Background(), connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "esc-2", EscalateAfter: durationpb.New(time.Hour)}})); err != nil {
		t.Fatal(err)
	}
	e.publish("not_accepted", then(o, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), nil)
	if got := f.take(1, 5*time.Second)[0]; got.GetKind() != posv1.TicketKind_TICKET_KIND_ESCALATION || got.GetOrderId() != o.GetId() {
		t.Fatalf("got %v for %s; want the escalation of %s", got.GetKind(), got.GetOrderId(), o.GetId())
	}
}

// An order's confirmed event handled after its next one (two adapter copies side by side, a
// batch retried after the events behind it) must not start the store's timer again: the order
// is being prepared and is never escalated.
func TestConfirmedHandledAfterTheOrderMovedOnStartsNoEscalationTimer(t *testing.T) {
	e := newEnv(t)
	if _, err := e.admin().SetStoreSettings(context.Background(), connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "esc-3", EscalateAfter: durationpb.New(time.Second)}})); err != nil {
		t.Fatal(err)
	}
	_, cred := e.register("Counter", "esc-3")
	f := e.openFeed(e.terminal(overGRPC, cred), "esc-3")
	o := order("esc-3", 1)
	e.publish("preparing", then(o, fulfilmentv1.OrderState_ORDER_STATE_PREPARING), nil)
	e.publish("confirmed", o, nil)
	if got := f.take(1, 5*time.Second)[0]; got.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER {
		t.Fatalf("got %v; want the new order", got.GetKind())
	}
	f.quiet(2500 * time.Millisecond) // past the store's 1s and its sweep: no escalation
	// The cleared timer is due never, so a copy still running code from before tombstones,
	// which knows nothing of clearing, does not fire it either.
	var never bool
	if err := e.pool.QueryRow(context.Background(), `SELECT due_time = 'infinity' FROM escalation_timers WHERE order_id = $1`, o.GetId()).Scan(&never); err != nil || !never {
		t.Fatalf("the cleared timer: due never %v (%v); want due at infinity", never, err)
	}
}

func TestAcknowledgedTicketsAreNotSentAgainToThatTerminalOnly(t *testing.T) {
	e := newEnv(t)
	_, credA := e.register("A", "ack-1")
	_, credB := e.register("B", "ack-1")
	a, b := e.terminal(overGRPC, credA), e.terminal(overGRPC, credB)
	for i := range 3 {
		e.publish("confirmed", order("ack-1", i), nil)
	}
	fa := e.openFeed(a, "ack-1")
	got := fa.take(3, 5*time.Second)
	ack(t, a, "ack-1", got...)
	ack(t, a, "ack-1", got[0]) // twice is fine
	fa.close()

	fa = e.openFeed(a, "ack-1")
	fa.quiet(300 * time.Millisecond)
	fb := e.openFeed(b, "ack-1")
	if n := len(fb.take(3, 5*time.Second)); n != 3 {
		t.Fatalf("the other terminal got %d tickets", n)
	}

	_, err := a.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: "ack-1", TicketId: "not-a-ticket"}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "ticket_id") {
		t.Fatalf("bad ticket id: %v; want InvalidArgument naming ticket_id", err)
	}
	_, err = a.AckTicket(context.Background(), connect.NewRequest(&posv1.AckTicketRequest{StoreId: "ack-1", TicketId: "0190a8f0-0000-7000-8000-000000000000"}))
	if codeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown ticket: %v; want NotFound", err)
	}
}

// A terminal reconnecting to a feed of several pages, some of it acknowledged here and there,
// gets exactly what it has not acknowledged, in order, and then the tickets raised after: the
// acknowledged ones are passed over in the database, and the feed's end moves its cursor past
// those at the end.
func TestAReconnectGetsWhatItHasNotAcknowledgedAcrossPagesAndThenWhatComes(t *testing.T) {
	e := newEnv(t)
	const store, n = "ack-pages", 700
	terminal, cred := e.register("Counter", store)
	acked := func(seq int) bool { return seq%3 != 0 || seq > 690 } // the last ten acknowledged
	seedFeed(e, store, n, terminal, acked)
	var want []uint64
	for seq := 1; seq <= n; seq++ {
		if !acked(seq) {
			want = append(want, uint64(seq))
		}
	}
	f := e.openFeed(e.terminal(overGRPC, cred), store)
	defer f.close()
	got := f.take(len(want), 10*time.Second)
	for i, tk := range got {
		if tk.GetSequence() != want[i] {
			t.Fatalf("ticket %d of the backlog is %d, want %d", i, tk.GetSequence(), want[i])
		}
	}
	f.quiet(300 * time.Millisecond)
	o := order(store, 1)
	e.publish("confirmed", o, nil)
	live := f.take(1, 10*time.Second)
	if live[0].GetOrderId() != o.GetId() || live[0].GetSequence() != n+1 {
		t.Fatalf("after the backlog: ticket %d of order %s, want %d of %s", live[0].GetSequence(), live[0].GetOrderId(), n+1, o.GetId())
	}
}

// reconnectingTerminal is a well-behaved terminal app: it keeps its stream open, reconnecting
// after any error, drops duplicates by ticket id and acknowledges what it handled.
type reconnectingTerminal struct {
	mu       sync.Mutex
	seen     map[string]bool
	orders   map[string]bool
	conns    int
	dups     int
	disorder string
}

func (r *reconnectingTerminal) run(ctx context.Context, c posv1connect.TerminalServiceClient, store string) {
	for ctx.Err() == nil {
		stream, err := c.StreamTickets(ctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
		if err == nil {
			r.mu.Lock()
			r.conns++
			r.mu.Unlock()
			var last uint64
			for stream.Receive() {
				tk := stream.Msg().GetTicket()
				r.mu.Lock()
				if tk.GetSequence() <= last && r.disorder == "" {
					r.disorder = fmt.Sprintf("sequence %d after %d on one connection", tk.GetSequence(), last)
				}
				last = tk.GetSequence()
				if r.seen[tk.GetTicketId()] {
					r.dups++
				}
				r.seen[tk.GetTicketId()] = true
				r.orders[tk.GetOrderId()] = true
				r.mu.Unlock()
				// An acknowledgement lost to the restart only means the ticket comes again.
				_, _ = c.AckTicket(ctx, connect.NewRequest(&posv1.AckTicketRequest{StoreId: store, TicketId: tk.GetTicketId()}))
			}
			stream.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *reconnectingTerminal) missing(want []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range want {
		if !r.orders[id] {
			out = append(out, id)
		}
	}
	return out
}

func TestAdapterKilledAndRestartedWhileTicketsFlowLosesNoTicket(t *testing.T) {
	e := newEnv(t)
	stores := []string{"flow-1", "flow-2"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var terms []*reconnectingTerminal
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i, store := range stores {
		for j, p := range protocols {
			_, cred := e.register(fmt.Sprintf("T%d%d", i, j), store)
			r := &reconnectingTerminal{seen: map[string]bool{}, orders: map[string]bool{}}
			terms = append(terms, r)
			c := e.terminal(p, cred)
			wg.Go(func() { r.run(ctx, c, store) })
		}
	}

	const total = 300
	var want []string
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range total {
			o := order(stores[i%2], i)
			want = append(want, o.GetId())
			e.publish("confirmed", o, nil)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	// Kill the adapter (no grace: every connection cut, the consumer and relay stopped
	// wherever they are) twice while tickets flow, and bring it back.
	e.grace = time.Millisecond
	for _, after := range []int{20, 60} {
		testenv.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
			terms[0].mu.Lock()
			defer terms[0].mu.Unlock()
			if len(terms[0].seen) < after {
				return fmt.Errorf("terminal 0 has %d tickets, waiting for %d before the kill", len(terms[0].seen), after)
			}
			return nil
		})
		e.restart()
	}
	<-published

	for k, r := range terms {
		store := stores[k/2]
		var wantHere []string
		for i, id := range want {
			if stores[i%2] == store {
				wantHere = append(wantHere, id)
			}
		}
		testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if m := r.missing(wantHere); len(m) > 0 {
				return fmt.Errorf("terminal %d of %s misses %d of %d tickets, e.g. %s", k, store, len(m), len(wantHere), m[0])
			}
			return nil
		})
		r.mu.Lock()
		if r.disorder != "" {
			t.Errorf("terminal %d: %s", k, r.disorder)
		}
		if len(r.orders) != len(wantHere) {
			t.Errorf("terminal %d of %s got tickets for %d orders, want %d (another store's leaked in?)", k, store, len(r.orders), len(wantHere))
		}
		t.Logf("terminal %d: %d tickets over %d connections, %d duplicates dropped", k, len(r.seen), r.conns, r.dups)
		if r.conns < 3 {
			t.Errorf("terminal %d connected %d times; the restarts did not cut its stream", k, r.conns)
		}
		r.mu.Unlock()
	}
}

// Every kind of order event, delivered again long after the first time (past JetStream's
// duplicate window: here, the adapter's durable consumer lost and made again, which replays the
// stream), raises no ticket, starts or moves no escalation timer and takes no feed sequence:
// the adapter has recorded each event it handled. Preparing, then confirmed replayed after it,
// starts no timer either.
func TestEveryOrderEventDeliveredAgainLaterChangesNothing(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "red-1", map[string]int32{"LATTE-16": 10})
	if _, err := e.admin().SetStoreSettings(context.Background(), req(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "red-1", EscalateAfter: durationpb.New(time.Hour)}})); err != nil {
		t.Fatal(err)
	}
	_, cred := e.register("Counter", "red-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "red-1")

	waiting, prepared, other := order("red-1", 1), order("red-1", 2), order("red-1", 3)
	events := []struct {
		event string
		o     *fulfilmentv1.Order
	}{
		{"confirmed", waiting}, // an escalation timer starts
		{"confirmed", prepared},
		{"preparing", then(prepared, fulfilmentv1.OrderState_ORDER_STATE_PREPARING)}, // its timer cleared
		{"line_unavailable", then(then(prepared, fulfilmentv1.OrderState_ORDER_STATE_PREPARING), fulfilmentv1.OrderState_ORDER_STATE_PREPARING)},
		{"checked_in", then(waiting, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)},
		{"not_accepted", then(then(waiting, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)},
		{"confirmed", other},
		{"expiring_soon", then(other, fulfilmentv1.OrderState_ORDER_STATE_READY)},
		{"pickup_locked", then(then(other, fulfilmentv1.OrderState_ORDER_STATE_READY), fulfilmentv1.OrderState_ORDER_STATE_READY)},
		{"expired", then(then(then(other, fulfilmentv1.OrderState_ORDER_STATE_READY), fulfilmentv1.OrderState_ORDER_STATE_READY), fulfilmentv1.OrderState_ORDER_STATE_EXPIRED)},
		{"cancelled", then(then(then(waiting, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED), fulfilmentv1.OrderState_ORDER_STATE_CANCELLED)},
	}
	for _, ev := range events {
		e.publish(ev.event, ev.o, nil)
	}
	// Tickets: three new orders, a line unavailable, a check-in, a reminder, a lock, an expiry
	// and a cancellation. Not an escalation: the store escalates on its own timer (an hour),
	// not on fulfilment's not_accepted.
	const tickets = 9
	f.take(tickets, 10*time.Second)
	f.quiet(300 * time.Millisecond)
	state := func() string {
		t.Helper()
		var out string
		err := e.pool.QueryRow(context.Background(), `SELECT concat_ws(' ',
			(SELECT count(*) || ' tickets to #' || coalesce(max(seq), 0) FROM tickets WHERE store_id = 'red-1'),
			(SELECT 'feed at #' || last_seq FROM store_feeds WHERE store_id = 'red-1'),
			(SELECT count(*) || ' timers: ' || coalesce(string_agg(order_id || ' ' || due_time::text, ', ' ORDER BY order_id), '') FROM escalation_timers))`).Scan(&out)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := state()
	t.Logf("before: %s", before)

	e.stopAdapter()
	if err := e.js.DeleteConsumer(context.Background(), streams.EventsStream, posadapter.ConsumerName); err != nil {
		t.Fatal(err)
	}
	e.start()
	// The new consumer has read the whole stream again once it is level with it.
	testenv.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		c, err := e.js.Consumer(context.Background(), streams.EventsStream, posadapter.ConsumerName)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending > 0 || info.NumAckPending > 0 || info.Delivered.Consumer < uint64(len(events)) {
			return fmt.Errorf("consumer: %d delivered, %d pending, %d unacknowledged", info.Delivered.Consumer, info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if after := state(); after != before {
		t.Fatalf("the events delivered again changed the store's feed:\nbefore %s\nafter  %s", before, after)
	}
	e.waitTickets("red-1", tickets)
}

// An order's events can be handled out of order (a publish retried after later ones, a batch
// retried after the messages behind it, two copies side by side). Once its cancellation or
// expiry is on the board, nothing of the order comes after it: a late confirmed event would
// show a cancelled order as new, to be prepared.
func TestNoTicketOfAnOrderFollowsItsEnd(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "end-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "end-1")

	cancelled, expired := order("end-1", 1), order("end-1", 2)
	e.publish("cancelled", then(cancelled, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED), nil)
	e.publish("confirmed", cancelled, nil)
	e.publish("checked_in", cancelled, nil)
	e.publish("expired", then(expired, fulfilmentv1.OrderState_ORDER_STATE_EXPIRED), nil)
	e.publish("expiring_soon", expired, nil)
	e.publish("line_unavailable", expired, nil)
	e.publish("confirmed", expired, nil)
	marker := order("end-1", 3) // handled after all of the above: the stream keeps their order
	e.publish("confirmed", marker, nil)

	got := f.take(3, 5*time.Second)
	want := []struct {
		kind  posv1.TicketKind
		order string
	}{
		{posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED, cancelled.GetId()},
		{posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED, expired.GetId()},
		{posv1.TicketKind_TICKET_KIND_NEW_ORDER, marker.GetId()},
	}
	for i, w := range want {
		if got[i].GetKind() != w.kind || got[i].GetOrderId() != w.order {
			t.Fatalf("ticket %d: %v of %s; want %v of %s (an ended order's late events raise nothing)",
				i+1, got[i].GetKind(), got[i].GetOrderId(), w.kind, w.order)
		}
	}
	f.quiet(300 * time.Millisecond)
}

// Two copies handling one order's cancellation and its late confirmed event at once: the one
// that raises second sees the first's tickets, so the cancelled order is not raised as new
// after its cancellation. So too for a store's very first tickets, when it has no feed row yet
// for the first to lock.
func TestALateNewOrderWaitsForAConcurrentCancellationAndRaisesNothing(t *testing.T) {
	e := newEnv(t)
	t.Run("a store with a feed", func(t *testing.T) { lateNewOrderAfterCancellation(t, e, "end-2", true) })
	t.Run("a store's first tickets", func(t *testing.T) { lateNewOrderAfterCancellation(t, e, "end-3", false) })
}

func lateNewOrderAfterCancellation(t *testing.T, e *env, store string, hasFeed bool) {
	ctx := context.Background()
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	o := order(store, 1)
	ticket := func(kind posv1.TicketKind) *posv1.Ticket {
		return &posv1.Ticket{TicketId: uuid.NewString(), StoreId: store, Kind: kind, OrderId: o.GetId(), Order: o, CreateTime: timestamppb.Now()}
	}
	if hasFeed {
		if _, err := e.pool.Exec(ctx, `INSERT INTO store_feeds (store_id, last_seq) VALUES ($1, 0)`, store); err != nil {
			t.Fatal(err)
		}
	}

	cancelling, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cancelling.Rollback(ctx)
	if raised, err := a.RaiseTickets(ctx, cancelling, ticket(posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED)); err != nil || len(raised) != 1 {
		t.Fatalf("raise the cancellation: %v, %v", raised, err)
	}

	late := make(chan []*posv1.Ticket, 1)
	go func() {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			t.Error(err)
			late <- nil
			return
		}
		defer tx.Rollback(ctx)
		raised, err := a.RaiseTickets(ctx, tx, ticket(posv1.TicketKind_TICKET_KIND_NEW_ORDER))
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			t.Error(err)
		}
		late <- raised
	}()
	// The late raise waits on the feed's lock (or the cancellation's new feed row); the
	// cancellation commits meanwhile.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var waiting int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late raise never waited on the cancellation's lock")
		}
	}
	if err := cancelling.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if raised := <-late; len(raised) != 0 {
		t.Fatalf("raised %v (seq %d) after the order's cancellation", raised[0].GetKind(), raised[0].GetSequence())
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE order_id = $1`, o.GetId()).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the order has %d tickets (%v); want only its cancellation", n, err)
	}
}

// A terminal revoked while it reads a long backlog slowly (a stolen tablet) gets nothing more
// than what was already on its way: the stream ends at the next ticket, not after the backlog.
func TestARevokedTerminalGetsNoMoreOfItsBacklog(t *testing.T) {
	e := newEnv(t)
	const store, n = "revoked-1", 120
	id, cred := e.register("Stolen tablet", store)
	ctx := context.Background()
	big := strings.Repeat("x", 100<<10) // ~100 KB a ticket: flow control holds the rest back
	var ts []*posv1.Ticket
	for range n {
		ts = append(ts, &posv1.Ticket{TicketId: uuid.NewString(), StoreId: store, Kind: posv1.TicketKind_TICKET_KIND_NEW_ORDER,
			OrderId: "ord-" + uuid.NewString(), Message: big, CreateTime: timestamppb.Now()})
	}
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RaiseTickets(ctx, tx, ts...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.terminal(overGRPC, cred).StreamTickets(sctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first ticket: %v", stream.Err())
	}
	time.Sleep(500 * time.Millisecond) // the terminal reads no more; the adapter's sends wait
	if _, err := e.admin().RevokeTerminal(ctx, req(&posv1.RevokeTerminalRequest{TerminalId: id})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	got := 1
	for stream.Receive() {
		got++
	}
	if got == n || codeOf(stream.Err()) != connect.CodeUnauthenticated {
		t.Fatalf("after its revocation the terminal received %d of %d tickets, then %v; want the stream ended Unauthenticated before the backlog's end", got, n, stream.Err())
	}
}

// A terminal that keeps opening ticket streams of a store without closing them (a leaking
// client, or connections its network left half-open) holds at most eight: each one past that
// ends its oldest, the newest all work, and another terminal of the store is not touched, nor
// the same terminal's stream of another store.
func TestATerminalHoldsAtMostEightStreamsAndTheNewestWin(t *testing.T) {
	e := newEnv(t)
	const store = "many-1"
	_, cred := e.register("Leaky tablet", store, "many-2")
	_, other := e.register("Counter", store)
	fo := e.openFeed(e.terminal(overGRPC, other), store)
	f2 := e.openFeed(e.terminal(overGRPC, cred), "many-2")
	var feeds []*feed
	for range 12 {
		feeds = append(feeds, e.openFeed(e.terminal(overGRPC, cred), store))
	}
	for i, f := range feeds[:4] {
		if err := f.end(5 * time.Second); codeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("stream %d of 12 ended with %v; want ResourceExhausted (the oldest are closed)", i+1, err)
		}
	}
	e.publish("confirmed", order(store, 1), nil)
	for _, f := range append(feeds[4:], fo) {
		f.take(1, 5*time.Second)
	}
	e.publish("confirmed", order("many-2", 2), nil)
	f2.take(1, 5*time.Second)
}

// A terminal of many stores (a regional kiosk) keeps a stream per store: that is no pile-up,
// and none of them is ended.
func TestATerminalOfNineStoresKeepsAStreamOfEach(t *testing.T) {
	e := newEnv(t)
	var stores []string
	for i := range 9 {
		stores = append(stores, fmt.Sprintf("kiosk-%d", i))
	}
	_, cred := e.register("Regional kiosk", stores...)
	var feeds []*feed
	for _, s := range stores {
		feeds = append(feeds, e.openFeed(e.terminal(overGRPC, cred), s))
	}
	for i, s := range stores {
		e.publish("confirmed", order(s, i+1), nil)
	}
	for _, f := range feeds {
		f.take(1, 5*time.Second)
	}
}

// slowReader is an HTTP client that buffers little of what it is sent (a small socket receive
// buffer and, over HTTP/2, a small stream window), so a server soon waits on a client that
// reads nothing.
func slowReader(t *testing.T, h2 bool) *http.Client {
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	tr := &http.Transport{DialContext: dialer.DialContext,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}}
	if h2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// A stream that must end while its client reads nothing (a stolen tablet set aside, a
// connection its network left half-open) is stuck in a send: after the grace its writes are
// cut and it ends, over HTTP/2 (gRPC) and HTTP/1.1 (gRPC-web) alike, instead of holding its
// goroutine until TCP gives up.
func TestAnEndedStreamStuckInASendIsCutAfterTheGrace(t *testing.T) {
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.StreamEndGrace = 300 * time.Millisecond }))
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	for i, p := range []protocol{overGRPC, overGRPCWeb} {
		store := fmt.Sprintf("stuck-%d", i)
		id, cred := e.register("Set-aside tablet", store)
		raiseBigTickets(t, e, a, store)
		closeStream := stuckStream(t, e, p, store, cred)
		// The client reads no more, and the terminal is revoked.
		time.Sleep(500 * time.Millisecond)
		if _, err := e.admin().RevokeTerminal(t.Context(), req(&posv1.RevokeTerminalRequest{TerminalId: id})); err != nil {
			t.Fatal(err)
		}
		testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if n := a.OpenStreams(); n != 0 {
				return fmt.Errorf("%v: %d streams still open while the client reads nothing", p.name, n)
			}
			return nil
		})
		closeStream()
	}
}

// stuckStream opens store's ticket stream with credential (a terminal's or a staff token) over
// p, on a client that reads nothing after the first ticket (slowReader), and gives what closes
// it.
func stuckStream(t *testing.T, e *env, p protocol, store, credential string) (closeStream func()) {
	t.Helper()
	client := posv1connect.NewTerminalServiceClient(slowReader(t, p.h2), e.base,
		append([]connect.ClientOption{connect.WithInterceptors(bearer(credential))}, p.opts...)...)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.StreamTickets(ctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if !stream.Receive() {
		cancel()
		t.Fatalf("%v: no first ticket: %v", p.name, stream.Err())
	}
	return func() {
		cancel()
		_ = stream.Close()
	}
}

// pipeListener serves the server ends of net.Pipe connections: a write there waits until the
// client reads it, as a TCP write does once the socket's buffers are full.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// An idle stream whose client stopped reading just as its buffers filled is revoked: the
// stream itself returns at once, but writing its end (the trailers) waits on the client. That
// write is cut after the grace too: the client that reads again finds the connection closed,
// not a status that was left waiting.
func TestAStreamStuckWritingItsEndIsCutAfterTheGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	e := newEnv(t, withConfig(func(c *posadapter.Config) { c.StreamEndGrace = grace }))
	e.mu.Lock()
	a := e.adapter
	e.mu.Unlock()
	lis := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan struct{})
	go func() { defer close(served); _ = a.Serve(ctx, lis, time.Second) }()
	t.Cleanup(func() { close(lis.done); cancel(); <-served })

	const store = "stuck-end"
	id, cred := e.register("Set-aside tablet", store)
	e.publish("confirmed", order(store, 1), nil)
	e.waitTickets(store, 1)

	client, server := net.Pipe()
	defer client.Close()
	lis.conns <- server
	msg, _ := proto.Marshal(&posv1.StreamTicketsRequest{StoreId: store})
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) // a gRPC-web frame
	hreq, _ := http.NewRequest(http.MethodPost, "http://pipe"+posv1connect.TerminalServiceStreamTicketsProcedure, bytes.NewReader(append(body, msg...)))
	hreq.Header.Set("Content-Type", "application/grpc-web+proto")
	hreq.Header.Set("Authorization", "Bearer "+cred)
	go func() { _ = hreq.Write(client) }()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(client), hreq)
	if err != nil {
		t.Fatal(err)
	}
	frame := func() (flags byte, payload []byte, err error) {
		var h [5]byte
		if _, err := io.ReadFull(res.Body, h[:]); err != nil {
			return 0, nil, err
		}
		payload = make([]byte, binary.BigEndian.Uint32(h[1:]))
		_, err = io.ReadFull(res.Body, payload)
		return h[0], payload, err
	}
	if flags, _, err := frame(); err != nil || flags != 0 {
		t.Fatalf("the ticket: flags %#x, %v", flags, err)
	}
	// The client reads nothing more; the terminal is revoked while its stream is idle.
	if _, err := e.admin().RevokeTerminal(t.Context(), req(&posv1.RevokeTerminalRequest{TerminalId: id})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(grace + time.Second)
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if flags, payload, err := frame(); err == nil && flags&0x80 != 0 {
		t.Fatalf("the stream's end %q was still waiting for the client after the grace: not cut", strings.TrimSpace(string(payload)))
	}
}

// An order accepted in time, while the pos-adapter was restarting (a deploy), is not escalated
// as "not accepted in time" when the adapter comes back with the acceptance's event still
// waiting in JetStream: timers fire only once the events published before they fell due are
// handled. Before, the sweep started with the consumer and won the race.
func TestAnOrderAcceptedInTimeWhileTheAdapterRestartsIsNotEscalated(t *testing.T) {
	e := newEnv(t)
	if _, err := e.admin().SetStoreSettings(context.Background(), connect.NewRequest(&posv1.SetStoreSettingsRequest{
		Settings: &posv1.StoreSettings{StoreId: "resc-1", EscalateAfter: durationpb.New(2 * time.Second)}})); err != nil {
		t.Fatal(err)
	}
	_, cred := e.register("Counter", "resc-1")
	f := e.openFeed(e.terminal(overGRPC, cred), "resc-1")
	o := order("resc-1", 1)
	confirmedAt := time.Now()
	e.publish("confirmed", o, &fulfilmentv1.Transition{ToState: o.GetState(), Time: timestamppb.New(confirmedAt)})
	if got := f.take(1, 5*time.Second)[0]; got.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER {
		t.Fatalf("got %v; want the new order", got.GetKind())
	}
	f.close()

	e.stopAdapter()
	// Staff accept it half a second after confirmation: well within the store's 2s.
	acc := then(o, fulfilmentv1.OrderState_ORDER_STATE_PREPARING)
	e.publish("preparing", acc, &fulfilmentv1.Transition{ToState: acc.GetState(), Time: timestamppb.New(confirmedAt.Add(500 * time.Millisecond))})
	time.Sleep(time.Until(confirmedAt.Add(3 * time.Second))) // the adapter is back after the store's time
	e.start()

	f2 := e.openFeed(e.terminal(overGRPC, cred), "resc-1")
	deadline := time.After(3 * time.Second)
	for {
		select {
		case tk := <-f2.tickets:
			if tk.GetKind() == posv1.TicketKind_TICKET_KIND_ESCALATION {
				t.Fatalf("order %s accepted 0.5s after confirmation (store escalates after 2s) got an ESCALATION ticket %q after the adapter restarted",
					tk.GetOrderId(), tk.GetMessage())
			}
		case <-deadline:
			return
		}
	}
}
