package natsrpc_test

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/tracing"
)

// A NATS request refused for the caller's reasons (no stock: FailedPrecondition; a missing
// order: NotFound) is no more a server failure than the same refusal over gRPC: its spans carry
// the code, without an error status, or every out-of-stock checkout would show as a failed
// trace.
func TestARefusedNATSRequestIsNotAnErrorSpan(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))))
	srv, cli := setup(t)
	serve(t, srv, func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Error(codes.FailedPrecondition, "out of stock")
	})
	if _, err := call(t.Context(), cli, "x"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Call: %v", err)
	}
	got := spans.GetSpans()
	if len(got) == 0 {
		t.Fatal("no spans")
	}
	for _, s := range got {
		if s.Status.Code == otelcodes.Error {
			t.Errorf("%s span %q has status Error (%q) for a FailedPrecondition refusal", s.SpanKind, s.Name, s.Status.Description)
		}
		if !slices.ContainsFunc(s.Attributes, func(a attribute.KeyValue) bool { return a.Value.AsString() == "FailedPrecondition" }) {
			t.Errorf("%s span %q does not carry the code: %v", s.SpanKind, s.Name, s.Attributes)
		}
	}
}
