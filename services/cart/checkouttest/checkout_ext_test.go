// Package checkout_test checks a shopper's checkout end to end: the cart service against a real
// catalog, inventory and fulfilment, talking over a real NATS server, each on its own Postgres
// schema, the shopper's calls going through real gRPC. It lives apart from the cart's own tests
// because it needs every service of the order path.
package checkout_test

import (
	"context"
	"fmt"
	"github.com/jackc/pgx/v5/pgxpool"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/inventory"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The test store is open around the clock and far from the demo city, so results never depend
// on the time of day the tests run or on the demo stores' stock.
const (
	storeID  = "test-always-open"
	storeLat = 10.0
	storeLng = 10.0
)

type env struct {
	t             *testing.T
	nats          *server.Server
	chain         demo.Chain
	inventory     *inventory.Service
	invRPC        *natsrpc.Service
	carts         cartv1.CartServiceClient
	orders        fulfilmentv1.OrderServiceClient
	catalogAdmin  catalogv1.CatalogAdminServiceClient
	catalogPublic catalogv1.CatalogServiceClient
	catalogDB     *pgxpool.Pool // the catalog's own tables, to change them behind its back
	fulfilmentDB  *pgxpool.Pool // fulfilment's tables, to lock them and look at its orders
	cartDB        *pgxpool.Pool // the cart's tables, to make a lease lapse

	// The cart's SQL statements, counted, and its NATS connection (see cost_ext_test.go).
	statements *statementCounter
	cartConn   *nats.Conn
}

// newEnv starts the services; configure may change the cart's configuration.
func newEnv(t *testing.T, configure ...func(*cart.Config)) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.NATS(t), chain: demo.Seattle()}
	log := testenv.Logger(t)
	// Each loop stops before what it uses (its pool, NATS) is closed: cleanups run last first.
	run := func(name string, f func(context.Context) error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := f(ctx); err != nil {
				t.Errorf("%s Run: %v", name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
	}

	// Catalog and inventory events reach NATS through their outbox relays, as in the stack: the
	// cart's caches hear of changes that way.
	js, err := jetstream.New(testenv.NATSConn(t, e.nats), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Ensure(t.Context(), js, streams.Config{}); err != nil {
		t.Fatalf("declare streams: %v", err)
	}
	catPool := testenv.Pool(t, "", catalog.Migrations())
	e.catalogDB = catPool
	cat := catalog.New(catalog.Config{Pool: catPool, Currency: "USD", Logger: log})
	if _, err := cat.LoadDemo(t.Context(), e.chain); err != nil {
		t.Fatalf("load demo catalog: %v", err)
	}
	e.serveNATS("catalog", cat.RegisterNATS)
	run("catalog outbox relay", outbox.NewRelay(catPool, js, outbox.RelayConfig{Logger: log}).Run)

	invPool := testenv.Pool(t, "", inventory.Migrations())
	e.inventory = inventory.New(inventory.Config{Pool: invPool, Logger: log})
	e.invRPC = e.serveNATS("inventory", e.inventory.RegisterNATS)
	run("inventory", e.inventory.Run)
	run("inventory outbox relay", outbox.NewRelay(invPool, js, outbox.RelayConfig{Logger: log}).Run)
	e.createStore()

	e.fulfilmentDB = testenv.Pool(t, "", fulfilment.Migrations())
	ful, err := fulfilment.New(fulfilment.Config{
		Pool:             e.fulfilmentDB,
		NATS:             testenv.NATSConn(t, e.nats),
		PickupCodeSecret: []byte("checkout-test-secret-0123456789"),
		Logger:           log,
		// Tests may make fulfilment's recovery loop quick (rejected_race_ext_test.go).
		PendingAfter: fulfilmentTimings.pendingAfter, PendingGiveUp: fulfilmentTimings.pendingGiveUp,
	})
	if err != nil {
		t.Fatalf("fulfilment.New: %v", err)
	}
	e.serveNATS("fulfilment", ful.RegisterNATS)
	run("fulfilment", ful.Run)
	run("fulfilment outbox relay", outbox.NewRelay(e.fulfilmentDB, js, outbox.RelayConfig{Logger: log}).Run)

	// The cart's caches keep answers for an hour: a change seen in these tests came by event.
	e.cartDB = testenv.Pool(t, "", cart.Migrations(), cart.PoolOptions()...)
	cfg := cart.Config{
		Pool: e.countedPool(e.cartDB), NATS: e.spiedConn(), JS: js, Currency: "USD", Logger: log,
		CheckoutTimeout: 10 * time.Second, CacheTTL: time.Hour,
	}
	for _, f := range configure {
		f(&cfg)
	}
	c := cart.New(cfg)
	run("cart", c.Run)

	// As the stack serves them, each request's text checked first (a NUL refused naming its field).
	srv := grpc.NewServer(grpc.UnaryInterceptor(grpcserver.UnaryText))
	c.RegisterGRPC(srv)
	ful.RegisterGRPC(srv)
	cat.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)
	e.carts = cartv1.NewCartServiceClient(conn)
	e.orders = fulfilmentv1.NewOrderServiceClient(conn)
	e.catalogAdmin = catalogv1.NewCatalogAdminServiceClient(conn)
	e.catalogPublic = catalogv1.NewCatalogServiceClient(conn)
	return e
}

func (e *env) serveNATS(name string, register func(*natsrpc.Service) error) *natsrpc.Service {
	e.t.Helper()
	svc, err := natsrpc.AddService(testenv.NATSConn(e.t, e.nats), name, "0.0.0-test", name, testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = svc.Stop() })
	if err := register(svc); err != nil {
		e.t.Fatalf("register %s NATS endpoints: %v", name, err)
	}
	return svc
}

func (e *env) createStore() {
	e.t.Helper()
	var hours []*inventoryv1.OpeningHours
	for d := inventoryv1.Weekday_WEEKDAY_MONDAY; d <= inventoryv1.Weekday_WEEKDAY_SUNDAY; d++ {
		hours = append(hours, &inventoryv1.OpeningHours{Weekday: d, OpenTime: "00:00", CloseTime: "24:00"})
	}
	_, err := e.inventory.CreateStore(e.t.Context(), &inventoryv1.Store{
		Id: storeID, Name: "Always Open Test Store",
		Address:  &inventoryv1.Address{Line1: "1 Test Street", City: "Testville", Region: "TS", PostalCode: "00000", CountryCode: "US"},
		Location: &commonv1.LatLng{Latitude: storeLat, Longitude: storeLng}, TimeZone: "UTC", OpeningHours: hours,
		PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(2 * time.Hour),
		State: inventoryv1.StoreState_STORE_STATE_OPEN,
	})
	if err != nil {
		e.t.Fatalf("create test store: %v", err)
	}
}

func (e *env) setStock(sku string, onHand int32) {
	e.t.Helper()
	_, _, err := e.inventory.SetStock(e.t.Context(), &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
		&inventoryv1.SetStockRequest{StoreId: storeID, Sku: sku, OnHand: onHand, IdempotencyKey: fmt.Sprintf("stock-%s-%d-%d", sku, onHand, time.Now().UnixNano()), Note: "test"})
	if err != nil {
		e.t.Fatalf("set stock of %s: %v", sku, err)
	}
}

func (e *env) as(customer string) context.Context {
	return metadata.AppendToOutgoingContext(e.t.Context(), cart.CustomerIDMetadata, customer)
}

// skus returns the first n SKUs of the demo catalog, each stocked at the test store.
func (e *env) skus(n int) []string {
	var out []string
	for _, p := range e.chain.Products {
		for _, v := range p.Variants {
			if len(out) == n {
				return out
			}
			out = append(out, v.SKU)
			e.setStock(v.SKU, 50)
		}
	}
	return out
}

// productOf returns the demo product id of sku.
func (e *env) productOf(sku string) string {
	id := e.chain.ProductOf(sku)
	if id == "" {
		e.t.Fatalf("sku %s not in the demo catalog", sku)
	}
	return id
}

// filledCart makes customer a cart with qty of each sku and pickup at the test store.
func (e *env) filledCart(customer string, qty int32, skus ...string) *cartv1.Cart {
	e.t.Helper()
	ctx := e.as(customer)
	res, err := e.carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	id := res.GetCart().GetId()
	for _, sku := range skus {
		if _, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku, Quantity: qty}); err != nil {
			e.t.Fatalf("AddLine %s: %v", sku, err)
		}
	}
	p, err := e.carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}}})
	if err != nil {
		e.t.Fatalf("SetPickup: %v", err)
	}
	return p.GetCart()
}

func TestCheckoutPlacesTheOrderAndOnlyThenMarksTheCartCheckedOut(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(2)
	c := e.filledCart("alice", 2, skus...)
	if c.GetPickup().GetStoreName() != "Always Open Test Store" {
		t.Fatalf("pickup = %v; want the store's name from inventory", c.GetPickup())
	}
	for _, l := range c.GetLines() {
		if l.GetAvailableAtStore() != 50 {
			t.Fatalf("line %s available_at_store = %d, want 50", l.GetSku(), l.GetAvailableAtStore())
		}
	}

	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{
		CartId: c.GetId(), IdempotencyKey: "alice-checkout-1", ExpectedVersion: c.GetVersion(), PickupName: "Alice",
	})
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	o := res.GetOrder()
	if o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || o.GetStoreId() != storeID || o.GetPickupCode() == "" ||
		o.GetCustomerId() != "alice" || o.GetCartId() != c.GetId() || len(o.GetLines()) != 2 {
		t.Fatalf("order = %v; want CONFIRMED at %s for alice's cart, with a pickup code and 2 lines", o, storeID)
	}
	if o.GetTotal().GetAmountMinor() != c.GetSubtotal().GetAmountMinor() {
		t.Fatalf("order total %v differs from the cart subtotal %v", o.GetTotal(), c.GetSubtotal())
	}
	if got := res.GetCart(); got.GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetOrderId() != o.GetId() {
		t.Fatalf("cart after checkout = %v; want CHECKED_OUT with order %s", got, o.GetId())
	}

	// A retry with the same key returns the same order; another key is refused naming it.
	again, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "alice-checkout-1"})
	if err != nil || again.GetOrder().GetId() != o.GetId() {
		t.Fatalf("retried checkout = %v, %v; want order %s again", again.GetOrder().GetId(), err, o.GetId())
	}
	_, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "alice-checkout-2"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already checked out as order "+fmt.Sprintf("%q", o.GetId())) {
		t.Fatalf("checkout with another key = %v; want FailedPrecondition naming order %s", err, o.GetId())
	}
	_, err = e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skus[0], Quantity: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("AddLine to a checked-out cart = %v; want FailedPrecondition", err)
	}
}

// A checkout carrying text Postgres cannot store (a NUL in the pickup name) is refused naming
// the field, before anything is reserved: no stock is held, and the cart is free at once. (It
// used to hold the stock for ten minutes and the cart for the lease, and say to retry.)
func TestCheckoutWithANULIsRefusedHoldingNothing(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	c := e.filledCart("alice", 2, skus...)
	_, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "alice-nul-1", PickupName: "Al\x00"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "pickup_name") {
		t.Fatalf("checkout with a NUL in the pickup name: %v; want InvalidArgument naming pickup_name", err)
	}
	got, err := e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skus[0], Quantity: 1})
	if err != nil {
		t.Fatalf("changing the cart right after the refusal: %v", err)
	}
	if l := got.GetCart().GetLines()[0]; l.GetAvailableAtStore() != 50 {
		t.Fatalf("available at the store after the refused checkout: %d; want all 50", l.GetAvailableAtStore())
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "alice-nul-2", PickupName: "Al"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("checkout without the NUL = %v, %v; want CONFIRMED", res.GetOrder(), err)
	}
}

// An idempotency key names one checkout: used again for another cart, it is refused naming the
// key, and that cart stays open with its lines, unordered (it was marked checked out as the
// first cart's order, its own lines never ordered).
func TestAKeyUsedAgainForAnotherCartIsRefused(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(2)
	first := e.filledCart("alice", 1, skus[0])
	second := e.filledCart("alice", 2, skus[1])
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: first.GetId(), IdempotencyKey: "same-key-123"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("first checkout = %v, %v", res.GetOrder(), err)
	}
	_, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: second.GetId(), IdempotencyKey: "same-key-123"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "idempotency_key") {
		t.Fatalf("the key again for another cart = %v; want FailedPrecondition naming idempotency_key", err)
	}
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: second.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetCart().GetOrderId() != "" {
		t.Fatalf("the second cart = %v, %v; want open, without an order", got.GetCart(), err)
	}
	if _, err := e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: second.GetId(), Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatalf("a change of the second cart after the refusal: %v", err)
	}
	res, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: second.GetId(), IdempotencyKey: "a-new-key-456"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || len(res.GetOrder().GetLines()) != 2 {
		t.Fatalf("the second cart with a new key = %v, %v; want its own order of 2 lines", res.GetOrder(), err)
	}
}

// A key used for a checkout rejected at one store, used again after the shopper chose another
// store that has the stock, is refused naming the key, as after a change of lines; answering
// with the first order would tell the shopper the new store cannot fill the cart. With a new key
// the cart is ordered at the new store.
func TestAKeyUsedAgainAfterThePickupChangedIsRefused(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	e.setStock(skus[0], 1)
	const other = "test-always-open-other"
	var hours []*inventoryv1.OpeningHours
	for d := inventoryv1.Weekday_WEEKDAY_MONDAY; d <= inventoryv1.Weekday_WEEKDAY_SUNDAY; d++ {
		hours = append(hours, &inventoryv1.OpeningHours{Weekday: d, OpenTime: "00:00", CloseTime: "24:00"})
	}
	if _, err := e.inventory.CreateStore(t.Context(), &inventoryv1.Store{
		Id: other, Name: "The Other Store",
		Address:  &inventoryv1.Address{Line1: "2 Test Street", City: "Testville", Region: "TS", PostalCode: "00000", CountryCode: "US"},
		Location: &commonv1.LatLng{Latitude: -10, Longitude: -10}, TimeZone: "UTC", OpeningHours: hours,
		PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(2 * time.Hour),
		State: inventoryv1.StoreState_STORE_STATE_OPEN,
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.inventory.SetStock(t.Context(), &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
		&inventoryv1.SetStockRequest{StoreId: other, Sku: skus[0], OnHand: 50, IdempotencyKey: "other-store-stock", Note: "test"}); err != nil {
		t.Fatal(err)
	}
	c := e.filledCart("alice", 3, skus...)
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-used-twice"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
		t.Fatalf("checkout of 3 at a store with 1 = %v, %v; want REJECTED", res.GetOrder(), err)
	}
	if _, err := e.carts.SetPickup(e.as("alice"), &cartv1.SetPickupRequest{CartId: c.GetId(),
		Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: other}}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-used-twice"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "idempotency_key") {
		t.Fatalf("the key again after the pickup changed = %v; want FailedPrecondition naming idempotency_key", err)
	}
	res, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-new-after-pickup"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || res.GetOrder().GetStoreId() != other {
		t.Fatalf("checkout with a new key = %v, %v; want CONFIRMED at %s", res.GetOrder(), err, other)
	}
}

func TestSameCheckoutSentTwentyTimesConcurrentlyMakesOneOrder(t *testing.T) {
	e := newEnv(t)
	c := e.filledCart("alice", 1, e.skus(3)...)

	const requests = 20
	ids := make([]string, requests)
	errs := make([]error, requests)
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "one-key-for-all-20"})
			ids[i], errs[i] = res.GetOrder().GetId(), err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if ids[i] != ids[0] {
			t.Fatalf("requests returned orders %s and %s; want one order", ids[0], ids[i])
		}
	}
	list, err := e.orders.ListOrders(e.as("alice"), &fulfilmentv1.ListOrdersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetOrders()) != 1 || list.GetOrders()[0].GetId() != ids[0] {
		t.Fatalf("alice has orders %v; want exactly %s", list.GetOrders(), ids[0])
	}
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil || got.GetCart().GetOrderId() != ids[0] || got.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("cart = %v, %v; want checked out as %s", got.GetCart(), err, ids[0])
	}
}

func TestRejectedCheckoutLeavesTheCartOpenToChange(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(2)
	e.setStock(skus[1], 1)
	c := e.filledCart("alice", 3, skus...)

	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "too-many-units"})
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	o := res.GetOrder()
	if o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_REJECTED || len(o.GetShortages()) != 1 || o.GetShortages()[0].GetSku() != skus[1] {
		t.Fatalf("order = %v; want REJECTED short of %s", o, skus[1])
	}
	if got := res.GetCart(); got.GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetOrderId() != "" {
		t.Fatalf("cart after a rejected order = %v; want OPEN without an order", got)
	}
	// The shopper lowers the quantity and checks out again with a new key.
	line := res.GetCart().GetLines()[1]
	upd, err := e.carts.UpdateLine(e.as("alice"), &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: line.GetLineId(), Quantity: 1})
	if err != nil {
		t.Fatalf("UpdateLine after rejection: %v", err)
	}
	res, err = e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "fewer-units", ExpectedVersion: upd.GetCart().GetVersion()})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || res.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT {
		t.Fatalf("second checkout = %v, %v; want CONFIRMED and the cart checked out", res.GetOrder(), err)
	}
}

func TestCheckoutAtTheNearestStoreAroundThePickupPoint(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	ctx := e.as("alice")
	created, err := e.carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetCart().GetId()
	if _, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	near := &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
		Location: &commonv1.LatLng{Latitude: storeLat + 0.01, Longitude: storeLng}, RadiusMeters: 5000,
	}}}
	if _, err := e.carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: near}); err != nil {
		t.Fatal(err)
	}
	res, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "nearest-store-1"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || res.GetOrder().GetStoreId() != storeID {
		t.Fatalf("checkout near the test store = %v, %v; want CONFIRMED at %s", res.GetOrder(), err, storeID)
	}
}

func TestCartStillReadsWhenInventoryDoesNotAnswer(t *testing.T) {
	e := newEnv(t)
	c := e.filledCart("alice", 1, e.skus(1)...)
	if err := e.invRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		res, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
		if err != nil {
			return fmt.Errorf("GetCart with inventory down: %w", err)
		}
		if n := res.GetCart().GetLines()[0].GetAvailableAtStore(); n != -1 {
			return fmt.Errorf("available_at_store = %d, want -1 (unknown) while inventory is down", n)
		}
		if res.GetCart().GetSubtotal().GetAmountMinor() != c.GetSubtotal().GetAmountMinor() {
			return fmt.Errorf("subtotal changed to %v", res.GetCart().GetSubtotal())
		}
		return nil
	})
}

func TestChoosingAnUnknownStoreIsNotFoundNamingPickupStoreID(t *testing.T) {
	e := newEnv(t)
	ctx := e.as("alice")
	created, err := e.carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: created.GetCart().GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: "no-such-store"}}})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "pickup.store_id") || !strings.Contains(err.Error(), "no-such-store") {
		t.Fatalf("SetPickup of an unknown store = %v; want NotFound naming pickup.store_id and the id", err)
	}
	got, err := e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: created.GetCart().GetId()})
	if err != nil || got.GetCart().GetPickup() != nil || got.GetCart().GetVersion() != created.GetCart().GetVersion() {
		t.Fatalf("cart after the refused pickup = %v, %v; want unchanged", got.GetCart(), err)
	}
}

// Concurrent checkouts share their writes to the cart rows (claims in one statement, marks in
// another): each cart still ends with exactly the outcome it would have alone, whatever else
// is in its statement — a cart raced under two keys, a retry, another customer's cart id.
func TestConcurrentCheckoutsShareStatementsAndEachCartKeepsItsOwnOutcome(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(2)
	const shoppers = 24
	carts := make([]*cartv1.Cart, shoppers)
	for i := range carts {
		carts[i] = e.filledCart(fmt.Sprint("shopper-", i), 1, skus[i%2])
	}
	raced := e.filledCart("racer", 1, skus[0])
	e.statements.take()

	type attempt struct {
		who, cart, key string
		order          string
		err            error
	}
	var attempts []*attempt
	for i, c := range carts {
		attempts = append(attempts, &attempt{who: fmt.Sprint("shopper-", i), cart: c.GetId(), key: fmt.Sprint("checkout-key-", i)})
	}
	attempts = append(attempts,
		&attempt{who: "shopper-0", cart: carts[0].GetId(), key: "checkout-key-0"}, // the same checkout again
		&attempt{who: "racer", cart: raced.GetId(), key: "racer-phone"},           // one cart, two keys
		&attempt{who: "racer", cart: raced.GetId(), key: "racer-laptop"},          //
		&attempt{who: "intruder", cart: carts[1].GetId(), key: "not-my-cart-key"}) // someone else's cart
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, a := range attempts {
		wg.Go(func() {
			<-start
			res, err := e.carts.Checkout(e.as(a.who), &cartv1.CheckoutRequest{CartId: a.cart, IdempotencyKey: a.key})
			a.order, a.err = res.GetOrder().GetId(), err
		})
	}
	close(start)
	wg.Wait()
	// Alone, every attempt costs at least two statements (claim and mark, or a refused claim
	// and the read that says why): 56 here. Together far fewer.
	statements := e.statements.take()

	for _, a := range attempts[:shoppers] {
		if a.err != nil || a.order == "" {
			t.Errorf("%s checking out %s: %v; want an order", a.who, a.cart, a.err)
		}
	}
	if again := attempts[shoppers]; again.err != nil || again.order != attempts[0].order {
		t.Errorf("the same checkout again: order %q, %v; want %q", again.order, again.err, attempts[0].order)
	}
	phone, laptop := attempts[shoppers+1], attempts[shoppers+2]
	if (phone.err == nil) == (laptop.err == nil) {
		t.Errorf("one cart under two keys: %v and %v; want exactly one order", phone.err, laptop.err)
	}
	for _, a := range []*attempt{phone, laptop} {
		if c := status.Code(a.err); a.err != nil && c != codes.Aborted && c != codes.FailedPrecondition {
			t.Errorf("the losing key got %v; want Aborted or FailedPrecondition", a.err)
		}
	}
	if in := attempts[shoppers+3]; status.Code(in.err) != codes.NotFound {
		t.Errorf("checking out another customer's cart: %v; want NotFound", in.err)
	}
	// Each cart is checked out as its own order, and the intruder changed nothing.
	for i, c := range carts {
		got, err := e.carts.GetCart(e.as(fmt.Sprint("shopper-", i)), &cartv1.GetCartRequest{CartId: c.GetId()})
		if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetCart().GetOrderId() != attempts[i].order {
			t.Errorf("cart %d = %v, %v; want checked out as %s", i, got.GetCart(), err, attempts[i].order)
		}
	}
	if statements >= 2*shoppers {
		t.Errorf("%d cart statements for %d concurrent checkout attempts; want their claims and marks to share statements", statements, len(attempts))
	} else {
		t.Logf("%d cart statements for %d concurrent checkout attempts", statements, len(attempts))
	}
}
