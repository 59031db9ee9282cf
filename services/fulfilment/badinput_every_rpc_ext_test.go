package fulfilment_test

// DESIGN.md invariant 7 (bad input gets a clear error naming the field, and changes nothing),
// every field of every RPC of OrderService, StoreOrderService and FulfilmentAdminService.

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

func TestEveryOrderRPCRefusesBadInputNamingTheField(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE", 10)
	e.setStock("s1", "MOCHA", 10)
	o1 := e.mustPlace(checkout("c1", "k1", "s1", line{"LATTE", 1}, line{"MOCHA", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	o2 := e.mustPlace(checkout("c1", "k2", "s1", line{"LATTE", 1}, line{"MOCHA", 1}), fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED)
	if _, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o2.GetId()}); err != nil {
		t.Fatal(err)
	}
	cust, staff := e.asCustomer("c1"), e.asStaff("s1")
	long := strings.Repeat("x", 100_000)
	listTok, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{PageSize: 1})
	if err != nil || listTok.GetNextPageToken() == "" {
		t.Fatalf("ListOrders: %v %v", listTok, err)
	}
	boardTok, err := e.store.ListStoreOrders(staff, &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1", PageSize: 1})
	if err != nil || boardTok.GetNextPageToken() == "" {
		t.Fatalf("ListStoreOrders: %v %v", boardTok, err)
	}

	snapshot := func() string {
		var s string
		if err := e.pool.QueryRow(e.ctx, `SELECT string_agg(id || ':' || state || ':' || version || ':' || check_ins || ':' || wrong_codes, ',' ORDER BY id) FROM orders`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		var h string
		if err := e.invPool.QueryRow(e.ctx, `SELECT coalesce(string_agg(order_id || '/' || line_id || '/' || state, ',' ORDER BY order_id, line_id), '') FROM holds`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return s + " | " + h
	}

	tests := []testenv.Refusal{
		// FulfilmentAdminService.ForgetCustomer (its edge lets only admin tokens through)
		{Name: "ForgetCustomer empty", Do: func() error { _, err := e.svc.ForgetCustomer(e.ctx, ""); return err }, Code: codes.InvalidArgument, Field: "customer_id"},
		{Name: "ForgetCustomer blank", Do: func() error { _, err := e.svc.ForgetCustomer(e.ctx, " \t"); return err }, Code: codes.InvalidArgument, Field: "customer_id"},
		{Name: "ForgetCustomer 100k", Do: func() error { _, err := e.svc.ForgetCustomer(e.ctx, long); return err }, Code: codes.InvalidArgument, Field: "customer_id"},
		{Name: "ForgetCustomer bad UTF-8", Do: func() error { _, err := e.svc.ForgetCustomer(e.ctx, "c\xff"); return err }, Code: codes.InvalidArgument, Field: "customer_id"},
		{Name: "ForgetCustomer with open orders", Do: func() error { _, err := e.svc.ForgetCustomer(e.ctx, "c1"); return err }, Code: codes.FailedPrecondition, Field: "customer_id"},
		// OrderService
		{Name: "GetOrder empty", Do: func() error { _, err := e.orders.GetOrder(cust, &fulfilmentv1.GetOrderRequest{}); return err }, Code: codes.InvalidArgument, Field: "order_id"},
		{Name: "GetOrder 100k", Do: func() error {
			_, err := e.orders.GetOrder(cust, &fulfilmentv1.GetOrderRequest{OrderId: long})
			return err
		}, Code: codes.NotFound, Field: "order"},
		{Name: "ListOrders page_size -1", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{PageSize: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "page_size"},
		{Name: "ListOrders state 42", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{States: []fulfilmentv1.OrderState{42}})
			return err
		}, Code: codes.InvalidArgument, Field: "states[0]"},
		{Name: "ListOrders state MinInt32", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{States: []fulfilmentv1.OrderState{math.MinInt32}})
			return err
		}, Code: codes.InvalidArgument, Field: "states[0]"},
		{Name: "ListOrders token with other filter", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{PageToken: listTok.GetNextPageToken(), States: []fulfilmentv1.OrderState{2}})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListOrders token of ListStoreOrders", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{PageToken: boardTok.GetNextPageToken()})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "ListOrders garbage token", Do: func() error {
			_, err := e.orders.ListOrders(cust, &fulfilmentv1.ListOrdersRequest{PageToken: "@@"})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "CancelOrder (shopper) empty id", Do: func() error { _, err := e.orders.CancelOrder(cust, &fulfilmentv1.CancelOrderRequest{}); return err }, Code: codes.InvalidArgument, Field: "order_id"},
		{Name: "CancelOrder (shopper) reason long", Do: func() error {
			_, err := e.orders.CancelOrder(cust, &fulfilmentv1.CancelOrderRequest{OrderId: o1.GetId(), Reason: long})
			return err
		}, Code: codes.InvalidArgument, Field: "reason"},
		{Name: "CancelOrder (shopper) preparing order", Do: func() error {
			_, err := e.orders.CancelOrder(cust, &fulfilmentv1.CancelOrderRequest{OrderId: o2.GetId()})
			return err
		}, Code: codes.FailedPrecondition, Field: "PREPARING"},
		{Name: "CheckIn bay too long", Do: func() error {
			_, err := e.orders.CheckIn(cust, &fulfilmentv1.CheckInRequest{OrderId: o1.GetId(), Bay: strings.Repeat("b", 33)})
			return err
		}, Code: codes.InvalidArgument, Field: "bay"},
		{Name: "CheckIn unknown order", Do: func() error {
			_, err := e.orders.CheckIn(cust, &fulfilmentv1.CheckInRequest{OrderId: "nope"})
			return err
		}, Code: codes.NotFound, Field: "nope"},
		{Name: "CheckIn someone else's order", Do: func() error {
			_, err := e.orders.CheckIn(e.asCustomer("c2"), &fulfilmentv1.CheckInRequest{OrderId: o1.GetId()})
			return err
		}, Code: codes.NotFound, Field: "order"},
		{Name: "WatchOrder empty", Do: func() error {
			ctx, cancel := context.WithTimeout(cust, 5*time.Second)
			defer cancel()
			s, err := e.orders.WatchOrder(ctx, &fulfilmentv1.WatchOrderRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, Code: codes.InvalidArgument, Field: "order_id"},
		{Name: "WatchOrder unknown", Do: func() error {
			ctx, cancel := context.WithTimeout(cust, 5*time.Second)
			defer cancel()
			s, err := e.orders.WatchOrder(ctx, &fulfilmentv1.WatchOrderRequest{OrderId: long})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, Code: codes.NotFound, Field: "order"},
		// StoreOrderService
		{Name: "ListStoreOrders no store", Do: func() error {
			_, err := e.store.ListStoreOrders(staff, &fulfilmentv1.ListStoreOrdersRequest{})
			return err
		}, Code: codes.InvalidArgument, Field: "store_id"},
		{Name: "ListStoreOrders state 9", Do: func() error {
			_, err := e.store.ListStoreOrders(staff, &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1", States: []fulfilmentv1.OrderState{9}})
			return err
		}, Code: codes.InvalidArgument, Field: "states[0]"},
		{Name: "ListStoreOrders token of ListOrders", Do: func() error {
			_, err := e.store.ListStoreOrders(staff, &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1", PageToken: listTok.GetNextPageToken()})
			return err
		}, Code: codes.InvalidArgument, Field: "page_token"},
		{Name: "AcceptOrder no order id", Do: func() error {
			_, err := e.store.AcceptOrder(staff, &fulfilmentv1.AcceptOrderRequest{StoreId: "s1"})
			return err
		}, Code: codes.InvalidArgument, Field: "order_id"},
		{Name: "AcceptOrder preparing again by other staff", Do: func() error {
			ctx := e.asStaff("s1")
			_, err := e.store.MarkReady(ctx, &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o1.GetId()})
			return err
		}, Code: codes.FailedPrecondition, Field: "CONFIRMED"},
		{Name: "MarkLineUnavailable blank line", Do: func() error {
			_, err := e.store.MarkLineUnavailable(staff, &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o2.GetId(), LineId: "  "})
			return err
		}, Code: codes.InvalidArgument, Field: "line_id"},
		{Name: "MarkLineUnavailable unknown line", Do: func() error {
			_, err := e.store.MarkLineUnavailable(staff, &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o2.GetId(), LineId: "l9"})
			return err
		}, Code: codes.NotFound, Field: "l9"},
		{Name: "MarkLineUnavailable reason long", Do: func() error {
			_, err := e.store.MarkLineUnavailable(staff, &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o2.GetId(), LineId: "l1", Reason: strings.Repeat("é", 501)})
			return err
		}, Code: codes.InvalidArgument, Field: "reason"},
		{Name: "HandOver wrong length code", Do: func() error {
			_, err := e.store.HandOver(staff, &fulfilmentv1.HandOverRequest{StoreId: "s1", OrderId: o2.GetId(), PickupCode: "12"})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup_code"},
		{Name: "HandOver code with control chars", Do: func() error {
			_, err := e.store.HandOver(staff, &fulfilmentv1.HandOverRequest{StoreId: "s1", OrderId: o2.GetId(), PickupCode: "\x01\x02\x03\x04\x05\x06"})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup_code"},
		{Name: "CancelOrder (staff) whitespace reason", Do: func() error {
			_, err := e.store.CancelOrder(staff, &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: o2.GetId(), Reason: "\u00a0\u2003"})
			return err
		}, Code: codes.InvalidArgument, Field: "reason"},
		{Name: "CancelOrder (staff) other store's order", Do: func() error {
			_, err := e.store.CancelOrder(e.asStaff("s2"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s2", OrderId: o2.GetId(), Reason: "x"})
			return err
		}, Code: codes.NotFound, Field: "order"},
	}
	before := snapshot()
	testenv.RefusedEach(t, tests)
	if after := snapshot(); after != before {
		t.Errorf("refused requests changed state:\nbefore %s\nafter  %s", before, after)
	}
}
