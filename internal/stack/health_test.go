package stack_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/pgcluster"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// healthOf asks addr's grpc.health.v1 for service ("" the server as a whole).
func healthOf(t *testing.T, addr, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return res.GetStatus(), err
}

// waitHealth waits until every address of addrs answers want for the server as a whole.
func waitHealth(t *testing.T, addrs map[string]string, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) {
	t.Helper()
	testenv.CheckFor(t, within, 200*time.Millisecond, func() error {
		for name, addr := range addrs {
			if st, err := healthOf(t, addr, ""); err != nil || st != want {
				return fmt.Errorf("%s health: %v (%v); want %v", name, st, err, want)
			}
		}
		return nil
	})
}

// startNATSAt runs a NATS server with JetStream on port, its store in dir.
func startNATSAt(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// A probe naming a service on the service's own port (grpc-health-probe -service, a Kubernetes
// gRPC probe's service) is answered, as the gateway answers it. Before, each service port knew
// only "" and answered NotFound for its own services.
func TestServicePortsKnowTheirOwnServicesInHealth(t *testing.T) {
	r := stacktest.Start(t)
	for svc, name := range map[string]string{
		stack.TargetCatalog:    "handoff.catalog.v1.CatalogService",
		stack.TargetInventory:  "handoff.inventory.v1.StoreLocatorService",
		stack.TargetCart:       "handoff.cart.v1.CartService",
		stack.TargetFulfilment: "handoff.fulfilment.v1.OrderService",
	} {
		if st, err := healthOf(t, r.ServiceAddrs[svc], name); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %s on %s's own port: %v, %v; want SERVING", name, svc, st, err)
		}
	}
}

// While NATS is away every server of the process says NOT_SERVING (a readiness probe takes the
// copy out of rotation: no checkout can work without NATS), and SERVING again once it is back.
// Before, health said SERVING throughout.
func TestHealthIsNotServingWhileNATSIsDown(t *testing.T) {
	port, dir := testenv.FreePort(t), t.TempDir()
	ns := startNATSAt(t, port, dir)
	r := stacktest.Start(t, func(c *stack.Config) { c.NATSURL = ns.ClientURL() })
	addrs := map[string]string{"cart": r.ServiceAddrs[stack.TargetCart], "fulfilment": r.ServiceAddrs[stack.TargetFulfilment],
		"gateway": r.GatewayAddr, "pos-adapter": r.POSAdapterAddr}
	waitHealth(t, addrs, healthpb.HealthCheckResponse_SERVING, 5*time.Second)
	ns.Shutdown()
	ns.WaitForShutdown()
	waitHealth(t, addrs, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	startNATSAt(t, port, dir)
	waitHealth(t, addrs, healthpb.HealthCheckResponse_SERVING, 20*time.Second)
}

// While a service's PostgreSQL is away its health says NOT_SERVING, and SERVING once it is
// back; the process runs on throughout and serves again.
func TestHealthIsNotServingWhileTheDatabaseIsDown(t *testing.T) {
	port, dir := testenv.FreePort(t), t.TempDir()
	ctx := context.Background()
	start := func() *pgcluster.Cluster {
		pg, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: dir, Port: port, Ephemeral: true, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Stop(context.Background()) })
		return pg
	}
	pg := start()
	cfg := stacktest.Config(t)
	cfg.DatabaseURL = pg.URL("postgres")
	r, errc, cancel := startStack(t, cfg)
	defer cancel()
	catalog := map[string]string{"catalog": r.ServiceAddrs[stack.TargetCatalog]}
	waitHealth(t, catalog, healthpb.HealthCheckResponse_SERVING, 5*time.Second)
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, catalog, healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
	start()
	waitHealth(t, catalog, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	select {
	case err := <-errc:
		t.Fatalf("Handoff stopped while its database was away: %v", err)
	default:
	}
	conn, err := grpc.NewClient(r.ServiceAddrs[stack.TargetCatalog], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := catalogv1.NewCatalogServiceClient(conn).ListProducts(cctx, &catalogv1.ListProductsRequest{PageSize: 3}); err != nil {
		t.Errorf("ListProducts after the database came back: %v", err)
	}
}

// A NATS server that comes back without its JetStream store (a pod without its volume, a store
// reset) gets the streams declared again, and events flow. Before, they were declared only at
// start: every relay failed until each process was restarted by hand.
func TestEventsFlowAgainAfterNATSComesBackWithoutItsStreams(t *testing.T) {
	port := testenv.FreePort(t)
	ns := startNATSAt(t, port, t.TempDir())
	r := stacktest.Start(t, func(c *stack.Config) { c.NATSURL = ns.ClientURL() })
	ns.Shutdown()
	ns.WaitForShutdown()
	ns2 := startNATSAt(t, port, t.TempDir()) // a fresh store
	nc, err := nats.Connect(ns2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	createProduct(t, r, "After the restart", "AFTER-1")
	testenv.CheckFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		st, err := js.Stream(context.Background(), streams.EventsStream)
		if err != nil {
			return fmt.Errorf("the events stream after NATS came back without its store: %w", err)
		}
		if st.CachedInfo().State.Msgs == 0 {
			return fmt.Errorf("the product's event is not in the stream yet")
		}
		return nil
	})
}

// Until the demo chain is loaded, health says NOT_SERVING: a script or probe that waits for
// SERVING rather than the ready line must not find a chain without its stores and products.
// Before, health said SERVING from the moment the servers listened. Here the catalog's part of
// the load waits on its advisory lock, held by the test.
func TestHealthIsNotServingUntilTheDemoChainIsLoaded(t *testing.T) {
	cfg := stacktest.Config(t)
	cfg.GatewayAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	lock := testenv.Connect(t, cfg.DatabaseURL)
	if _, err := lock.Exec(context.Background(), `SELECT pg_advisory_lock(hashtext('catalog.demo'))`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- stack.Run(ctx, cfg, nil) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("stack stopped with an error: %v", err)
		}
	}()
	gateway := map[string]string{"gateway": cfg.GatewayAddr}
	waitHealth(t, gateway, healthpb.HealthCheckResponse_NOT_SERVING, 20*time.Second)
	time.Sleep(time.Second) // still loading
	waitHealth(t, gateway, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	if _, err := lock.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext('catalog.demo'))`); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, gateway, healthpb.HealthCheckResponse_SERVING, 20*time.Second)
}

// records keeps the messages logged, for tests of what a run says.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// A clean stop closes the NATS connection on purpose: that is not NATS going down. Before,
// every stop warned "a dependency is down".
func TestACleanStopDoesNotReportNATSDown(t *testing.T) {
	rec := &records{}
	cfg := stacktest.Config(t)
	cfg.Logger = slog.New(rec)
	_, stop := runUntilReady(t, cfg)
	stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, m := range rec.msgs {
		if strings.Contains(m, "a dependency is down") {
			t.Errorf("a clean stop logged %q", m)
		}
	}
}

// After NATS comes back without its JetStream store, the durable consumers are declared again
// too, not only the streams: orders reach the terminals again without a restart. Before, each
// consumer's session only complained ("no responders", no heartbeat) for ever.
func TestConsumersAreDeclaredAgainAfterNATSComesBackWithoutItsStore(t *testing.T) {
	port := testenv.FreePort(t)
	ns := startNATSAt(t, port, t.TempDir())
	stacktest.Start(t, func(c *stack.Config) { c.NATSURL = ns.ClientURL() })
	ns.Shutdown()
	ns.WaitForShutdown()
	ns2 := startNATSAt(t, port, t.TempDir()) // a fresh store
	nc, err := nats.Connect(ns2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 90*time.Second, time.Second, func() error {
		for _, durable := range []string{"pos-adapter-order-events", "cart-rejected-orders", "fulfilment-store-states"} {
			if _, err := js.Consumer(context.Background(), streams.EventsStream, durable); err != nil {
				return fmt.Errorf("consumer %s after NATS came back without its store: %w", durable, err)
			}
		}
		return nil
	})
}

// With a drain delay, a stop first turns health NOT_SERVING while every server goes on taking
// new connections and calls, and drains only after the delay: a load balancer or Kubernetes
// Service, which stop sending new connections a moment after the signal, sees the copy leave
// instead of having its connections refused. Before, the listeners closed at the signal.
func TestAStopWithADrainDelayKeepsTakingCallsWhileItSaysNotServing(t *testing.T) {
	cfg := stacktest.Config(t)
	cfg.DrainDelay = 3 * time.Second
	r, errc, cancel := startStack(t, cfg)
	edges := map[string]string{"gateway": r.GatewayAddr, "pos-adapter": r.POSAdapterAddr}
	waitHealth(t, edges, healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	stopped := time.Now()
	cancel()
	// A new connection each time (healthOf dials), answered, NOT_SERVING.
	waitHealth(t, edges, healthpb.HealthCheckResponse_NOT_SERVING, 2*time.Second)
	if since := time.Since(stopped); since < cfg.DrainDelay {
		conn, err := grpc.NewClient(r.GatewayAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancelCall := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancelCall()
		if _, err := catalogv1.NewCatalogServiceClient(conn).ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 1}); err != nil {
			t.Errorf("a shopper's call on a new connection during the drain delay: %v; want it answered", err)
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
		if took := time.Since(stopped); took < cfg.DrainDelay {
			t.Errorf("stopped %s after the signal, within the %s drain delay", took, cfg.DrainDelay)
		}
	case <-time.After(time.Minute):
		t.Fatal("not stopped within a minute")
	}
}

// createProduct creates a product of one variant, sku, through the catalog's admin API as an
// admin: one event in the catalog's outbox.
func createProduct(t *testing.T, r stack.Ready, name, sku string) {
	t.Helper()
	tok, err := r.Keys.Issue(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(r.ServiceAddrs[stack.TargetCatalog], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	if _, err := catalogv1.NewCatalogAdminServiceClient(conn).CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
		Name: name, CategoryId: demo.Seattle().Categories[0].ID,
		Variants: []*catalogv1.Variant{{Sku: sku, Name: "one", Price: &commonv1.Money{AmountMinor: 100, CurrencyCode: "USD"}}},
	}}); err != nil {
		t.Fatalf("create product %s: %v", name, err)
	}
}
