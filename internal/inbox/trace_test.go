package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// Each event of a batch continues the trace of the work that wrote it, though the batch is
// handled in one transaction: its processing span is a child of the span its traceparent
// header names, and what the batch handler writes for it (inbox.TraceParent) names that span.
func TestEachEventOfABatchContinuesItsWritersTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))))
	e := setup(t)
	const total = 24
	writers := map[string]trace.SpanContext{} // event id → the span that wrote it
	for i := range total {
		id := fmt.Sprint("traced-", i)
		writers[id] = publishTraced(t, e.js, id, i)
	}

	var (
		mu      sync.Mutex
		written = map[string]string{} // event id → the traceparent the handler would write with
		batched atomic.Int32
	)
	cfg := batchConfig(t, "traced")
	cfg.BatchHandler = func(ctx context.Context, _ pgx.Tx, msgs []jetstream.Msg) error {
		if len(msgs) > 1 {
			batched.Add(int32(len(msgs)))
		}
		mu.Lock()
		defer mu.Unlock()
		for _, msg := range msgs {
			id, err := inbox.EventID(msg)
			if err != nil {
				return err
			}
			written[id] = inbox.TraceParent(ctx, msg)
		}
		return nil
	}
	run(t, e.pool, e.js, cfg, func(ctx context.Context, _ pgx.Tx, msg jetstream.Msg) error {
		mu.Lock()
		defer mu.Unlock()
		id, err := inbox.EventID(msg)
		if err != nil {
			return err
		}
		written[id] = tracing.TraceParent(ctx)
		return nil
	})
	waitSettled(t, e.js, "traced", total)
	if batched.Load() == 0 {
		t.Fatal("no events were handled in batches: the test did not reach what it is for")
	}

	processing := map[trace.SpanID]tracetest.SpanStub{} // by parent
	for _, s := range spans.GetSpans() {
		if s.Name == "process traced" && s.SpanKind == trace.SpanKindConsumer {
			processing[s.Parent.SpanID()] = s
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, writer := range writers {
		s, ok := processing[writer.SpanID()]
		if !ok || s.SpanContext.TraceID() != writer.TraceID() {
			t.Errorf("event %s: no processing span in its writer's trace, under its writer's span", id)
			continue
		}
		want := fmt.Sprintf("00-%s-%s-01", writer.TraceID(), s.SpanContext.SpanID())
		if written[id] != want {
			t.Errorf("event %s: the handler writes with traceparent %q; want its processing span's, %q", id, written[id], want)
		}
	}
}

// publishTraced publishes event id as written in a span of a trace of its own, and returns that
// span's context.
func publishTraced(t *testing.T, js jetstream.JetStream, id string, i int) trace.SpanContext {
	t.Helper()
	var tid trace.TraceID
	var sid trace.SpanID
	tid[0], tid[15], sid[7] = byte(i+1), 0xcd, byte(i+1)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	data, _ := proto.Marshal(wrapperspb.String(id))
	m := nats.NewMsg(orderConfirmed)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(outbox.EventTypeHeader, "google.protobuf.StringValue")
	tracing.SetTraceParent(m.Header, tracing.TraceParent(trace.ContextWithSpanContext(context.Background(), sc)))
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return sc
}

// An event of a batch that failed, handled alone after it, has one processing span for both
// tries, not an error span beside the one of its handling alone: one bad event must not paint
// its batch's others as failures.
func TestAnEventOfAFailedBatchHasOneProcessingSpan(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))))
	e := setup(t)
	const total = 8
	writers := map[string]trace.SpanContext{}
	for i := range total {
		id := fmt.Sprint("fb-", i)
		writers[id] = publishTraced(t, e.js, id, i)
	}
	var batches atomic.Int32
	cfg := batchConfig(t, "fallback-traced")
	cfg.BatchHandler = func(context.Context, pgx.Tx, []jetstream.Msg) error {
		batches.Add(1)
		return errors.New("a set-based statement refused")
	}
	run(t, e.pool, e.js, cfg, func(context.Context, pgx.Tx, jetstream.Msg) error { return nil })
	waitSettled(t, e.js, "fallback-traced", total)
	if batches.Load() == 0 {
		t.Fatal("no batch was tried: the test did not reach what it is for")
	}
	byParent := map[trace.SpanID][]tracetest.SpanStub{}
	for _, s := range spans.GetSpans() {
		if s.Name == "process fallback-traced" {
			byParent[s.Parent.SpanID()] = append(byParent[s.Parent.SpanID()], s)
		}
	}
	for id, w := range writers {
		got := byParent[w.SpanID()]
		errs := 0
		for _, s := range got {
			if s.Status.Code == otelcodes.Error {
				errs++
			}
		}
		if len(got) != 1 || errs != 0 {
			t.Errorf("event %s, handled fine alone after its batch failed: %d processing spans, %d of them errors; want one, no error", id, len(got), errs)
		}
	}
}
