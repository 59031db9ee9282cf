package tracing_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/tracing"
)

// With tracing off, what every NATS request and its handling run of it (natsrpc's Call and
// serve) allocates nothing: the order path pays nothing for a feature switched off.
func TestTracingOffCostsANATSRequestNothing(t *testing.T) {
	if tracing.Enabled() {
		t.Fatal("tracing on at the start of the test: another test left it on")
	}
	h := map[string][]string{"a": {"b"}}
	for name, err := range map[string]error{"answer": nil, "refusal": status.Error(codes.NotFound, "no such order")} {
		n := testing.AllocsPerRun(1000, func() {
			_, span := tracing.StartRequest(context.Background(), "handoff.rpc.x", h)
			tracing.End(span, err)
			_, span = tracing.StartHandling(context.Background(), "handoff.rpc.x", h)
			tracing.End(span, err)
		})
		if n > 0 {
			t.Errorf("%s: %.0f allocations a request with tracing off; want none", name, n)
		}
	}
}
