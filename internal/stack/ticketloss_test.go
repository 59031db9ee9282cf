package stack_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
)

// An order confirmed while the pos-adapter was behind (down, or slow) whose confirmed event
// was then lost with the events stream (reset by an operator, or the NATS server back without
// its store), after fulfilment's relay had deleted it from the outbox, still reaches its
// store's feed as a NEW_ORDER ticket: invariant 4, "no ticket is lost". The adapter is held
// back by narrowing its durable consumer's filter to nothing, which is what it sees of a
// stream while it is down.
func TestAConfirmedOrderWhoseEventWasLostWithTheStreamStillReachesItsStore(t *testing.T) {
	r := stacktest.Start(t)
	js := jetStreamOf(t, r.NATSURL)
	db := testenv.Connect(t, r.DatabaseURL)

	holdPOSAdapterBack(t, js)

	order := checkoutOne(t, r.GatewayAddr, r.Keys)
	if order.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("checkout: order %s is %v, want CONFIRMED", order.GetId(), order.GetState())
	}
	waitFulfilmentRelayed(t, db)

	if err := js.DeleteStream(t.Context(), streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 2*time.Minute, time.Second, func() error {
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM pos.tickets WHERE order_id = $1 AND kind = 'new_order'`, order.GetId()).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("order %s, confirmed, has no NEW_ORDER ticket in its store's feed", order.GetId())
		}
		return nil
	})
}

// shopper is a shopper's app talking to the gateway over gRPC-web.
type shopper struct {
	cart   cartv1connect.CartServiceClient
	orders fulfilmentv1connect.OrderServiceClient
}

// shopperOf is a new shopper of the system at gatewayAddr, named after the test.
func shopperOf(t *testing.T, gatewayAddr string, keys *auth.KeySet) shopper {
	t.Helper()
	tok, err := keys.Issue(auth.Principal{Subject: "shopper-" + t.Name(), Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bearer := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
	base, opts := "http://"+gatewayAddr, []connect.ClientOption{connect.WithGRPCWeb(), connect.WithInterceptors(bearer)}
	return shopper{
		cart:   cartv1connect.NewCartServiceClient(http.DefaultClient, base, opts...),
		orders: fulfilmentv1connect.NewOrderServiceClient(http.DefaultClient, base, opts...),
	}
}

// checkoutOne places one order through the gateway as a shopper's app does, and returns it.
func checkoutOne(t *testing.T, gatewayAddr string, keys *auth.KeySet) *fulfilmentv1.Order {
	t.Helper()
	return shopperOf(t, gatewayAddr, keys).checkout(t, "lost-stream-1")
}

// checkout places one order of one croissant at the store nearest downtown Seattle.
func (s shopper) checkout(t *testing.T, key string) *fulfilmentv1.Order {
	t.Helper()
	created, err := s.cart.CreateCart(t.Context(), connect.NewRequest(&cartv1.CreateCartRequest{
		Lines: []*cartv1.NewCartLine{{Sku: "CROISSANT", Quantity: 1}},
		Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
			Location: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000,
		}}},
	}))
	if err != nil {
		t.Fatalf("CreateCart: %v", err)
	}
	placed, err := s.cart.Checkout(t.Context(), connect.NewRequest(&cartv1.CheckoutRequest{CartId: created.Msg.GetCart().GetId(), IdempotencyKey: key}))
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	return placed.Msg.GetOrder()
}

// checkIn checks order in at a bay: its last event is then checked_in, and it stays CONFIRMED.
func (s shopper) checkIn(t *testing.T, order *fulfilmentv1.Order) {
	t.Helper()
	res, err := s.orders.CheckIn(t.Context(), connect.NewRequest(&fulfilmentv1.CheckInRequest{OrderId: order.GetId(), Bay: "3"}))
	if err != nil {
		t.Fatalf("CheckIn %s: %v", order.GetId(), err)
	}
	if st := res.Msg.GetOrder().GetState(); st != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("CheckIn %s: order is %v, want it still CONFIRMED", order.GetId(), st)
	}
}

// The re-announcement after a stream is made anew changes nothing for a consumer that had
// handled the original event: an order whose NEW_ORDER ticket was raised gets no second one
// (the pos-adapter's inbox has the event's id, which the re-announced event keeps).
func TestAReannouncedOrderEventRaisesNoSecondTicket(t *testing.T) {
	r := stacktest.Start(t)
	js := jetStreamOf(t, r.NATSURL)
	db := testenv.Connect(t, r.DatabaseURL)

	order := checkoutOne(t, r.GatewayAddr, r.Keys)
	tickets := func() (int, error) {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM pos.tickets WHERE order_id = $1`, order.GetId()).Scan(&n)
		return n, err
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n, err := tickets(); err != nil || n == 0 {
			return fmt.Errorf("order %s has no ticket yet (%v)", order.GetId(), err)
		}
		return nil
	})
	var was time.Time
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		return db.QueryRow(t.Context(), `SELECT created FROM fulfilment.event_streams`).Scan(&was)
	})

	if err := js.DeleteStream(t.Context(), streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	// Announced again (the time moves only after), relayed, and read by the pos-adapter.
	testenv.CheckFor(t, 2*time.Minute, time.Second, func() error {
		var now time.Time
		if err := db.QueryRow(t.Context(), `SELECT created FROM fulfilment.event_streams`).Scan(&now); err != nil {
			return err
		}
		if now.Equal(was) {
			return fmt.Errorf("fulfilment has not announced its open orders to the new stream yet")
		}
		st, err := js.Stream(t.Context(), streams.EventsStream)
		if err != nil {
			return err
		}
		if st.CachedInfo().State.Msgs == 0 {
			return fmt.Errorf("nothing relayed to the new stream yet")
		}
		cons, err := js.Consumer(t.Context(), streams.EventsStream, "pos-adapter-order-events")
		if err != nil {
			return err
		}
		if ci := cons.CachedInfo(); ci.NumPending > 0 || ci.NumAckPending > 0 || ci.Delivered.Stream == 0 {
			return fmt.Errorf("the pos-adapter has not read the new stream yet (%d pending, %d unacked)", ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
	if n, err := tickets(); err != nil || n != 1 {
		t.Fatalf("order %s has %d tickets (%v) after its event was announced again, want its one NEW_ORDER", order.GetId(), n, err)
	}
}

// A confirmed order whose shopper checked in while the pos-adapter was behind, both its events
// then lost with the stream, gets its NEW_ORDER ticket from the one event fulfilment can announce
// again (its current one, checked_in) and its check-in ticket, each once; and an order that
// was checked in while the adapter kept up gets one NEW_ORDER, not a second from its
// check-in event, before the loss and after it (its events announced again are skipped).
func TestACheckedInOrderWhoseEventsWereLostWithTheStreamGetsEachTicketOnce(t *testing.T) {
	r := stacktest.Start(t)
	js := jetStreamOf(t, r.NATSURL)
	db := testenv.Connect(t, r.DatabaseURL)
	app := shopperOf(t, r.GatewayAddr, r.Keys)
	tickets := func(orderID string) (map[string]int, error) {
		rows, err := db.Query(t.Context(), `SELECT kind, count(*) FROM pos.tickets WHERE order_id = $1 GROUP BY kind`, orderID)
		if err != nil {
			return nil, err
		}
		byKind := map[string]int{}
		for rows.Next() {
			var kind string
			var n int
			if err := rows.Scan(&kind, &n); err != nil {
				return nil, err
			}
			byKind[kind] = n
		}
		return byKind, rows.Err()
	}
	wantOneEach := func(orderID string) func() error {
		return func() error {
			got, err := tickets(orderID)
			if err != nil {
				return err
			}
			if len(got) != 2 || got["new_order"] != 1 || got["customer_checked_in"] != 1 {
				return fmt.Errorf("order %s has tickets %v, want one new_order and one customer_checked_in", orderID, got)
			}
			return nil
		}
	}

	kept := app.checkout(t, "checked-in-kept-up")
	app.checkIn(t, kept)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, wantOneEach(kept.GetId()))

	holdPOSAdapterBack(t, js)
	lost := app.checkout(t, "checked-in-lost")
	app.checkIn(t, lost)
	waitFulfilmentRelayed(t, db)
	if got, err := tickets(lost.GetId()); err != nil || len(got) != 0 {
		t.Fatalf("order %s has tickets %v (%v) while the pos-adapter is held back", lost.GetId(), got, err)
	}

	if err := js.DeleteStream(t.Context(), streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 2*time.Minute, time.Second, wantOneEach(lost.GetId()))
	// Both orders' check-in events were announced again; the adapter had the first's.
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, err := js.Consumer(t.Context(), streams.EventsStream, "pos-adapter-order-events")
		if err != nil {
			return err
		}
		if ci := c.CachedInfo(); ci.NumPending > 0 || ci.NumAckPending > 0 || ci.Delivered.Stream < 2 {
			return fmt.Errorf("the pos-adapter has not read both announced events yet (%d pending, %d unacked, %d delivered)", ci.NumPending, ci.NumAckPending, ci.Delivered.Stream)
		}
		return nil
	})
	if err := wantOneEach(kept.GetId())(); err != nil {
		t.Fatal(err)
	}
}

// holdPOSAdapterBack narrows the pos-adapter's durable consumer of order events to a subject
// nothing is published on, which is what it sees of the stream while it is down.
func holdPOSAdapterBack(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cons, err := js.Consumer(t.Context(), streams.EventsStream, "pos-adapter-order-events")
	if err != nil {
		t.Fatal(err)
	}
	held := cons.CachedInfo().Config
	held.FilterSubject, held.FilterSubjects = "handoff.fulfilment.order.held-back", nil
	if _, err := js.UpdateConsumer(t.Context(), streams.EventsStream, held); err != nil {
		t.Fatal(err)
	}
}

// waitFulfilmentRelayed waits until fulfilment's relay has handed every event to JetStream and
// deleted it from the outbox: from then on the stream holds the only copy.
func waitFulfilmentRelayed(t *testing.T, db *pgx.Conn) {
	t.Helper()
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM fulfilment.outbox`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d events still in fulfilment's outbox", n)
		}
		return nil
	})
}
