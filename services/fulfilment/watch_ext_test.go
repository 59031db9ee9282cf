package fulfilment_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// watchNext receives the next message of a WatchOrder stream, failing after a few seconds.
func watchNext(t *testing.T, stream grpc.ServerStreamingClient[fulfilmentv1.WatchOrderResponse]) *fulfilmentv1.WatchOrderResponse {
	t.Helper()
	type result struct {
		msg *fulfilmentv1.WatchOrderResponse
		err error
	}
	got := make(chan result, 1)
	go func() { m, err := stream.Recv(); got <- result{m, err} }()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("watch: %v", r.err)
		}
		return r.msg
	case <-time.After(5 * time.Second):
		t.Fatal("watch: no message within 5s")
		return nil
	}
}

func TestWatchOrderSendsTheCurrentStateFirstThenEachChangeUntilTheOrderEnds(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)

	ctx, cancel := context.WithCancel(e.asCustomer("alice"))
	stream, err := e.orders.WatchOrder(ctx, &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first := watchNext(t, stream)
	if first.GetOrder().GetState() != confirmed || first.GetTransition() != nil || first.GetOrder().GetPickupCode() != o.GetPickupCode() {
		t.Fatalf("first message: %s, transition %v, code %q; want the current CONFIRMED order with its code and no transition",
			first.GetOrder().GetState(), first.GetTransition(), first.GetOrder().GetPickupCode())
	}
	e.accept("s1", o.GetId())
	if m := watchNext(t, stream); m.GetOrder().GetState() != preparing || m.GetTransition().GetToState() != preparing {
		t.Fatalf("after accept: %s via %v, want PREPARING", m.GetOrder().GetState(), m.GetTransition())
	}

	// The app loses its connection and comes back: the current state first.
	cancel()
	e.markReady("s1", o.GetId())
	stream, err = e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if m := watchNext(t, stream); m.GetOrder().GetState() != ready || m.GetTransition() != nil {
		t.Fatalf("first message after reconnecting: %s, want READY without a transition", m.GetOrder().GetState())
	}
	if _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	if m := watchNext(t, stream); m.GetOrder().GetState() != collected || m.GetTransition().GetActor().GetId() != "barista-1" {
		t.Fatalf("after hand-over: %s by %v, want COLLECTED by the barista", m.GetOrder().GetState(), m.GetTransition().GetActor())
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the final state the stream gave %v, want its end", err)
	}

	// Watching a finished order: its state, then the end.
	stream, err = e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if m := watchNext(t, stream); m.GetOrder().GetState() != collected {
		t.Fatalf("watching a collected order: %s", m.GetOrder().GetState())
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("watching a collected order: then %v, want the end", err)
	}
}

// counter reads a counter of the process's default Prometheus registry (summed over labels
// matching want).
func counter(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// secondCopy runs another fulfilment process on e's schema (no place_order, no gRPC): its
// transitions reach e's streams only through the order events. configure, if given, edits its
// configuration.
func (e *env) secondCopy(configure ...func(*fulfilment.Config)) *fulfilment.Service {
	e.t.Helper()
	cfg := fulfilment.Config{Pool: e.pool, NATS: testenv.NATSConn(e.t, e.ns), PickupCodeSecret: testSecret, Logger: testenv.Logger(e.t)}
	fastTimers(&cfg)
	for _, c := range configure {
		c(&cfg)
	}
	svc, err := fulfilment.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.run("second fulfilment", svc.Run)
	return svc
}

var barista = &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_STAFF, Id: "barista-2"}

// checkWatchMessage fails unless m is the owner's view of an order at a consistent version:
// its history as long as its version, its transition the last entry, and the pickup code
// exactly while the order is open.
func checkWatchMessage(t *testing.T, m *fulfilmentv1.WatchOrderResponse, code string) {
	t.Helper()
	o := m.GetOrder()
	if int64(len(o.GetHistory())) != o.GetVersion() {
		t.Fatalf("message at version %d carries %d history entries", o.GetVersion(), len(o.GetHistory()))
	}
	if m.GetTransition() != nil && !proto.Equal(m.GetTransition(), o.GetHistory()[len(o.GetHistory())-1]) {
		t.Fatalf("message transition %v is not the last history entry %v", m.GetTransition(), o.GetHistory()[len(o.GetHistory())-1])
	}
	open := o.GetState() == confirmed || o.GetState() == preparing || o.GetState() == ready
	if open && o.GetPickupCode() != code || !open && o.GetPickupCode() != "" {
		t.Fatalf("%s order shows pickup code %q (the code is %q)", o.GetState(), o.GetPickupCode(), code)
	}
}

func TestWatchOrderSendsThisProcessesChangesWithoutReadingTheDatabase(t *testing.T) {
	// No periodic re-read during the test: every message after the first must come from the
	// changes themselves.
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.WatchPoll = time.Hour }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	stream, err := e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	checkWatchMessage(t, watchNext(t, stream), o.GetPickupCode())
	rereads := counter(t, "handoff_fulfilment_watch_rereads_total", nil)
	updates := counter(t, "handoff_fulfilment_watch_messages_total", map[string]string{"source": "update"})

	e.accept("s1", o.GetId())
	m := watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != preparing || m.GetOrder().GetVersion() != 3 {
		t.Fatalf("after accept: %s at version %d, want PREPARING at 3", m.GetOrder().GetState(), m.GetOrder().GetVersion())
	}
	// The accept's event reaches this process too; the stream is past it already.
	e.waitEvents(o.GetId(), "confirmed", "preparing")
	e.markReady("s1", o.GetId())
	m = watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != ready || m.GetOrder().GetPickupDeadline() == nil {
		t.Fatalf("after ready: %s, deadline %v", m.GetOrder().GetState(), m.GetOrder().GetPickupDeadline())
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready")
	if _, err := e.handOver("s1", o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	m = watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != collected {
		t.Fatalf("after hand-over: %s", m.GetOrder().GetState())
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the final state the stream gave %v, want its end", err)
	}
	if n := counter(t, "handoff_fulfilment_watch_rereads_total", nil) - rereads; n != 0 {
		t.Fatalf("the stream read the order %v times for changes made in its own process, want 0", n)
	}
	if n := counter(t, "handoff_fulfilment_watch_messages_total", map[string]string{"source": "update"}) - updates; n != 3 {
		t.Fatalf("%v messages sent from updates, want 3", n)
	}
}

func TestWatchOrderFollowsAnotherProcessesChangesFromTheirEvents(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.WatchPoll = time.Hour }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	other := e.secondCopy()
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	stream, err := e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first := watchNext(t, stream)
	checkWatchMessage(t, first, o.GetPickupCode())
	rereads := counter(t, "handoff_fulfilment_watch_rereads_total", nil)

	if _, err := other.Accept(e.ctx, "s1", barista, o.GetId()); err != nil {
		t.Fatal(err)
	}
	m := watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != preparing || m.GetTransition().GetActor().GetId() != "barista-2" {
		t.Fatalf("after the other process accepted: %s by %v", m.GetOrder().GetState(), m.GetTransition().GetActor())
	}
	if n := counter(t, "handoff_fulfilment_watch_rereads_total", nil) - rereads; n != 0 {
		t.Fatalf("the stream read the order %v times for a change its event carried, want 0", n)
	}

	// An event that does not follow on from what the stream sent (a forged or out-of-order
	// one, or one after a lost event) is never sent as it is: the stream reads the truth.
	forged := proto.CloneOf(m.GetOrder())
	forged.Version, forged.State, forged.History, forged.PickupCode = m.GetOrder().GetVersion()+5, collected, nil, ""
	data, err := proto.Marshal(&fulfilmentv1.OrderChanged{Order: forged, Transition: &fulfilmentv1.Transition{ToState: collected}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cart.Publish("handoff.fulfilment.order.collected", data); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if counter(t, "handoff_fulfilment_watch_rereads_total", nil) == rereads {
			return errNotYet
		}
		return nil
	})

	if _, err := other.MarkReady(e.ctx, "s1", barista, o.GetId()); err != nil {
		t.Fatal(err)
	}
	m = watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != ready {
		t.Fatalf("after the forged event and ready: %s at version %d, want READY", m.GetOrder().GetState(), m.GetOrder().GetVersion())
	}
	if _, err := other.HandOver(e.ctx, "s1", barista, o.GetId(), o.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	m = watchNext(t, stream)
	checkWatchMessage(t, m, o.GetPickupCode())
	if m.GetOrder().GetState() != collected || m.GetOrder().GetVersion() != 5 {
		t.Fatalf("after hand-over: %s at version %d, want COLLECTED at 5", m.GetOrder().GetState(), m.GetOrder().GetVersion())
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the final state the stream gave %v, want its end", err)
	}
}

func TestWatchOrderNeverGoesBackUnderConcurrentChangesFromTwoProcesses(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.WatchPoll = time.Hour }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	other := e.secondCopy()
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	stream, err := e.orders.WatchOrder(e.asCustomer("alice"), &fulfilmentv1.WatchOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	last := watchNext(t, stream)
	shopper := &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: "alice"}

	// Both processes check the shopper in at changing bays at once: every call taken is a new
	// transition, committed in some order, heard here directly or through events. An order
	// takes 5 check-ins (the first and 4 changes of bay); the others are refused, however
	// many come at once.
	const perProcess, taken = 15, 5
	var wg sync.WaitGroup
	var refused atomic.Int32
	for p, svc := range []*fulfilment.Service{e.svc, other} {
		for i := range perProcess {
			wg.Go(func() {
				_, err := svc.CheckIn(e.ctx, "alice", shopper, o.GetId(), fmt.Sprintf("bay %d-%d", p, i))
				switch status.Code(err) {
				case codes.OK:
				case codes.FailedPrecondition:
					refused.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if refused.Load() != 2*perProcess-taken {
		t.Fatalf("%d of %d check-ins refused; want all but %d", refused.Load(), 2*perProcess, taken)
	}
	var want int64
	var bay string
	if err := e.pool.QueryRow(e.ctx, `SELECT version, check_in_bay FROM orders WHERE id = $1`, o.GetId()).Scan(&want, &bay); err != nil {
		t.Fatal(err)
	}
	if want != last.GetOrder().GetVersion()+taken {
		t.Fatalf("order at version %d after %d check-ins from version %d", want, taken, last.GetOrder().GetVersion())
	}
	for last.GetOrder().GetVersion() < want {
		m := watchNext(t, stream)
		checkWatchMessage(t, m, o.GetPickupCode())
		if m.GetOrder().GetVersion() <= last.GetOrder().GetVersion() {
			t.Fatalf("the stream went from version %d back to %d", last.GetOrder().GetVersion(), m.GetOrder().GetVersion())
		}
		if !slices.EqualFunc(last.GetOrder().GetHistory(), m.GetOrder().GetHistory()[:len(last.GetOrder().GetHistory())],
			func(a, b *fulfilmentv1.Transition) bool { return proto.Equal(a, b) }) {
			t.Fatalf("history at version %d rewrites what version %d showed", m.GetOrder().GetVersion(), last.GetOrder().GetVersion())
		}
		last = m
	}
	if got := last.GetOrder().GetCheckIn().GetBay(); got != bay {
		t.Fatalf("the stream's last message shows bay %q, the order has %q", got, bay)
	}
}
