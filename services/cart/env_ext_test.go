package cart_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a cart service served over real gRPC on a loopback port, pricing against a real
// catalog (demo chain loaded) over a real NATS server.
type env struct {
	t       *testing.T
	nats    *server.Server
	catalog *catalog.Service
	catRPC  *natsrpc.Service // the catalog's NATS endpoints, to stop
	chain   demo.Chain
	cart    *cart.Service
	pool    *pgxpool.Pool // the cart's
	client  cartv1.CartServiceClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.NATS(t), chain: demo.Seattle()}

	e.catalog = catalog.New(catalog.Config{Pool: testenv.Pool(t, "", catalog.Migrations()), Currency: "USD", Logger: testenv.Logger(t)})
	if _, err := e.catalog.LoadDemo(t.Context(), e.chain); err != nil {
		t.Fatalf("load demo catalog: %v", err)
	}
	e.catRPC = e.serveNATS("catalog", e.catalog.RegisterNATS)

	e.pool = testenv.Pool(t, "", cart.Migrations())
	e.cart = cart.New(cart.Config{
		Pool:            e.pool,
		NATS:            testenv.NATSConn(t, e.nats),
		Currency:        "USD",
		Logger:          testenv.Logger(t),
		CheckoutTimeout: 10 * time.Second,
		LookupTimeout:   2 * time.Second,
	})
	srv := grpc.NewServer()
	e.cart.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)
	e.client = cartv1.NewCartServiceClient(conn)
	return e
}

// serveNATS registers a service's NATS endpoints on a connection of its own and returns the
// micro service, so a test can stop it.
func (e *env) serveNATS(name string, register func(*natsrpc.Service) error) *natsrpc.Service {
	e.t.Helper()
	svc, err := natsrpc.AddService(testenv.NATSConn(e.t, e.nats), name, "0.0.0-test", name+" for cart tests", testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = svc.Stop() })
	if err := register(svc); err != nil {
		e.t.Fatalf("register %s NATS endpoints: %v", name, err)
	}
	return svc
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
	for _, p := range e.chain.Products {
		for _, v := range p.Variants {
			if v.SKU == sku {
				return p.ID
			}
		}
	}
	e.t.Fatalf("sku %s not in the demo catalog", sku)
	return ""
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
