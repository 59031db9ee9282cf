package fulfilment_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
	"github.com/handoff-dev/handoff/services/inventory"
)

var testSecret = []byte("fulfilment-tests-pickup-secret")

// env is fulfilment with a real inventory beside it: each on its own schema and NATS
// connection, over one real NATS server with JetStream, fulfilment's outbox relayed, its gRPC
// API served on a loopback port. The test acts as the cart (place_order over NATS), the
// shopper and the staff (gRPC with the edge's metadata).
type env struct {
	t       testing.TB
	ctx     context.Context
	ns      *server.Server
	js      jetstream.JetStream
	cart    *nats.Conn // the caller of place_order
	inv     *inventory.Service
	invPool *pgxpool.Pool
	invRPC  *natsrpc.Service // inventory's NATS endpoints, when started by the env
	pool    *pgxpool.Pool
	schema  string
	svc     *fulfilment.Service // nil when fulfilment runs elsewhere (child process)
	orders  fulfilmentv1.OrderServiceClient
	store   fulfilmentv1.StoreOrderServiceClient
	events  *eventLog
	// run runs a background loop until the test ends.
	run func(name string, f func(context.Context) error)
}

type envOptions struct {
	noFulfilment bool // start only inventory (fulfilment runs as a child process)
	noInventory  bool // start inventory later with startInventory
	copies       int  // copies of fulfilment side by side on one schema (default 1)
	noLoops      bool // fulfilment's background loops (Run) not started: e.run(e.svc.Run) later
	config       func(*fulfilment.Config)
	nats         func(*server.Options) // changes the NATS server's options (a small max_payload)
}

// fastTimers are the timings tests run fulfilment with: loops every few milliseconds.
func fastTimers(c *fulfilment.Config) {
	c.SweepInterval = 20 * time.Millisecond
	c.PendingAfter = 100 * time.Millisecond
	c.WatchPoll = 500 * time.Millisecond
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var configure []func(*server.Options)
	if opts.nats != nil {
		configure = append(configure, opts.nats)
	}
	ns := testenv.NATS(t, configure...)
	e := &env{t: t, ctx: ctx, ns: ns, cart: testenv.NATSConn(t, ns), events: &eventLog{}}
	js, err := jetstream.New(testenv.NATSConn(t, ns), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	sub, err := e.cart.Subscribe(streams.EventSubject("fulfilment", "order", "*"), e.events.record)
	if err != nil {
		t.Fatal(err)
	}

	e.invPool = testenv.Pool(t, "", inventory.Migrations())
	e.inv = inventory.New(inventory.Config{Pool: e.invPool, Logger: testenv.Logger(t), SweepInterval: 50 * time.Millisecond})
	e.pool = testenv.Pool(t, "", fulfilment.Migrations())
	if err := e.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&e.schema); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = sub.Unsubscribe()
	})
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			// Once the test has ended (t.Context done, its cleanups running), a part that stops
			// on a connection a test's own cleanup closed first is the teardown, not a failure.
			if err := f(ctx); err != nil && ctx.Err() == nil && t.Context().Err() == nil {
				t.Errorf("%s stopped: %v", name, err)
			}
		})
	}
	e.run = run
	if !opts.noInventory {
		e.startInventory()
	}
	if opts.noFulfilment {
		return e
	}

	for i := range max(opts.copies, 1) {
		cfg := fulfilment.Config{Pool: e.pool, NATS: testenv.NATSConn(t, ns), PickupCodeSecret: testSecret, Logger: testenv.Logger(t)}
		// Cleanups run last first: the loops are told to stop before this connection closes
		// under them (its consumer would take the closing for a failure).
		t.Cleanup(cancel)
		fastTimers(&cfg)
		if opts.config != nil {
			opts.config(&cfg)
		}
		svc, err := fulfilment.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			e.svc = svc
		}
		rpc, err := natsrpc.AddService(cfg.NATS, "fulfilment", "0.0.1", "fulfilment tests", testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rpc.Stop() })
		if err := svc.RegisterNATS(rpc); err != nil {
			t.Fatal(err)
		}
		if !opts.noLoops {
			run("fulfilment", svc.Run)
		}
		run("fulfilment outbox relay", outbox.NewRelay(e.pool, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run)
	}
	svc := e.svc

	srv := grpc.NewServer()
	svc.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)
	e.orders = fulfilmentv1.NewOrderServiceClient(conn)
	e.store = fulfilmentv1.NewStoreOrderServiceClient(conn)
	return e
}

// startInventory serves inventory's NATS endpoints and runs its sweeper.
func (e *env) startInventory() {
	e.t.Helper()
	e.invRPC = e.serveInventory()
	e.run("inventory", e.inv.Run)
}

// serveInventory answers inventory's NATS requests (again, after its endpoints were stopped).
func (e *env) serveInventory() *natsrpc.Service {
	e.t.Helper()
	nc := testenv.NATSConn(e.t, e.ns)
	rpc, err := natsrpc.AddService(nc, "inventory", "0.0.1", "inventory for fulfilment tests", testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = rpc.Stop() })
	if err := e.inv.RegisterNATS(rpc); err != nil {
		e.t.Fatal(err)
	}
	return rpc
}

// addInventoryCopy serves a second copy of inventory on the same schema, in the same queue
// group, as a scaled deployment runs it: a reserve goes to either copy.
func (e *env) addInventoryCopy() {
	e.t.Helper()
	var schema string
	if err := e.invPool.QueryRow(e.ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		e.t.Fatal(err)
	}
	inv := inventory.New(inventory.Config{Pool: testenv.Pool(e.t, schema, inventory.Migrations()), Logger: testenv.Logger(e.t)})
	rpc, err := natsrpc.AddService(testenv.NATSConn(e.t, e.ns), "inventory", "0.0.1", "second inventory for fulfilment tests", testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = rpc.Stop() })
	if err := inv.RegisterNATS(rpc); err != nil {
		e.t.Fatal(err)
	}
}

// openAllDay is a week of 00:00–24:00: test stores take orders whenever the tests run.
func openAllDay() []*inventoryv1.OpeningHours {
	var out []*inventoryv1.OpeningHours
	for d := 1; d <= 7; d++ {
		out = append(out, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "24:00"})
	}
	return out
}

// addStore creates an always-open store at (lat, lng) with the given pickup window.
func (e *env) addStore(id string, lat, lng float64, prep, window time.Duration) {
	e.t.Helper()
	_, err := e.inv.CreateStore(e.ctx, &inventoryv1.Store{
		Id: id, Name: "Store " + id, TimeZone: "America/Los_Angeles",
		Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: lat, Longitude: lng},
		OpeningHours: openAllDay(), PrepTime: durationpb.New(prep), PickupWindow: durationpb.New(window),
	})
	if err != nil {
		e.t.Fatalf("create store %s: %v", id, err)
	}
}

var stockKeys int

// setStock sets a SKU's on-hand count at a store (no safety stock).
func (e *env) setStock(store, sku string, onHand int32) {
	e.t.Helper()
	stockKeys++
	_, _, err := e.inv.SetStock(e.ctx, &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
		&inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: onHand, IdempotencyKey: fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), stockKeys)})
	if err != nil {
		e.t.Fatalf("set stock of %s at %s: %v", sku, store, err)
	}
}

// available is what inventory can still promise of sku at store.
func (e *env) available(store, sku string) int32 {
	e.t.Helper()
	res, err := e.inv.GetAvailability(e.ctx, store, []string{sku})
	if err != nil {
		e.t.Fatalf("availability of %s at %s: %v", sku, store, err)
	}
	return res.GetAvailability()[0].GetAvailable()
}

// holds counts the order's holds at inventory by state ("open", "committed", ...).
func (e *env) holds(orderID string) map[string]int {
	e.t.Helper()
	rows, err := e.invPool.Query(e.ctx, `SELECT state, count(*) FROM holds WHERE order_id = $1 GROUP BY state`, orderID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			e.t.Fatal(err)
		}
		out[s] = n
	}
	return out
}

// checkInvariants fails the test if inventory's invariants do not hold.
func (e *env) checkInvariants() {
	e.t.Helper()
	res, err := e.inv.CheckInvariants(e.ctx, "")
	if err != nil {
		e.t.Fatal(err)
	}
	if !res.GetOk() {
		e.t.Fatalf("inventory invariants broken: %v", res.GetViolations())
	}
}

// waitHolds waits until the order's holds are exactly want (by state).
func (e *env) waitHolds(orderID string, want map[string]int) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := e.holds(orderID); !mapsEqual(got, want) {
			return fmt.Errorf("order %s holds %v, want %v", orderID, got, want)
		}
		return nil
	})
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// acceptingSender takes every notification of its channel: a deployment with that channel
// configured, for tests about what is written rather than what is sent.
type acceptingSender struct{ channel string }

func (s acceptingSender) Channel() string                               { return s.channel }
func (acceptingSender) Send(context.Context, notify.Notification) error { return nil }

// withSenders configures notification senders for channels.
func withSenders(channels ...string) func(*fulfilment.Config) {
	return func(c *fulfilment.Config) {
		for _, ch := range channels {
			c.Notify.Senders = append(c.Notify.Senders, acceptingSender{ch})
		}
	}
}

// line is a checkout line: SKU and quantity at $4.50 each.
type line struct {
	sku string
	qty int32
}

// checkout is a place_order request for customer with key at store ("" = nearest to near).
func checkout(customer, key, store string, lines ...line) *fulfilmentv1.PlaceOrderRequest {
	req := &fulfilmentv1.PlaceOrderRequest{
		IdempotencyKey: key, CustomerId: customer, CartId: "cart-" + key, StoreId: store,
		PickupName: "Sam", CustomerNote: "oat milk please", Email: customer + "@example.com",
	}
	for i, l := range lines {
		req.Lines = append(req.Lines, &fulfilmentv1.PlaceOrderLine{
			LineId: fmt.Sprintf("l%d", i+1), Sku: l.sku, ProductName: "Product " + l.sku, VariantName: "16 oz",
			Quantity: l.qty, UnitPrice: &commonv1.Money{AmountMinor: 450, CurrencyCode: "USD"},
		})
	}
	return req
}

// place calls place_order as the cart does.
func (e *env) place(req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.Order, error) {
	return e.placeWithin(req, 10*time.Second)
}

func (e *env) placeWithin(req *fulfilmentv1.PlaceOrderRequest, timeout time.Duration) (*fulfilmentv1.Order, error) {
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	var res fulfilmentv1.PlaceOrderResponse
	if err := natsrpc.Call(ctx, e.cart, fulfilment.SubjectPlaceOrder, req, &res); err != nil {
		return nil, err
	}
	return res.GetOrder(), nil
}

func (e *env) mustPlace(req *fulfilmentv1.PlaceOrderRequest, want fulfilmentv1.OrderState) *fulfilmentv1.Order {
	e.t.Helper()
	o, err := e.place(req)
	if err != nil {
		e.t.Fatalf("place order %s: %v", req.GetIdempotencyKey(), err)
	}
	if o.GetState() != want {
		e.t.Fatalf("order %s is %s (%s), want %s", req.GetIdempotencyKey(), o.GetState(), o.GetReason(), want)
	}
	return o
}

// asCustomer is a context with the metadata the gateway sets for a signed-in shopper.
func (e *env) asCustomer(id string) context.Context {
	return metadata.AppendToOutgoingContext(e.ctx, fulfilment.MetadataCustomerID, id, fulfilment.MetadataActor, "customer:"+id)
}

// asStaff is a context with the metadata the pos-adapter sets for staff of stores.
func (e *env) asStaff(stores ...string) context.Context {
	return metadata.AppendToOutgoingContext(e.ctx, fulfilment.MetadataStaffStores, strings.Join(stores, ","), fulfilment.MetadataActor, "staff:barista-1")
}

// stateOf reads the order's state straight from fulfilment's table.
func (e *env) stateOf(orderID string) fulfilmentv1.OrderState {
	e.t.Helper()
	var s int16
	if err := e.pool.QueryRow(e.ctx, `SELECT state FROM orders WHERE id = $1`, orderID).Scan(&s); err != nil {
		e.t.Fatalf("state of %s: %v", orderID, err)
	}
	return fulfilmentv1.OrderState(s)
}

// wantCode fails unless err has code and its message contains every fragment.
func wantCode(t testing.TB, what string, err error, code codes.Code, fragments ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(status.Convert(err).Message(), f) {
			t.Fatalf("%s: message %q does not mention %q", what, status.Convert(err).Message(), f)
		}
	}
}

// eventLog records the order events published on NATS.
type eventLog struct {
	mu     sync.Mutex
	events []recordedEvent
}

type recordedEvent struct {
	subject string
	msgID   string
	ev      *fulfilmentv1.OrderChanged
}

func (l *eventLog) record(m *nats.Msg) {
	ev := &fulfilmentv1.OrderChanged{}
	if err := proto.Unmarshal(m.Data, ev); err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, recordedEvent{subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), ev: ev})
}

// count is how many events have been recorded.
func (l *eventLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// of returns the last token of the subjects of the order's events, in publication order.
func (l *eventLog) of(orderID string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.events {
		if r.ev.GetOrder().GetId() == orderID {
			out = append(out, r.subject[strings.LastIndex(r.subject, ".")+1:])
		}
	}
	return out
}

// all returns the order's events, in publication order.
func (l *eventLog) all(orderID string) []recordedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []recordedEvent
	for _, r := range l.events {
		if r.ev.GetOrder().GetId() == orderID {
			out = append(out, r)
		}
	}
	return out
}

// waitEvents waits until the order's events are exactly want.
func (e *env) waitEvents(orderID string, want ...string) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := e.events.of(orderID); !slices.Equal(got, want) {
			return fmt.Errorf("order %s events %v, want %v", orderID, got, want)
		}
		return nil
	})
}

var errNotYet = errors.New("not yet")
