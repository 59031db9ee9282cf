package tracing_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/tracing"
)

const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"

// edgeCall serves one call through the edge interceptor and returns the outgoing metadata a
// backend call from its handler would carry (what grpcserver.Channel and the client
// interceptors send on).
func edgeCall(t *testing.T, header http.Header) metadata.MD {
	t.Helper()
	var got metadata.MD
	h := connect.NewUnaryHandler("/edge.Svc/Do", func(ctx context.Context, _ *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		got, _ = metadata.FromOutgoingContext(tracing.Outgoing(ctx))
		return connect.NewResponse(&emptypb.Empty{}), nil
	}, connect.WithInterceptors(tracing.EdgeInterceptor()))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req := connect.NewRequest(&emptypb.Empty{})
	for k, v := range header {
		req.Header()[k] = v
	}
	if _, err := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+"/edge.Svc/Do").CallUnary(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	return got
}

// An outside caller's traceparent is linked, not continued, and cannot force sampling.
func TestACallersTraceparentAtAnEdgeIsLinkedNotContinued(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	t.Cleanup(tracing.Install(tp))
	md := edgeCall(t, http.Header{"Traceparent": {"00-" + callerTrace + "-00f067aa0ba902b7-01"}})
	if n := len(spans.GetSpans()); n != 0 {
		t.Fatalf("caller's sampled flag forced %d spans to be recorded under a never-sample root sampler", n)
	}
	if tpv := md.Get("traceparent"); len(tpv) == 1 && len(tpv[0]) > 35 && tpv[0][3:35] == callerTrace {
		t.Fatalf("backend metadata continues the caller's trace: %v", tpv)
	}
}

// An outside caller's W3C baggage must not be carried into the services' calls either: the
// edge does not trust the caller's trace context, and baggage is the same kind of header.
func TestACallersBaggageAtAnEdgeIsNotForwarded(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))))
	md := edgeCall(t, http.Header{
		"Traceparent": {"00-" + callerTrace + "-00f067aa0ba902b7-01"},
		"Baggage":     {"tenant=evil,sampling.priority=1"},
	})
	if len(md.Get("traceparent")) == 0 {
		t.Fatalf("no traceparent in the backend call's metadata at all: %v", md)
	}
	if b := md.Get("baggage"); len(b) > 0 {
		t.Fatalf("the caller's baggage reaches the services' metadata: baggage=%q", b)
	}
}

type mdProbe struct {
	healthpb.UnimplementedHealthServer
	got metadata.MD
}

func (p *mdProbe) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	p.got, _ = metadata.FromIncomingContext(ctx)
	return &healthpb.HealthCheckResponse{}, nil
}

// Nor through the one-process mode's in-process channel, as the gateway calls the cart: the
// service's handler never sees the internet caller's baggage.
func TestACallersBaggageAtAnEdgeReachesNoServiceInProcess(t *testing.T) {
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider()))
	ch := grpcserver.InProcess(slog.New(slog.DiscardHandler), nil)
	p := &mdProbe{}
	healthpb.RegisterHealthServer(ch, p)
	client := healthpb.NewHealthClient(ch)
	h := connect.NewUnaryHandler("/edge.Svc/Do", func(ctx context.Context, _ *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			return nil, err
		}
		return connect.NewResponse(&emptypb.Empty{}), nil
	}, connect.WithInterceptors(tracing.EdgeInterceptor()))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req := connect.NewRequest(&emptypb.Empty{})
	req.Header().Set("Baggage", "tenant=evil")
	if _, err := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+"/edge.Svc/Do").CallUnary(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if b := p.got.Get("baggage"); len(b) > 0 {
		t.Fatalf("the service's handler got the internet caller's baggage: %q (traceparent %q)", b, p.got.Get("traceparent"))
	}
}
