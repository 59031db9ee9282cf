package fulfilment_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
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
