package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/handoff-dev/handoff/internal/tracing"
)

// A collector spoken to over OTLP/HTTP (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, port 4318)
// gets the spans; a protocol Handoff does not speak is refused at the start, naming the
// variable, rather than tracing on and sending gRPC frames to an HTTP endpoint for good.
func TestSpansGoOverTheOTLPProtocolTheEnvironmentNames(t *testing.T) {
	var posts atomic.Int64
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer col.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

	stop, err := tracing.Start(t.Context(), "handoff-test")
	if err != nil {
		t.Fatalf("Start with http/protobuf: %v", err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "one")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if posts.Load() == 0 {
		t.Fatal("the HTTP collector received no spans")
	}

	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := tracing.Start(t.Context(), "handoff-test"); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("Start with http/json: %v; want it refused naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
	if tracing.Enabled() {
		t.Fatal("tracing on after a refused start")
	}
}
