// Package tracing follows a request across Handoff's parts with OpenTelemetry: a span for each
// call an edge takes, each gRPC call a service answers and each NATS request it makes or
// answers, joined into one trace by the W3C traceparent header (in gRPC metadata and NATS
// headers alike). So a slow checkout shows where its time went: the gateway, the cart, the
// order placed over NATS, the reservation behind it.
//
// It is off unless an OTLP endpoint is configured, with OpenTelemetry's own variables
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, over gRPC or, with
// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, HTTP; OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES as the SDK reads them). Off, nothing is
// installed on the order path: the interceptors are left out when servers are built.
//
// Events relayed through the outbox and JetStream carry their writer's traceparent, and a
// consumer's processing of each continues that trace (events.go).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation names Handoff's spans' tracer.
const instrumentation = "github.com/handoff-dev/handoff"

var enabled atomic.Bool

// Enabled reports whether spans are recorded: parts built while it is false carry no tracing.
func Enabled() bool { return enabled.Load() }

// Configured reports whether the environment names an OTLP endpoint for traces (and does not
// switch the SDK off).
func Configured(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Start exports spans over OTLP/gRPC when the environment configures an endpoint (see the
// package doc), naming the process service (OTEL_SERVICE_NAME overrides it). The returned stop
// flushes what is buffered; without an endpoint Start does nothing and stop is a no-op.
func Start(ctx context.Context, service string) (stop func(context.Context) error, err error) {
	if !Configured(os.Getenv) {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := exporter(ctx, os.Getenv)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// The sampler is the SDK's: parent-based, all sampled, unless OTEL_TRACES_SAMPLER says.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	restore := Install(tp)
	return func(ctx context.Context) error {
		defer restore()
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: flush spans: %w", err)
		}
		return nil
	}, nil
}

// exporter is the OTLP exporter of the protocol the environment names (OpenTelemetry's
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL): grpc, the default, or
// http/protobuf. Both exporters read the endpoint and the rest from the environment themselves.
func exporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	name, protocol := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		name, protocol = "OTEL_EXPORTER_OTLP_PROTOCOL", getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch strings.TrimSpace(protocol) {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: %s=%q: want grpc or http/protobuf", name, protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, nil
}

// Install makes tp the provider of every span, with W3C trace context as the propagator, and
// turns tracing on; the returned restore puts back what was there. Start calls it; tests give
// an in-memory provider.
func Install(tp trace.TracerProvider) (restore func()) {
	prevTP, prevProp, prevOn := otel.GetTracerProvider(), otel.GetTextMapPropagator(), enabled.Load()
	otel.SetTracerProvider(tp)
	// Trace context only: baggage from an outside caller would ride along into every part.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	enabled.Store(true)
	return func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		enabled.Store(prevOn)
	}
}

func tracer() trace.Tracer { return otel.Tracer(instrumentation) }
