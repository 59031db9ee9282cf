package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Events written through the outbox keep the traceparent of the span that wrote them, and the
// relay sends it as the message's header, so a consumer's processing of the event continues
// the request's trace: a checkout's trace runs on to the ticket raised at the store. Only the
// traceparent is kept (not tracestate or baggage): the event is stored, and baggage from a
// caller stops at the edges anyway.

// TraceParent is the W3C traceparent of ctx's span, to be stored with an event ctx's work
// writes; "" when tracing is off or ctx has no span.
func TraceParent(ctx context.Context) string {
	if !Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c[traceParentHeader]
}

// traceParentHeader is the W3C Trace Context header (and NATS header) name.
const traceParentHeader = "traceparent"

// SetTraceParent adds traceparent tp, as TraceParent returned it, to NATS headers h.
func SetTraceParent(h Headers, tp string) {
	if tp != "" {
		h[traceParentHeader] = []string{tp}
	}
}

// SpanContext is ctx's span context, kept by work that is done later on another context (a
// batch's) on behalf of ctx's request; zero when tracing is off.
func SpanContext(ctx context.Context) trace.SpanContext {
	if !Enabled() {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(ctx)
}

// WithSpanContext is ctx carrying sc (from SpanContext) as its span's context, so that what is
// written on ctx names sc's trace; ctx itself when sc is zero.
func WithSpanContext(ctx context.Context, sc trace.SpanContext) context.Context {
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, sc)
}

// StartProcessing starts the consumer span of consumer's processing of a JetStream message on
// subject, a child of the span whose traceparent its headers h carry (the work that wrote the
// event), or the root of a trace of its own when they carry none. With tracing off it returns
// ctx and a span that records nothing.
func StartProcessing(ctx context.Context, consumer, subject string, h Headers) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = propagation.TraceContext{}.Extract(ctx, headerCarrier(h))
	return tracer().Start(ctx, "process "+consumer, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", subject),
		attribute.String("messaging.consumer.group.name", consumer),
	))
}

// EndProcessing ends a span StartProcessing started, an error span when err is not nil.
func EndProcessing(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
