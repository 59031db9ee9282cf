package tracing_test

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// Spans still in the batch processor's buffer when Handoff stops (default 5 s schedule delay)
// reach the collector by the time Run returns, and the globals are put back.
func TestAStopFlushesTheSpansStillBuffered(t *testing.T) {
	col := startCollector(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // nothing exported but by the stop's flush

	cfg := stacktest.Config(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan stack.Ready, 1)
	errc := make(chan error, 1)
	go func() { errc <- stack.Run(ctx, cfg, func(r stack.Ready) { readyc <- r }) }()
	var ready stack.Ready
	select {
	case ready = <-readyc:
	case err := <-errc:
		t.Fatalf("start: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("not ready")
	}
	checkout(t, ready.GatewayAddr, ready.Keys)
	if _, ok := col.serviceOf("handoff.cart.v1.CartService/Checkout"); ok {
		t.Fatal("exported before the stop; the test proves nothing")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no stop")
	}
	if _, ok := col.serviceOf("handoff.cart.v1.CartService/Checkout"); !ok {
		t.Fatal("the checkout's spans, buffered at the stop, never reached the collector")
	}
	if tracing.Enabled() {
		t.Fatal("tracing still on after the stop")
	}
}
