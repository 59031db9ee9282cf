package fulfilment_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

// Every refused shopper or staff action (an illegal transition, another store's or shopper's
// order, a line that is not there or is the last, missing or over-long fields) answers its
// code naming what is wrong and changes nothing: no order, history, effect, notification,
// outbox event, hold, ledger row or stock level, compared as a whole before and after.
func TestRefusedActionsChangeNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.62, -122.34, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 20)
	e.setStock("s1", "CROISSANT", 20)

	confirmedOrder := e.mustPlace(checkout("amy", "k-confirmed", "s1", line{"LATTE-16", 1}, line{"CROISSANT", 1}), confirmed)
	single := e.placeAt("s1", "amy", "k-single", "LATTE-16", 1)
	preparing := e.placeAt("s1", "amy", "k-preparing", "LATTE-16", 1)
	e.accept("s1", preparing.GetId())
	done := e.placeAt("s1", "amy", "k-cancelled", "LATTE-16", 1)
	if _, err := e.orders.CancelOrder(e.asCustomer("amy"), &fulfilmentv1.CancelOrderRequest{OrderId: done.GetId()}); err != nil {
		t.Fatal(err)
	}
	e.waitSettled(6)
	code := e.codeOf("amy", preparing.GetId())
	long := strings.Repeat("x", 2000)

	staff := func(store string) context.Context { return e.asStaff(store) }
	cases := []struct {
		name  string
		call  func() error
		code  codes.Code
		names string // a fragment the message must have
	}{
		{"accept an order another member of staff is preparing", func() error {
			ctx := metadata.AppendToOutgoingContext(e.ctx, fulfilment.MetadataStaffStores, "s1", fulfilment.MetadataActor, "staff:barista-2")
			_, err := e.store.AcceptOrder(ctx, &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: preparing.GetId()})
			return err
		}, codes.FailedPrecondition, ""},
		{"accept another store's order", func() error {
			_, err := e.store.AcceptOrder(staff("s2"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s2", OrderId: confirmedOrder.GetId()})
			return err
		}, codes.NotFound, confirmedOrder.GetId()},
		{"accept with no order id", func() error {
			_, err := e.store.AcceptOrder(staff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1"})
			return err
		}, codes.InvalidArgument, "order_id"},
		{"mark ready an order not being prepared", func() error {
			_, err := e.store.MarkReady(staff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: confirmedOrder.GetId()})
			return err
		}, codes.FailedPrecondition, ""},
		{"hand over an order not ready, with its code", func() error {
			_, err := e.handOver("s1", preparing.GetId(), code)
			return err
		}, codes.FailedPrecondition, ""},
		{"hand over with no code", func() error {
			_, err := e.handOver("s1", preparing.GetId(), "")
			return err
		}, codes.InvalidArgument, "pickup_code"},
		{"mark unavailable a line the order does not have", func() error {
			_, err := e.store.MarkLineUnavailable(staff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: confirmedOrder.GetId(), LineId: "l9"})
			return err
		}, codes.NotFound, "l9"},
		{"mark unavailable with no line id", func() error {
			_, err := e.store.MarkLineUnavailable(staff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: confirmedOrder.GetId()})
			return err
		}, codes.InvalidArgument, "line_id"},
		{"mark unavailable the last line", func() error {
			_, err := e.store.MarkLineUnavailable(staff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: single.GetId(), LineId: "l1"})
			return err
		}, codes.FailedPrecondition, "last"},
		{"mark unavailable with an over-long reason", func() error {
			_, err := e.store.MarkLineUnavailable(staff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: confirmedOrder.GetId(), LineId: "l1", Reason: long})
			return err
		}, codes.InvalidArgument, "reason"},
		{"staff cancel a cancelled order", func() error {
			_, err := e.store.CancelOrder(staff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: done.GetId(), Reason: "again"})
			return err
		}, codes.FailedPrecondition, ""},
		{"staff cancel with no reason", func() error {
			_, err := e.store.CancelOrder(staff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: confirmedOrder.GetId()})
			return err
		}, codes.InvalidArgument, "reason"},
		{"staff cancel another store's order", func() error {
			_, err := e.store.CancelOrder(staff("s2"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s2", OrderId: confirmedOrder.GetId(), Reason: "not ours"})
			return err
		}, codes.NotFound, confirmedOrder.GetId()},
		{"shopper cancel another shopper's order", func() error {
			_, err := e.orders.CancelOrder(e.asCustomer("bob"), &fulfilmentv1.CancelOrderRequest{OrderId: confirmedOrder.GetId()})
			return err
		}, codes.NotFound, confirmedOrder.GetId()},
		{"shopper cancel an order being prepared", func() error {
			_, err := e.orders.CancelOrder(e.asCustomer("amy"), &fulfilmentv1.CancelOrderRequest{OrderId: preparing.GetId()})
			return err
		}, codes.FailedPrecondition, ""},
		{"shopper cancel with an over-long reason", func() error {
			_, err := e.orders.CancelOrder(e.asCustomer("amy"), &fulfilmentv1.CancelOrderRequest{OrderId: confirmedOrder.GetId(), Reason: long})
			return err
		}, codes.InvalidArgument, "reason"},
		{"check in to another shopper's order", func() error {
			_, err := e.orders.CheckIn(e.asCustomer("bob"), &fulfilmentv1.CheckInRequest{OrderId: confirmedOrder.GetId()})
			return err
		}, codes.NotFound, confirmedOrder.GetId()},
		{"check in to a cancelled order", func() error {
			_, err := e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: done.GetId()})
			return err
		}, codes.FailedPrecondition, ""},
		{"check in at an over-long bay", func() error {
			_, err := e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: confirmedOrder.GetId(), Bay: long})
			return err
		}, codes.InvalidArgument, "bay"},
	}
	before := e.snapshot()
	for _, tc := range cases {
		err := tc.call()
		wantCode(t, tc.name, err, tc.code, tc.names)
		time.Sleep(20 * time.Millisecond) // an event or effect wrongly written would be on its way
		if after := e.snapshot(); after != before {
			t.Fatalf("%s changed something:\nbefore %s\nafter  %s", tc.name, before, after)
		}
	}
	e.checkInvariants()

	// The snapshot does see a change: a check-in that is allowed.
	if _, err := e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: confirmedOrder.GetId(), Bay: "A1"}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if e.snapshot() == before {
			return fmt.Errorf("a check-in did not change the snapshot")
		}
		return nil
	})
}

// snapshot sums up everything fulfilment and inventory have written: any write changes it.
// waitSettled waits until the effects worker has nothing left and the relay has published every
// event, published in all: the outbox and the events seen are in a snapshot, which is then
// still until something changes.
func (e *env) waitSettled(published int) {
	e.t.Helper()
	e.waitNoEffects()
	testenv.CheckFor(e.t, 10*time.Second, 20*time.Millisecond, func() error {
		var left int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
			return err
		}
		if n := e.events.count(); left != 0 || n != published {
			return fmt.Errorf("%d events in the outbox, %d published; want 0 and %d", left, n, published)
		}
		return nil
	})
}

func (e *env) snapshot() string {
	e.t.Helper()
	var f, i string
	if err := e.pool.QueryRow(e.ctx, `SELECT concat_ws(' ',
		(SELECT count(*) || ' orders v' || coalesce(sum(version), 0) || ' at ' || coalesce(max(update_time)::text, '') || ' wrong ' || coalesce(sum(wrong_codes), 0)
			|| ' checked in ' || count(check_in_time) || ' locked ' || count(pickup_locked_until) FROM orders),
		(SELECT count(*) || ' history' FROM order_history),
		(SELECT count(*) || ' effects' FROM order_effects),
		(SELECT count(*) || ' notifications' FROM notifications),
		(SELECT count(*) || ' in outbox' FROM outbox))`).Scan(&f); err != nil {
		e.t.Fatal(err)
	}
	if err := e.invPool.QueryRow(e.ctx, `SELECT concat_ws(' ',
		(SELECT string_agg(state || ':' || n || '/' || q || ' until ' || e, ',' ORDER BY state)
			FROM (SELECT state, count(*) n, sum(quantity) q, max(expire_time)::text e FROM holds GROUP BY state) h),
		(SELECT count(*) || ' movements' FROM movements),
		(SELECT 'on hand ' || sum(on_hand) || ' reserved ' || sum(reserved) || ' at ' || max(update_time)::text FROM stock))`).Scan(&i); err != nil {
		e.t.Fatal(err)
	}
	return fmt.Sprintf("%s | %s | %d events published", f, i, e.events.count())
}
