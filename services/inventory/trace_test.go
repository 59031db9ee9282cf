package inventory_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/tracing"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// The stock events a traced reserve writes (reserves run in batches, on a context of their
// own) and those a traced release writes keep the request's trace, so a checkout's trace runs
// on into them.
func TestTheEventsOfATracedReserveAndReleaseKeepTheirTrace(t *testing.T) {
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider()))
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)

	call := func(name, subject string, req, res proto.Message) trace.SpanContext {
		t.Helper()
		if _, err := e.pool.Exec(t.Context(), `DELETE FROM outbox`); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctx, span := sdktrace.NewTracerProvider().Tracer("test").Start(ctx, name)
		defer span.End()
		if err := natsrpc.Call(ctx, e.nc, subject, req, res); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return span.SpanContext()
	}
	check := func(name string, sc trace.SpanContext) {
		t.Helper()
		rows, err := e.pool.Query(t.Context(), `SELECT subject, coalesce(trace_parent, '') FROM outbox ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var subject, tp string
			if err := rows.Scan(&subject, &tp); err != nil {
				t.Fatal(err)
			}
			n++
			if len(tp) < 35 || tp[3:35] != sc.TraceID().String() {
				t.Errorf("%s: its event on %s has traceparent %q, not of the request's trace %s", name, subject, tp, sc.TraceID())
			}
		}
		if n == 0 {
			t.Fatalf("%s wrote no event", name)
		}
	}
	reserve := call("reserve", inventory.SubjectReserveHolds, order("o-traced", "s1", "LATTE", 1), &inventoryv1.ReserveHoldsResponse{})
	check("reserve", reserve)
	release := call("release", inventory.SubjectReleaseHolds, &inventoryv1.ReleaseHoldsRequest{OrderId: "o-traced",
		Reason: inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED}, &inventoryv1.ReleaseHoldsResponse{})
	check("release", release)
}
