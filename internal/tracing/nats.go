package tracing

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Headers are NATS message headers (nats.Header and micro.Headers are both this map).
type Headers = map[string][]string

// StartRequest starts the client span of a NATS request to subject and writes its trace
// context into h. With tracing off it returns ctx and a span that records nothing.
func StartRequest(ctx context.Context, subject string, h Headers) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx, span := tracer().Start(ctx, "nats "+subject, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(natsAttributes(subject)...))
	otel.GetTextMapPropagator().Inject(ctx, headerCarrier(h))
	return ctx, span
}

// StartHandling starts the server span of answering a NATS request to subject, a child of the
// span whose context h carries.
func StartHandling(ctx context.Context, subject string, h Headers) (context.Context, trace.Span) {
	if !Enabled() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = otel.GetTextMapPropagator().Extract(ctx, headerCarrier(h))
	return tracer().Start(ctx, "nats "+subject, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(natsAttributes(subject)...))
}

func natsAttributes(subject string) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject)}
}

// headerCarrier reads and writes trace context in NATS headers, whose keys are kept as written
// (traceparent, tracestate, baggage: lower case on both sides).
type headerCarrier Headers

func (c headerCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
