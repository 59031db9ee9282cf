package cart_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a cart service served over real gRPC on a loopback port, pricing against a real
// catalog (demo chain loaded) over a real NATS server. The catalog's events reach NATS through
// its outbox relay, as in the stack, and its admin API is served too.
type env struct {
	t            *testing.T
	nats         *server.Server
	catalog      *catalog.Service
	catalogAdmin catalogv1.CatalogAdminServiceClient
	catRPC       stoppable // the catalog's NATS endpoints, to stop
	chain        demo.Chain
	cart         *cart.Service
	pool         *pgxpool.Pool // the cart's
	client       cartv1.CartServiceClient
}

// newEnv starts the env; configure may change the cart's configuration. The cart's caches
// keep answers for an hour unless configured otherwise, so a test that sees a change did so
// through the catalog's events, never the TTL.
func newEnv(t *testing.T, configure ...func(*cart.Config)) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.NATS(t), chain: demo.Seattle()}

	catPool := testenv.Pool(t, "", catalog.Migrations())
	e.catalog = catalog.New(catalog.Config{Pool: catPool, Currency: "USD", Logger: testenv.Logger(t)})
	if _, err := e.catalog.LoadDemo(t.Context(), e.chain); err != nil {
		t.Fatalf("load demo catalog: %v", err)
	}
	e.catRPC = e.serveNATS("catalog", e.catalog.RegisterNATS)
	e.relay(catPool)

	e.pool = testenv.Pool(t, "", cart.Migrations(), cart.PoolOptions()...)
	cfg := cart.Config{
		Pool:            e.pool,
		NATS:            testenv.NATSConn(t, e.nats),
		Currency:        "USD",
		Logger:          testenv.Logger(t),
		CheckoutTimeout: 10 * time.Second,
		LookupTimeout:   2 * time.Second,
		CacheTTL:        time.Hour,
	}
	for _, f := range configure {
		f(&cfg)
	}
	e.cart = cart.New(cfg)
	srv := grpc.NewServer()
	e.cart.RegisterGRPC(srv)
	e.catalog.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)
	e.client = cartv1.NewCartServiceClient(conn)
	e.catalogAdmin = catalogv1.NewCatalogAdminServiceClient(conn)
	return e
}

// relay publishes the outbox of pool's schema to JetStream until the test ends, as the stack
// does for every service.
func (e *env) relay(pool *pgxpool.Pool) {
	e.t.Helper()
	js, err := jetstream.New(testenv.NATSConn(e.t, e.nats), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := streams.Ensure(e.t.Context(), js, streams.Config{}); err != nil {
		e.t.Fatalf("declare streams: %v", err)
	}
	r := outbox.NewRelay(pool, js, outbox.RelayConfig{Logger: testenv.Logger(e.t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			e.t.Errorf("outbox relay: %v", err)
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

// stoppable is a service's NATS endpoints on a connection of their own.
type stoppable struct {
	svc *natsrpc.Service
	nc  *nats.Conn
}

// Stop takes the endpoints away and returns only once the server has dropped their
// subscriptions. The micro service drains them, and a drain's unsubscribe is only queued
// when Stop returns, so without the flush a request sent next may still be answered.
func (s stoppable) Stop() error {
	if err := s.svc.Stop(); err != nil {
		return err
	}
	return s.nc.Flush()
}

// serveNATS registers a service's NATS endpoints on a connection of its own and returns
// them, so a test can stop them.
func (e *env) serveNATS(name string, register func(*natsrpc.Service) error) stoppable {
	e.t.Helper()
	nc := testenv.NATSConn(e.t, e.nats)
	svc, err := natsrpc.AddService(nc, name, "0.0.0-test", name+" for cart tests", testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = svc.Stop() })
	if err := register(svc); err != nil {
		e.t.Fatalf("register %s NATS endpoints: %v", name, err)
	}
	return stoppable{svc: svc, nc: nc}
}

func (e *env) natsConn() *nats.Conn { return testenv.NATSConn(e.t, e.nats) }

// as is a request context carrying the customer identity the edge sets.
func (e *env) as(customer string) context.Context {
	return metadata.AppendToOutgoingContext(e.t.Context(), cart.CustomerIDMetadata, customer)
}

// sku returns the i-th SKU of the demo catalog with its unit price.
func (e *env) sku(i int) (string, int64) {
	n := 0
	for _, p := range e.chain.Products {
		for _, v := range p.Variants {
			if n == i {
				return v.SKU, v.PriceMinor
			}
			n++
		}
	}
	e.t.Fatalf("demo catalog has fewer than %d SKUs", i+1)
	return "", 0
}

// productOf returns the demo product id of sku.
func (e *env) productOf(sku string) string {
	id := e.chain.ProductOf(sku)
	if id == "" {
		e.t.Fatalf("sku %s not in the demo catalog", sku)
	}
	return id
}

func (e *env) newCart(customer string) *cartv1.Cart {
	e.t.Helper()
	res, err := e.client.CreateCart(e.as(customer), &cartv1.CreateCartRequest{})
	if err != nil {
		e.t.Fatalf("CreateCart: %v", err)
	}
	return res.GetCart()
}

func (e *env) addLine(customer, cartID, sku string, qty int32) *cartv1.Cart {
	e.t.Helper()
	res, err := e.client.AddLine(e.as(customer), &cartv1.AddLineRequest{CartId: cartID, Sku: sku, Quantity: qty})
	if err != nil {
		e.t.Fatalf("AddLine %s x%d: %v", sku, qty, err)
	}
	return res.GetCart()
}

func (e *env) get(customer, cartID string) *cartv1.Cart {
	e.t.Helper()
	res, err := e.client.GetCart(e.as(customer), &cartv1.GetCartRequest{CartId: cartID})
	if err != nil {
		e.t.Fatalf("GetCart: %v", err)
	}
	return res.GetCart()
}
