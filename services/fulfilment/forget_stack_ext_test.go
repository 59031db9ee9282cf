package fulfilment_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// shopperData is what one shopper gives Handoff: values distinctive enough that finding one in
// a column can only mean a copy of it.
type shopperData struct{ customer, email, name, note string }

func (d shopperData) values() []string { return []string{d.customer, d.email, d.name, d.note} }

// copiesOf scans every text, bytea, jsonb and text-array column of every table of every
// schema of the database for each value, and returns where it found them ("schema.table.column
// holds value"). Protobuf payloads keep strings as their bytes, so a bytea search finds them.
func copiesOf(t *testing.T, db *pgxpool.Pool, values []string) []string {
	t.Helper()
	ctx := t.Context()
	rows, err := db.Query(ctx, `SELECT c.table_schema, c.table_name, c.column_name, c.data_type
		FROM information_schema.columns c JOIN information_schema.tables tb
		  ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
		WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
		  AND c.data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'json', 'ARRAY')`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ schema, table, column, kind string }
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
		var c col
		return c, r.Scan(&c.schema, &c.table, &c.column, &c.kind)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) < 50 {
		t.Fatalf("found only %d columns to scan: the scan would prove nothing", len(cols))
	}
	var found []string
	for _, c := range cols {
		expr := pgx.Identifier{c.column}.Sanitize() + "::text"
		if c.kind == "bytea" {
			expr = pgx.Identifier{c.column}.Sanitize()
		}
		for _, v := range values {
			var arg any = v
			if c.kind == "bytea" {
				arg = []byte(v)
			}
			var n int
			sql := `SELECT count(*) FROM ` + pgx.Identifier{c.schema, c.table}.Sanitize() + ` WHERE position($1 IN ` + expr + `) > 0`
			if err := db.QueryRow(ctx, sql, arg).Scan(&n); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if n > 0 {
				found = append(found, c.schema+"."+c.table+"."+c.column+" holds "+v)
			}
		}
	}
	return found
}

// After ForgetCustomer, and once the cart and the pos-adapter have heard it, no copy of the
// shopper's customer id, email, pickup name or note is left in any table of any service; their
// order stays with its lines and total, another shopper's data stays, bad input and non-admin
// callers change nothing, and a repeat changes nothing.
func TestForgetCustomerLeavesNoCopyOfTheShopperInAnyTable(t *testing.T) {
	ready := stacktest.Start(t, func(c *stack.Config) {
		// Emails are written (and wait, undeliverable) so that notifications hold copies too.
		c.Notify.SMTPAddr, c.Notify.SMTPFrom = "127.0.0.1:1", "shop@example.com"
	})
	ctx := t.Context()
	db, err := pgxpool.New(ctx, ready.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	erin := shopperData{"erin-c7f3a91e", "erin.q7x3@example.com", "Erin Q7X3name", "leave it with Q7X3 at the door"}
	frank := shopperData{"frank-b2d8e04c", "frank.z9k1@example.com", "Frank Z9K1name", "no sugar Z9K1 please"}
	mint := func(p auth.Principal) string {
		tok, err := ready.Keys.Issue(p, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	place := func(d shopperData, key string) (string, connect.UnaryInterceptorFunc) {
		t.Helper()
		tok := mint(auth.Principal{Subject: d.customer, Role: auth.RoleCustomer})
		withToken := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+tok)
				return next(ctx, req)
			}
		})
		carts := cartv1connect.NewCartServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithGRPCWeb(), connect.WithInterceptors(withToken))
		created, err := carts.CreateCart(ctx, connect.NewRequest(&cartv1.CreateCartRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		id := created.Msg.GetCart().GetId()
		if _, err := carts.AddLine(ctx, connect.NewRequest(&cartv1.AddLineRequest{CartId: id, Sku: "CROISSANT", Quantity: 2})); err != nil {
			t.Fatal(err)
		}
		if _, err := carts.SetPickup(ctx, connect.NewRequest(&cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{
			Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000}},
		}})); err != nil {
			t.Fatal(err)
		}
		placed, err := carts.Checkout(ctx, connect.NewRequest(&cartv1.CheckoutRequest{CartId: id, IdempotencyKey: key,
			CustomerNote: d.note, PickupName: d.name, Email: d.email}))
		if err != nil {
			t.Fatal(err)
		}
		if s := placed.Msg.GetOrder().GetState(); s != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
			t.Fatalf("%s's order is %v; want CONFIRMED", d.customer, s)
		}
		// A second cart, left open: the shopper's too.
		if _, err := carts.CreateCart(ctx, connect.NewRequest(&cartv1.CreateCartRequest{})); err != nil {
			t.Fatal(err)
		}
		return placed.Msg.GetOrder().GetId(), withToken
	}
	erinOrder, erinToken := place(erin, "erin-checkout-1")
	frankOrder, _ := place(frank, "frank-checkout-1")
	orders := fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, "http://"+ready.GatewayAddr, connect.WithGRPCWeb(), connect.WithInterceptors(erinToken))
	if _, err := orders.CancelOrder(ctx, connect.NewRequest(&fulfilmentv1.CancelOrderRequest{OrderId: erinOrder, Reason: "changed my mind"})); err != nil {
		t.Fatal(err)
	}
	// The cancellation's ticket carries the order: wait for it, so the pos-adapter's copies are there.
	waitFor(t, "erin's cancellation ticket", func() bool {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pos.tickets WHERE order_id = $1 AND kind = 'order_cancelled'`, erinOrder).Scan(&n)
		return err == nil && n > 0
	})
	for _, d := range []shopperData{erin, frank} {
		if found := copiesOf(t, db, d.values()); len(found) < 4 {
			t.Fatalf("before any erasure the scan finds only %v of %s's data: it would prove nothing", found, d.customer)
		}
	}
	orderRow := func(id string) string {
		var s string
		if err := db.QueryRow(ctx, `SELECT concat_ws('|', state, store_id, lines, currency, version, create_time, update_time)
			FROM fulfilment.orders WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	historyRows := func(id string) string {
		var s string
		if err := db.QueryRow(ctx, `SELECT string_agg(concat_ws('|', seq, from_state, to_state, event, actor_kind, reason, time), ';' ORDER BY seq)
			FROM fulfilment.order_history WHERE order_id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	erinBefore, erinHistory := orderRow(erinOrder), historyRows(erinOrder)
	everything := func() string {
		var s string
		if err := db.QueryRow(ctx, `SELECT concat(
			(SELECT string_agg(o::text, ';' ORDER BY id) FROM fulfilment.orders o),
			(SELECT string_agg(h::text, ';' ORDER BY order_id, seq) FROM fulfilment.order_history h),
			(SELECT string_agg(c.id || c.customer_id, ';' ORDER BY id) FROM cart.carts c),
			(SELECT string_agg(encode(t.payload, 'hex'), ';' ORDER BY store_id, seq) FROM pos.tickets t))`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	conn, err := grpc.NewClient(ready.ServiceAddrs[stack.TargetFulfilment], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin := fulfilmentv1.NewFulfilmentAdminServiceClient(conn)
	as := func(p auth.Principal) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+mint(p))
	}
	ops := as(auth.Principal{Subject: "ops", Role: auth.RoleAdmin})

	// Refusals change nothing.
	unchanged := everything()
	for _, c := range []struct {
		name string
		ctx  context.Context
		id   string
		code codes.Code
		want string
	}{
		{"empty id", ops, "", codes.InvalidArgument, "customer_id"},
		{"blank id", ops, "   ", codes.InvalidArgument, "customer_id"},
		{"too long", ops, strings.Repeat("e", auth.MaxCustomerIDLen+1), codes.InvalidArgument, "customer_id"},
		{"open order", ops, frank.customer, codes.FailedPrecondition, "customer_id"},
		{"the shopper", as(auth.Principal{Subject: erin.customer, Role: auth.RoleCustomer}), erin.customer, codes.PermissionDenied, ""},
		{"staff", as(auth.Principal{Subject: "till-1", Role: auth.RoleStaff, Stores: []string{"sea-capitol-hill-01"}}), erin.customer, codes.PermissionDenied, ""},
		{"no token", ctx, erin.customer, codes.Unauthenticated, ""},
	} {
		_, err := admin.ForgetCustomer(c.ctx, &fulfilmentv1.ForgetCustomerRequest{CustomerId: c.id})
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("%s: %v; want %v naming %q", c.name, err, c.code, c.want)
		}
	}
	if everything() != unchanged {
		t.Fatal("a refused ForgetCustomer changed orders, histories, carts or tickets")
	}

	res, err := admin.ForgetCustomer(ops, &fulfilmentv1.ForgetCustomerRequest{CustomerId: erin.customer})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOrders() != 1 || res.GetHistoryEntries() < 1 || res.GetNotifications() < 1 {
		t.Errorf("ForgetCustomer erased %v; want 1 order, her cancellation's history entry and her emails", res)
	}
	var left []string
	waitFor(t, "no copy of erin's data in any table", func() bool {
		left = copiesOf(t, db, erin.values())
		return len(left) == 0
	}, func() { t.Errorf("copies left: %v", left) })
	if got := orderRow(erinOrder); got != erinBefore {
		t.Errorf("erin's order changed beyond its personal fields:\n got %s\nwant %s", got, erinBefore)
	}
	if got := historyRows(erinOrder); got != erinHistory {
		t.Errorf("erin's order history changed beyond its actor ids:\n got %s\nwant %s", got, erinHistory)
	}
	if found := copiesOf(t, db, frank.values()); len(found) < 4 {
		t.Errorf("frank's data went too: only %v left", found)
	}
	if s := orderRow(frankOrder); !strings.HasPrefix(s, "2|") {
		t.Errorf("frank's open order is now %s", s)
	}

	// A repeat erases nothing more and changes nothing.
	settled := everything()
	again, err := admin.ForgetCustomer(ops, &fulfilmentv1.ForgetCustomerRequest{CustomerId: erin.customer})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetOrders() != 0 || again.GetHistoryEntries() != 0 || again.GetNotifications() != 0 || again.GetOutboxEvents() != 0 {
		t.Errorf("the repeat erased %v; want nothing", again)
	}
	waitFor(t, "the repeat's event heard", func() bool {
		var n int
		err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM cart.processed_events WHERE consumer = 'cart-forgotten-customers')
			+ (SELECT count(*) FROM pos.processed_events WHERE consumer = 'pos-adapter-forgotten-customers')`).Scan(&n)
		return err == nil && n >= 4
	})
	if everything() != settled {
		t.Error("the repeated ForgetCustomer changed orders, histories, carts or tickets")
	}
}

// waitFor polls cond for up to 30 s; on time-out it runs onFail (if any) and fails.
func waitFor(t *testing.T, what string, cond func() bool, onFail ...func()) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range onFail {
				f()
			}
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
