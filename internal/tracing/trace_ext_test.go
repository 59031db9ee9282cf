package tracing_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/internal/tracing"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// checkout places one order through the gateway over gRPC-web, as a shopper's app does.
func checkout(t *testing.T, gatewayAddr string, keys *auth.KeySet) {
	t.Helper()
	tok, err := keys.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bearer := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
	cart := cartv1connect.NewCartServiceClient(http.DefaultClient, "http://"+gatewayAddr, connect.WithGRPCWeb(), connect.WithInterceptors(bearer))
	created, err := cart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{
		Lines: []*cartv1.NewCartLine{{Sku: "CROISSANT", Quantity: 1}},
		Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
			Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000,
		}}},
	}))
	if err != nil {
		t.Fatalf("CreateCart: %v", err)
	}
	if _, err := cart.Checkout(t.Context(), connect.NewRequest(&cartv1.CheckoutRequest{CartId: created.Msg.GetCart().GetId(), IdempotencyKey: "traced-1"})); err != nil {
		t.Fatalf("Checkout: %v", err)
	}
}

// A checkout is one trace: the gateway's span, the cart service's, the order placed over NATS
// (its request and its handling in fulfilment) and the reservation fulfilment asks of
// inventory, each a child of the one before.
func TestACheckoutIsOneTraceFromTheGatewayToInventory(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(tracing.Install(tp))
	ready := stacktest.Start(t)
	checkout(t, ready.GatewayAddr, ready.Keys)

	if err := checkoutTrace(spans.GetSpans(), []step{
		{"handoff.cart.v1.CartService/Checkout", trace.SpanKindServer}, // the cart service, behind the gateway
		{"nats handoff.rpc.fulfilment.place_order", trace.SpanKindClient},
		{"nats handoff.rpc.fulfilment.place_order", trace.SpanKindServer},
		{"nats handoff.rpc.inventory.reserve_holds", trace.SpanKindClient},
		{"nats handoff.rpc.inventory.reserve_holds", trace.SpanKindServer},
	}); err != nil {
		t.Fatal(err)
	}
}

// A checkout's trace runs on through the events its order's confirmation wrote: the
// pos-adapter's processing of order.confirmed (a JetStream consumer, handling events in
// batches) descends from fulfilment's handling of the order, and the ticket it raised, reaching
// the store's live feed, from that: the trace shows where the time from checkout to ticket
// went, the outbox relay's wait included.
func TestACheckoutsTraceRunsOnToTheTicketAtTheStore(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(tracing.Install(tp))
	ready := stacktest.Start(t)
	checkout(t, ready.GatewayAddr, ready.Keys)

	testenv.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return checkoutTrace(spans.GetSpans(), []step{
			{"nats handoff.rpc.fulfilment.place_order", trace.SpanKindServer},
			{"process pos-adapter-order-events", trace.SpanKindConsumer},
			{"process pos-adapter-ticket-feed", trace.SpanKindConsumer},
		})
	})
}

// step is a span of a trace, found by its name and kind.
type step struct {
	name string
	kind trace.SpanKind
}

// checkoutTrace checks that the trace of the gateway's Checkout span among all holds a span for
// each of steps, each descending from the one before it.
func checkoutTrace(all tracetest.SpanStubs, steps []step) error {
	var edge *tracetest.SpanStub
	for i, s := range all {
		if s.Name == "handoff.cart.v1.CartService/Checkout" && s.InstrumentationScope.Name != "github.com/handoff-dev/handoff" {
			edge = &all[i]
		}
	}
	if edge == nil {
		return fmt.Errorf("no span of the gateway's Checkout among %d spans: %v", len(all), names(all))
	}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range all {
		if s.SpanContext.TraceID() == edge.SpanContext.TraceID() {
			byID[s.SpanContext.SpanID()] = s
		}
	}
	parent := *edge
	for _, step := range steps {
		var found *tracetest.SpanStub
		for _, s := range byID {
			if s.Name == step.name && s.SpanKind == step.kind && s.SpanContext.SpanID() != parent.SpanContext.SpanID() && descends(byID, s, parent) {
				found = &s
				break
			}
		}
		if found == nil {
			return fmt.Errorf("no %s span %q under %q in the checkout's trace: %v", step.kind, step.name, parent.Name, names(all))
		}
		parent = *found
	}
	return nil
}

// descends reports whether s is a descendant of ancestor within spans.
func descends(spans map[trace.SpanID]tracetest.SpanStub, s, ancestor tracetest.SpanStub) bool {
	for i := 0; i < 64; i++ {
		p, ok := spans[s.Parent.SpanID()]
		if !ok {
			return false
		}
		if p.SpanContext.SpanID() == ancestor.SpanContext.SpanID() {
			return true
		}
		s = p
	}
	return false
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.SpanKind.String() + " " + s.Name + " (" + s.InstrumentationScope.Name + ") " + s.SpanContext.TraceID().String()[:6] + "/" + s.SpanContext.SpanID().String()[:6] + "<-" + s.Parent.SpanID().String()[:6]
	}
	return out
}

// collector is an OTLP trace collector: what an operator points OTEL_EXPORTER_OTLP_ENDPOINT at.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string]string // span name → service.name of its resource
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans[s.GetName()] = service
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (c *collector) serviceOf(span string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.spans[span]
	return s, ok
}

// startCollector runs a collector until t ends, named by OTEL_EXPORTER_OTLP_ENDPOINT meanwhile.
func startCollector(t *testing.T) *collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{spans: map[string]string{}}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, col)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	return col
}

// With OpenTelemetry's variables naming a collector, a running Handoff sends it its spans,
// named for the part that made them.
func TestSpansAreExportedToTheConfiguredCollector(t *testing.T) {
	col := startCollector(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	ready := stacktest.Start(t)
	checkout(t, ready.GatewayAddr, ready.Keys)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if service, ok := col.serviceOf("handoff.cart.v1.CartService/Checkout"); ok {
			if service != "handoff-all" {
				t.Fatalf("the checkout's span came from service %q; want handoff-all", service)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector had no span of the checkout 30 s after it")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Without those variables nothing is traced, and nothing is installed on the order path.
func TestTracingIsOffUnlessAnEndpointIsConfigured(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		env  func(string) string
		want bool
	}{
		{env(), false},
		{env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), true},
		{env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4317"), true},
		{env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317", "OTEL_SDK_DISABLED", "true"), false},
		{env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317", "OTEL_TRACES_EXPORTER", "none"), false},
	} {
		if got := tracing.Configured(c.env); got != c.want {
			t.Errorf("Configured = %v; want %v", got, c.want)
		}
	}
	stop, err := tracing.Start(t.Context(), "handoff-test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop(t.Context()) }()
	if tracing.Enabled() {
		t.Fatal("tracing on with no endpoint configured")
	}
}

// Between processes the trace context goes in the call's metadata: the server's span is a child
// of the client's.
func TestAGRPCCallCarriesItsTraceToAnotherProcess(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(tracing.Install(tp))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	su, ss := tracing.ServerInterceptors()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(su), grpc.ChainStreamInterceptor(ss))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cu, cs := tracing.ClientInterceptors()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(cu), grpc.WithChainStreamInterceptor(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	var client, server *tracetest.SpanStub
	all := spans.GetSpans()
	for i, s := range all {
		switch s.SpanKind {
		case trace.SpanKindClient:
			client = &all[i]
		case trace.SpanKindServer:
			server = &all[i]
		}
	}
	if client == nil || server == nil || server.Parent.SpanID() != client.SpanContext.SpanID() || server.SpanContext.TraceID() != client.SpanContext.TraceID() {
		t.Fatalf("spans %v; want the server's a child of the client's", names(all))
	}
}

// A served call's log line names its trace, so the one leads to the other.
func TestAServedCallsLogLineNamesItsTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	t.Cleanup(tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))))
	var logs testenv.LockedBuffer
	srv := grpcserver.New(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { _ = srv.Serve(ctx, lis, time.Second); close(served) }()
	t.Cleanup(func() { stop(); <-served })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	var server *tracetest.SpanStub
	all := spans.GetSpans()
	for i := range all {
		if all[i].Name == "grpc.health.v1.Health/Check" {
			server = &all[i]
		}
	}
	if server == nil {
		t.Fatalf("no span of the health check: %v", names(all))
	}
	if want := "trace_id=" + server.SpanContext.TraceID().String(); !strings.Contains(logs.String(), want) {
		t.Fatalf("the call's log does not say %s:\n%s", want, logs.String())
	}
}
