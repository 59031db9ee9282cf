package posadapter_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/inventory"
)

var pickupSecret = []byte("pos-adapter-tests-pickup-secret")

// services are the real inventory and fulfilment the adapter forwards to: each on its own
// schema of the test database, on the env's NATS server, with gRPC on loopback ports and
// fulfilment's outbox relayed to JetStream (so its OrderChanged events reach the adapter the
// production way).
type services struct {
	inv      *inventory.Service
	invPool  *pgxpool.Pool // inventory's tables, to hold a stock row locked
	ful      *fulfilment.Service
	fulPool  *pgxpool.Pool // fulfilment's tables, to bring a timer forward
	invAdmin inventoryv1.InventoryAdminServiceClient
	locator  inventoryv1.StoreLocatorServiceClient
	cart     func(ctx context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.Order, error)
}

// withServices runs real inventory and fulfilment for the adapter; their handles land in *s.
func withServices(s *services, edit ...func(*fulfilment.Config)) envOption {
	return func(e *env) {
		t := e.t
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		t.Cleanup(func() { cancel(); wg.Wait() })
		run := func(name string, f func(context.Context) error) {
			wg.Go(func() {
				if err := f(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("%s stopped: %v", name, err)
				}
			})
		}
		// The services' gRPC servers as the stack builds them: they verify every call's token
		// against Handoff's access policy, so the tokens the adapter mints are put to the test.
		serve := func(register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
			srv := grpcserver.New(testenv.Logger(t), e.keys)
			register(srv)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Server.Serve(lis) }()
			t.Cleanup(srv.Stop)
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			return cc
		}

		invNC := testenv.NATSConn(t, e.ns)
		s.invPool = testenv.Pool(t, "", inventory.Migrations())
		s.inv = inventory.New(inventory.Config{Pool: s.invPool, Logger: testenv.Logger(t)})
		rpc, err := natsrpc.AddService(invNC, "inventory", "0.0.1", "inventory for pos-adapter tests", testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rpc.Stop() })
		if err := s.inv.RegisterNATS(rpc); err != nil {
			t.Fatal(err)
		}
		run("inventory", s.inv.Run)
		// Inventory's store events reach fulfilment (a closing that cancels open orders).
		run("inventory outbox relay", outbox.NewRelay(s.invPool, e.js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run)
		invConn := serve(s.inv.RegisterGRPC)
		// The test's own admin calls carry an admin token; the adapter's carry what it mints.
		adminTok := "Bearer " + e.token(auth.Principal{Subject: "test-operator", Role: auth.RoleAdmin})
		asAdmin, err := grpc.NewClient(invConn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(auth.OutgoingContext(ctx, adminTok), method, req, reply, cc, opts...)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { asAdmin.Close() })
		s.invAdmin = inventoryv1.NewInventoryAdminServiceClient(asAdmin)
		s.locator = inventoryv1.NewStoreLocatorServiceClient(invConn)

		fulPool := testenv.Pool(t, "", fulfilment.Migrations())
		s.fulPool = fulPool
		cfg := fulfilment.Config{Pool: fulPool, NATS: testenv.NATSConn(t, e.ns), PickupCodeSecret: pickupSecret,
			Logger: testenv.Logger(t), SweepInterval: 20 * time.Millisecond, PendingAfter: 100 * time.Millisecond}
		// Cleanups run last first: the loops are told to stop before this connection closes
		// under them (fulfilment's consumer would take the closing for a failure).
		t.Cleanup(cancel)
		for _, f := range edit {
			f(&cfg)
		}
		s.ful, err = fulfilment.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		frpc, err := natsrpc.AddService(cfg.NATS, "fulfilment", "0.0.1", "fulfilment for pos-adapter tests", testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = frpc.Stop() })
		if err := s.ful.RegisterNATS(frpc); err != nil {
			t.Fatal(err)
		}
		run("fulfilment", s.ful.Run)
		run("fulfilment outbox relay", outbox.NewRelay(fulPool, e.js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}).Run)
		ful := serve(s.ful.RegisterGRPC)

		cart := testenv.NATSConn(t, e.ns)
		s.cart = func(ctx context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.Order, error) {
			var res fulfilmentv1.PlaceOrderResponse
			if err := natsrpc.Call(ctx, cart, fulfilment.SubjectPlaceOrder, req, &res); err != nil {
				return nil, err
			}
			return res.GetOrder(), nil
		}
		e.cfg.Fulfilment, e.cfg.Inventory = ful, invConn
	}
}

// addStore creates an always-open store with stock of the SKUs.
func (s *services) addStore(t testing.TB, id string, stock map[string]int32) {
	t.Helper()
	var hours []*inventoryv1.OpeningHours
	for d := 1; d <= 7; d++ {
		hours = append(hours, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "24:00"})
	}
	_, err := s.inv.CreateStore(context.Background(), &inventoryv1.Store{
		Id: id, Name: "Store " + id, TimeZone: "America/Los_Angeles",
		Address:      &inventoryv1.Address{Line1: "1 Pike St", City: "Seattle", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.34},
		OpeningHours: hours, PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
	})
	if err != nil {
		t.Fatalf("create store %s: %v", id, err)
	}
	for sku, n := range stock {
		_, _, err := s.inv.SetStock(context.Background(), &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
			&inventoryv1.SetStockRequest{StoreId: id, Sku: sku, OnHand: n, IdempotencyKey: fmt.Sprintf("seed-%s-%s", id, sku)})
		if err != nil {
			t.Fatalf("stock %s at %s: %v", sku, id, err)
		}
	}
}

// onHand is inventory's on-hand count of sku at store.
func (s *services) onHand(t testing.TB, store, sku string) int32 {
	t.Helper()
	res, err := s.invAdmin.ListStock(context.Background(), &inventoryv1.ListStockRequest{StoreId: store, Skus: []string{sku}})
	if err != nil {
		t.Fatalf("ListStock: %v", err)
	}
	for _, l := range res.GetLevels() {
		if l.GetSku() == sku {
			return l.GetOnHand()
		}
	}
	return 0
}

// placeOrder checks out lines (sku → quantity) at store as a cart would and wants CONFIRMED.
func (s *services) placeOrder(t testing.TB, store, key string, lines map[string]int32) *fulfilmentv1.Order {
	t.Helper()
	req := &fulfilmentv1.PlaceOrderRequest{IdempotencyKey: key, CustomerId: "cust-" + key, CartId: "cart-" + key, StoreId: store,
		PickupName: "Sam", CustomerNote: "oat milk please"}
	i := 0
	for sku, q := range lines {
		i++
		req.Lines = append(req.Lines, &fulfilmentv1.PlaceOrderLine{LineId: fmt.Sprintf("l%d", i), Sku: sku, ProductName: "Product " + sku,
			VariantName: "16 oz", Quantity: q, UnitPrice: &commonv1.Money{AmountMinor: 450, CurrencyCode: "USD"}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := s.cart(ctx, req)
	if err != nil {
		t.Fatalf("place order %s: %v", key, err)
	}
	if o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("order %s is %v (%s), want CONFIRMED", key, o.GetState(), o.GetReason())
	}
	return o
}

// An admin names only stores inventory knows: a terminal, setting or webhook for a store
// nobody runs would be stored and never used. The refusal names the field; nothing is stored;
// with inventory down the call is Unavailable, not taken on trust.
func TestAdminNamesOnlyStoresInventoryKnows(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "known-1", map[string]int32{"LATTE-16": 1})
	ctx := context.Background()
	admin := e.admin()

	_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till", StoreIds: []string{"known-1", "nosuch-1", "known-1", "nosuch-2"}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `store_ids[1]: inventory has no store "nosuch-1"`) ||
		!strings.Contains(err.Error(), "store_ids[3]") || strings.Contains(err.Error(), "store_ids[0]") {
		t.Errorf("RegisterTerminal for unknown stores: %v; want InvalidArgument naming store_ids[1] and [3] only", err)
	}
	_, err = admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "nosuch-1", EscalateAfter: durationpb.New(time.Minute)}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "settings.store_id") {
		t.Errorf("SetStoreSettings for an unknown store: %v; want InvalidArgument naming settings.store_id", err)
	}
	_, err = admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "nosuch-1", Url: "https://pos.example.com/hook", Enabled: true}}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "webhook.store_id") {
		t.Errorf("SetStoreWebhook for an unknown store: %v; want InvalidArgument naming webhook.store_id", err)
	}
	var stored int
	if err := e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM terminals) + (SELECT count(*) FROM store_settings) + (SELECT count(*) FROM store_webhooks)`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Fatalf("%d terminals, settings or webhooks stored for unknown stores", stored)
	}

	// Known stores are accepted, a CLOSED one too (an operator may close it for a refit and
	// set its tills up meanwhile).
	if _, err := s.invAdmin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "known-1", State: inventoryv1.StoreState_STORE_STATE_CLOSED}); err != nil {
		t.Fatal(err)
	}
	res, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till", StoreIds: []string{"known-1"}}))
	if err != nil || !slices.Equal(res.Msg.GetTerminal().GetStoreIds(), []string{"known-1"}) {
		t.Fatalf("RegisterTerminal for a known store = %v, %v", res, err)
	}
	if _, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "known-1", EscalateAfter: durationpb.New(time.Minute)}})); err != nil {
		t.Fatalf("SetStoreSettings for a known store: %v", err)
	}

	// Inventory unreachable: Unavailable, and nothing stored.
	e.stopAdapter()
	e.cfg.Inventory = deadConn(t)
	e.start()
	_, err = e.admin().RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till 2", StoreIds: []string{"known-1"}}))
	if codeOf(err) != connect.CodeUnavailable {
		t.Errorf("RegisterTerminal with inventory down: %v; want Unavailable", err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM terminals`).Scan(&stored); err != nil || stored != 1 {
		t.Errorf("terminals stored = %d, %v; want only the first", stored, err)
	}
}

// A store's own escalation time counts its open hours, as fulfilment's not_accepted does: an
// order confirmed ten minutes before closing, with the store's escalation after 15 minutes, is
// not escalated at night but five minutes into the store's next opening. The timer is made due
// now, as it would be at night; an order at a store open round the clock, due likewise, is
// escalated (the control).
func TestAStoresOwnEscalationCountsItsOpenHours(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	ctx := context.Background()
	zone, loc := noonZone(t)
	local := time.Now().In(loc)
	closes := local.Add(10 * time.Minute).Truncate(time.Minute)
	tomorrow := local.AddDate(0, 0, 1)
	opens := time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day(), 9, 0, 0, 0, loc)
	var allDay []*inventoryv1.OpeningHours
	for d := 1; d <= 7; d++ {
		allDay = append(allDay, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(d), OpenTime: "00:00", CloseTime: "24:00"})
	}
	for _, st := range []struct {
		id         string
		exceptions []*inventoryv1.HoursException
	}{
		{"night-1", []*inventoryv1.HoursException{
			{Date: local.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
			{Date: tomorrow.Format(time.DateOnly), OpenTime: "09:00", CloseTime: "17:00"},
		}},
		{"day-1", nil},
	} {
		if _, err := s.inv.CreateStore(ctx, &inventoryv1.Store{
			Id: st.id, Name: "Store " + st.id, TimeZone: zone,
			Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
			Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33},
			OpeningHours: allDay, HoursExceptions: st.exceptions,
			PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.inv.SetStock(ctx, &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_ADMIN, Id: "test"},
			&inventoryv1.SetStockRequest{StoreId: st.id, Sku: "LATTE-16", OnHand: 10, IdempotencyKey: "seed-" + st.id}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin().SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{
			Settings: &posv1.StoreSettings{StoreId: st.id, EscalateAfter: durationpb.New(15 * time.Minute)}})); err != nil {
			t.Fatal(err)
		}
	}
	night := s.placeOrder(t, "night-1", "k-night", map[string]int32{"LATTE-16": 1})
	day := s.placeOrder(t, "day-1", "k-day", map[string]int32{"LATTE-16": 1})
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM escalation_timers WHERE order_id = ANY($1)`, []string{night.GetId(), day.GetId()}).Scan(&n); err != nil || n != 2 {
			return fmt.Errorf("%d escalation timers (%v), want 2", n, err)
		}
		return nil
	})
	// Fifteen minutes on, in plain time: the night store has been shut five of them; the day
	// store's order was confirmed a quarter of an hour ago.
	if _, err := e.pool.Exec(ctx, `UPDATE escalation_timers SET due_time = now() - interval '1 second',
		confirm_time = CASE WHEN order_id = $2 THEN now() - interval '15 minutes 1 second' ELSE confirm_time END
		WHERE order_id = ANY($1)`, []string{night.GetId(), day.GetId()}, day.GetId()); err != nil {
		t.Fatal(err)
	}
	escalations := func(orderID string) int {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE order_id = $1 AND kind = $2`, orderID,
			"escalation").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := escalations(day.GetId()); n != 1 {
			return fmt.Errorf("the day store's order has %d escalations, want 1", n)
		}
		return nil
	})
	if n := escalations(night.GetId()); n != 0 {
		t.Errorf("the night store's order was escalated %d times while the store is shut (it closed at %s)", n, closes.Format(time.RFC3339))
	}
	var due time.Time
	if err := e.pool.QueryRow(ctx, `SELECT due_time FROM escalation_timers WHERE order_id = $1`, night.GetId()).Scan(&due); err != nil {
		t.Fatal(err)
	}
	if due.Before(opens) || due.After(opens.Add(15*time.Minute)) {
		t.Errorf("the night store's escalation is due at %s; want within the 15 minutes after it opens at %s", due.In(loc).Format(time.RFC3339), opens.Format(time.RFC3339))
	}
}

// noonZone is a time zone where it is about noon now, and its location: a store's hours set
// around now then stay on one local day.
func noonZone(t testing.TB) (string, *time.Location) {
	t.Helper()
	zone := hours.ZoneWhereItIs(12, time.Now())
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return zone, loc
}
