package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// An event keeps the traceparent of the traced work that wrote it, and the relay sends it as
// the message's traceparent header: one written in a span's context (Enqueue) or for one
// (Event.TraceParent, written on a batch's context), or on a batch's traced context. An
// untraced event has no such header.
func TestAnEventCarriesItsWritersTraceToItsMessage(t *testing.T) {
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider()))
	e := setup(t)
	ctx := t.Context()
	spanCtx := func(b byte) context.Context {
		var tid trace.TraceID
		var sid trace.SpanID
		tid[0], sid[0] = b, b
		return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	}
	want := map[string]string{} // event id → traceparent header
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		traced := spanCtx(1)
		id, err := outbox.Enqueue(traced, tx, productCreated, wrapperspb.String("traced"))
		want[id] = tracing.TraceParent(traced)
		if err != nil {
			return err
		}
		id, err = outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("untraced"))
		want[id] = ""
		if err != nil {
			return err
		}
		own, batch := outbox.DeterministicID("own"), outbox.DeterministicID("batch's")
		want[own], want[batch] = tracing.TraceParent(spanCtx(2)), tracing.TraceParent(spanCtx(3))
		return outbox.EnqueueBatch(spanCtx(3), tx, []outbox.Event{
			{ID: own, Subject: productCreated, Msg: wrapperspb.String("its own"), TraceParent: want[own]},
			{ID: batch, Subject: productCreated, Msg: wrapperspb.String("the batch's")},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	traced := 0
	for id, tp := range want {
		if tp == "" {
			continue
		}
		traced++
		if len(tp) != len("00-")+32+1+16+len("-01") {
			t.Fatalf("event %s: traceparent %q is not a W3C traceparent", id, tp)
		}
	}
	if traced != 3 {
		t.Fatalf("%d of the events are traced; want 3", traced)
	}
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{PollInterval: 20 * time.Millisecond}))
	waitForStreamCount(t, e.js, len(want), 10*time.Second)
	for _, m := range published(t, e.js) {
		id := m.Headers().Get("Nats-Msg-Id")
		if got := m.Headers().Get("traceparent"); got != want[id] {
			t.Errorf("event %s published with traceparent %q; want %q", id, got, want[id])
		}
	}
}
