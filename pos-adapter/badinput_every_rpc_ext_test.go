package posadapter_test

// DESIGN.md invariant 7 (bad input gets a clear error naming the field, and changes nothing),
// every field of every RPC of TerminalService (staff) and TerminalAdminService (admin), with real
// inventory and fulfilment behind the adapter: every bad value gets a client-fault code whose
// message names the field, and nothing changes.

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/auth"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

var clientFault = map[connect.Code]bool{
	connect.CodeInvalidArgument: true, connect.CodeNotFound: true, connect.CodeFailedPrecondition: true,
	connect.CodeResourceExhausted: true, connect.CodeAlreadyExists: true, connect.CodeOutOfRange: true,
	connect.CodePermissionDenied: true, connect.CodeAborted: true,
}

type badInputCase struct {
	name  string
	do    func(ctx context.Context) error
	code  connect.Code // 0: any client-fault code
	field string       // the message must contain it
}

func refuseEach(t *testing.T, cases []badInputCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := tc.do(ctx)
			if err == nil {
				t.Fatalf("accepted; want a refusal naming %q", tc.field)
			}
			code := codeOf(err)
			if tc.code != 0 && code != tc.code || tc.code == 0 && !clientFault[code] {
				t.Fatalf("code %v (%.300v); want %v naming %q", code, err, tc.code, tc.field)
			}
			var ce *connect.Error
			msg := err.Error()
			if e, ok := err.(*connect.Error); ok {
				ce = e
				msg = ce.Message()
			}
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message %.300q does not name %q", msg, tc.field)
			}
		})
	}
}

func TestEveryStaffAndAdminRPCRefusesBadInputNamingTheField(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "st-1", map[string]int32{"LATTE-16": 5, "MOCHA-16": 5})
	s.addStore(t, "st-2", map[string]int32{"LATTE-16": 5})
	o := s.placeOrder(t, "st-1", "audit-1", map[string]int32{"LATTE-16": 1, "MOCHA-16": 1})
	_, cred := e.register("Front counter", "st-1")
	term := e.terminal(overGRPC, cred)
	admin := e.admin()
	long := strings.Repeat("x", 100_000)
	oid := o.GetId()
	bg := context.Background()

	// What a refusal must leave as it was.
	snapshot := func() string {
		var out string
		var st int16
		var ver int64
		if err := s.fulPool.QueryRow(bg, `SELECT state, version FROM orders WHERE id = $1`, oid).Scan(&st, &ver); err != nil {
			t.Fatal(err)
		}
		out += "order " + fulfilmentv1.OrderState(st).String() + " v" + itoa(ver)
		for _, id := range []string{"st-1", "st-2"} {
			res, err := s.locator.GetStore(bg, &inventoryv1.GetStoreRequest{StoreId: id})
			if err != nil {
				t.Fatal(err)
			}
			out += " " + id + ":" + res.GetStore().GetState().String() + "/v" + itoa(res.GetStore().GetVersion()) + "/" + res.GetStore().GetStateReason()
		}
		var n int64
		if err := e.pool.QueryRow(bg, `SELECT (SELECT count(*) FROM terminals) * 1000000 + (SELECT count(*) FROM terminals WHERE revoke_time IS NOT NULL) * 10000
			+ (SELECT count(*) FROM store_settings) * 100 + (SELECT count(*) FROM store_webhooks)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out += " pos " + itoa(n)
		return out
	}
	before := snapshot()

	staff := []badInputCase{
		// AckTicket
		{"AckTicket no ticket_id", func(ctx context.Context) error {
			_, err := term.AckTicket(ctx, req(&posv1.AckTicketRequest{StoreId: "st-1"}))
			return err
		}, connect.CodeInvalidArgument, "ticket_id"},
		{"AckTicket ticket_id not a uuid", func(ctx context.Context) error {
			_, err := term.AckTicket(ctx, req(&posv1.AckTicketRequest{StoreId: "st-1", TicketId: "ticket-1"}))
			return err
		}, connect.CodeInvalidArgument, "ticket_id"},
		{"AckTicket ticket_id urn form", func(ctx context.Context) error {
			_, err := term.AckTicket(ctx, req(&posv1.AckTicketRequest{StoreId: "st-1", TicketId: "urn:uuid:0190a0b0-0000-7000-8000-000000000001"}))
			return err
		}, connect.CodeNotFound, "0190a0b0"},
		{"AckTicket store_id empty", func(ctx context.Context) error {
			_, err := term.AckTicket(ctx, req(&posv1.AckTicketRequest{TicketId: "0190a0b0-0000-7000-8000-000000000001"}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
		// PauseStore / ResumeStore
		{"PauseStore reason too long", func(ctx context.Context) error {
			_, err := term.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "st-1", Reason: strings.Repeat("r", 201)}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"PauseStore reason whitespace 1000", func(ctx context.Context) error {
			_, err := term.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "st-1", Reason: strings.Repeat(" ", 1000)}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"PauseStore store_id blank", func(ctx context.Context) error {
			_, err := term.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "   "}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
		{"ResumeStore store_id long", func(ctx context.Context) error {
			_, err := term.ResumeStore(ctx, req(&posv1.ResumeStoreRequest{StoreId: long}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
		// ListStoreOrders
		{"ListStoreOrders unknown state 99", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", States: []fulfilmentv1.OrderState{99}}))
			return err
		}, connect.CodeInvalidArgument, "states[0]"},
		{"ListStoreOrders negative state", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", States: []fulfilmentv1.OrderState{1, -5}}))
			return err
		}, connect.CodeInvalidArgument, "states[1]"},
		{"ListStoreOrders UNSPECIFIED state", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", States: []fulfilmentv1.OrderState{0}}))
			return err
		}, connect.CodeInvalidArgument, "states[0]"},
		{"ListStoreOrders page_size -1", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", PageSize: -1}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"ListStoreOrders page_size MinInt32", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", PageSize: math.MinInt32}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"ListStoreOrders garbage token", func(ctx context.Context) error {
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1", PageToken: "!!not a token"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		{"ListStoreOrders forged token far-future time", func(ctx context.Context) error {
			// {"c":"x","p":{"t":9223372036854775807,"i":"a"}}
			_, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "st-1",
				PageToken: "eyJjIjoieCIsInAiOnsidCI6OTIyMzM3MjAzNjg1NDc3NTgwNywiaSI6ImEifX0"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		// AcceptOrder
		{"AcceptOrder no order_id", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-1"}))
			return err
		}, connect.CodeInvalidArgument, "order_id"},
		{"AcceptOrder blank order_id", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-1", OrderId: "   "}))
			return err
		}, 0, "order"},
		{"AcceptOrder 100k order_id", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-1", OrderId: long}))
			return err
		}, 0, "order"},
		{"AcceptOrder control chars order_id", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-1", OrderId: "\x01\x02\x7f"}))
			return err
		}, 0, "order"},
		{"AcceptOrder NUL order_id", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-1", OrderId: "o\x00x"}))
			return err
		}, connect.CodeInvalidArgument, "order_id"},
		{"AcceptOrder order of another store", func(ctx context.Context) error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "st-2", OrderId: oid}))
			return err
		}, connect.CodePermissionDenied, "st-2"},
		// MarkLineUnavailable
		{"MarkLineUnavailable no line_id", func(ctx context.Context) error {
			_, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "st-1", OrderId: oid}))
			return err
		}, connect.CodeInvalidArgument, "line_id"},
		{"MarkLineUnavailable line_id too long", func(ctx context.Context) error {
			_, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "st-1", OrderId: oid, LineId: strings.Repeat("l", 65)}))
			return err
		}, connect.CodeInvalidArgument, "line_id"},
		{"MarkLineUnavailable unknown line", func(ctx context.Context) error {
			_, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "st-1", OrderId: oid, LineId: "l99"}))
			return err
		}, 0, "l99"},
		{"MarkLineUnavailable reason too long", func(ctx context.Context) error {
			_, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "st-1", OrderId: oid, LineId: "l1", Reason: long}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"MarkLineUnavailable no order_id", func(ctx context.Context) error {
			_, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "st-1", LineId: "l1"}))
			return err
		}, connect.CodeInvalidArgument, "order_id"},
		// MarkReady (CONFIRMED cannot be made ready)
		{"MarkReady no order_id", func(ctx context.Context) error {
			_, err := term.MarkReady(ctx, req(&posv1.MarkReadyRequest{StoreId: "st-1"}))
			return err
		}, connect.CodeInvalidArgument, "order_id"},
		// HandOver
		{"HandOver no code", func(ctx context.Context) error {
			_, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "st-1", OrderId: oid}))
			return err
		}, connect.CodeInvalidArgument, "pickup_code"},
		{"HandOver code of letters", func(ctx context.Context) error {
			_, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "st-1", OrderId: oid, PickupCode: "abcdef"}))
			return err
		}, connect.CodeInvalidArgument, "pickup_code"},
		{"HandOver code 100k", func(ctx context.Context) error {
			_, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "st-1", OrderId: oid, PickupCode: long}))
			return err
		}, connect.CodeInvalidArgument, "pickup_code"},
		// CancelOrder
		{"CancelOrder no reason", func(ctx context.Context) error {
			_, err := term.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "st-1", OrderId: oid}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"CancelOrder blank reason", func(ctx context.Context) error {
			_, err := term.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "st-1", OrderId: oid, Reason: " \t\n "}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"CancelOrder reason too long", func(ctx context.Context) error {
			_, err := term.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "st-1", OrderId: oid, Reason: long}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
		{"CancelOrder NUL reason", func(ctx context.Context) error {
			_, err := term.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "st-1", OrderId: oid, Reason: "out\x00of stock"}))
			return err
		}, connect.CodeInvalidArgument, "reason"},
	}
	refuseEach(t, staff)

	adminCases := []badInputCase{
		{"RegisterTerminal no name", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{StoreIds: []string{"st-1"}}))
			return err
		}, connect.CodeInvalidArgument, "name"},
		{"RegisterTerminal blank name", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "\t \n", StoreIds: []string{"st-1"}}))
			return err
		}, connect.CodeInvalidArgument, "name"},
		{"RegisterTerminal long name", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: long, StoreIds: []string{"st-1"}}))
			return err
		}, connect.CodeInvalidArgument, "name"},
		{"RegisterTerminal NUL name", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till\x00", StoreIds: []string{"st-1"}}))
			return err
		}, connect.CodeInvalidArgument, "name"},
		{"RegisterTerminal no stores", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till"}))
			return err
		}, connect.CodeInvalidArgument, "store_ids"},
		{"RegisterTerminal 101 stores", func(ctx context.Context) error {
			ids := make([]string, 101)
			for i := range ids {
				ids[i] = "st-1"
			}
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till", StoreIds: ids}))
			return err
		}, connect.CodeInvalidArgument, "store_ids"},
		{"RegisterTerminal empty store id", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till", StoreIds: []string{"st-1", ""}}))
			return err
		}, connect.CodeInvalidArgument, "store_ids[1]"},
		{"RegisterTerminal unknown store", func(ctx context.Context) error {
			_, err := admin.RegisterTerminal(ctx, req(&posv1.RegisterTerminalRequest{Name: "Till", StoreIds: []string{"st-9"}}))
			return err
		}, connect.CodeInvalidArgument, "store_ids[0]"},
		{"RevokeTerminal empty", func(ctx context.Context) error {
			_, err := admin.RevokeTerminal(ctx, req(&posv1.RevokeTerminalRequest{}))
			return err
		}, connect.CodeInvalidArgument, "terminal_id"},
		{"RevokeTerminal unknown", func(ctx context.Context) error {
			_, err := admin.RevokeTerminal(ctx, req(&posv1.RevokeTerminalRequest{TerminalId: "term-nope"}))
			return err
		}, connect.CodeNotFound, "term-nope"},
		{"RevokeTerminal 100k id", func(ctx context.Context) error {
			_, err := admin.RevokeTerminal(ctx, req(&posv1.RevokeTerminalRequest{TerminalId: long}))
			return err
		}, 0, "terminal"},
		{"ListTerminals bad store", func(ctx context.Context) error {
			_, err := admin.ListTerminals(ctx, req(&posv1.ListTerminalsRequest{StoreId: "Bad Store"}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
		{"ListTerminals page_size -1", func(ctx context.Context) error {
			_, err := admin.ListTerminals(ctx, req(&posv1.ListTerminalsRequest{PageSize: -1}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"ListTerminals garbage token", func(ctx context.Context) error {
			_, err := admin.ListTerminals(ctx, req(&posv1.ListTerminalsRequest{PageToken: "eyJ9"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		{"SetStoreWebhook nil webhook", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{}))
			return err
		}, connect.CodeInvalidArgument, "webhook"},
		{"SetStoreWebhook bad url", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "ftp://x"}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.url"},
		{"SetStoreWebhook empty url", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1"}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.url"},
		{"SetStoreWebhook url 100k", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/" + long}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.url"},
		{"SetStoreWebhook url with control char", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/a\x01b"}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.url"},
		{"SetStoreWebhook kind 99", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/h", Kinds: []posv1.TicketKind{1, 99}}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.kinds[1]"},
		{"SetStoreWebhook kind -1", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/h", Kinds: []posv1.TicketKind{-1}}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.kinds[0]"},
		{"SetStoreWebhook ttl negative", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/h"},
				RotateSecret: true, PreviousSecretTtl: durationpb.New(-time.Second)}))
			return err
		}, connect.CodeInvalidArgument, "previous_secret_ttl"},
		{"SetStoreWebhook ttl invalid nanos", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/h"},
				RotateSecret: true, PreviousSecretTtl: &durationpb.Duration{Seconds: 5, Nanos: -5}}))
			return err
		}, connect.CodeInvalidArgument, "previous_secret_ttl"},
		{"SetStoreWebhook ttl huge", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-1", Url: "https://pos.example.com/h"},
				RotateSecret: true, PreviousSecretTtl: &durationpb.Duration{Seconds: math.MaxInt64}}))
			return err
		}, connect.CodeInvalidArgument, "previous_secret_ttl"},
		{"SetStoreWebhook unknown store", func(ctx context.Context) error {
			_, err := admin.SetStoreWebhook(ctx, req(&posv1.SetStoreWebhookRequest{Webhook: &posv1.StoreWebhook{StoreId: "st-9", Url: "https://pos.example.com/h"}}))
			return err
		}, connect.CodeInvalidArgument, "webhook.store_id"},
		{"ListFailedDeliveries bad store", func(ctx context.Context) error {
			_, err := admin.ListFailedDeliveries(ctx, req(&posv1.ListFailedDeliveriesRequest{StoreId: long}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
		{"ListFailedDeliveries page_size -1", func(ctx context.Context) error {
			_, err := admin.ListFailedDeliveries(ctx, req(&posv1.ListFailedDeliveriesRequest{PageSize: -1}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"ListFailedDeliveries garbage token", func(ctx context.Context) error {
			_, err := admin.ListFailedDeliveries(ctx, req(&posv1.ListFailedDeliveriesRequest{PageToken: "x"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		{"ReplayDelivery empty", func(ctx context.Context) error {
			_, err := admin.ReplayDelivery(ctx, req(&posv1.ReplayDeliveryRequest{}))
			return err
		}, connect.CodeInvalidArgument, "delivery_id"},
		{"ReplayDelivery not uuid", func(ctx context.Context) error {
			_, err := admin.ReplayDelivery(ctx, req(&posv1.ReplayDeliveryRequest{DeliveryId: "d-1"}))
			return err
		}, connect.CodeInvalidArgument, "delivery_id"},
		{"ReplayDelivery unknown", func(ctx context.Context) error {
			_, err := admin.ReplayDelivery(ctx, req(&posv1.ReplayDeliveryRequest{DeliveryId: "{0190a0b0-0000-7000-8000-000000000001}"}))
			return err
		}, connect.CodeNotFound, "0190a0b0"},
		{"SetStoreSettings nil", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{}))
			return err
		}, connect.CodeInvalidArgument, "settings.store_id"},
		{"SetStoreSettings escalate 0", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: durationpb.New(0)}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"SetStoreSettings escalate negative", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: durationpb.New(-time.Hour)}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"SetStoreSettings escalate 25h", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: durationpb.New(25 * time.Hour)}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"SetStoreSettings escalate invalid nanos", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: &durationpb.Duration{Seconds: 60, Nanos: -1}}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"SetStoreSettings escalate MaxInt64 seconds", func(ctx context.Context) error {
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: &durationpb.Duration{Seconds: math.MaxInt64}}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"SetStoreSettings escalate min seconds (wraps)", func(ctx context.Context) error {
			// -9223372037 s is -2^63 ns less a bit: AsDuration saturates.
			_, err := admin.SetStoreSettings(ctx, req(&posv1.SetStoreSettingsRequest{Settings: &posv1.StoreSettings{StoreId: "st-1", EscalateAfter: &durationpb.Duration{Seconds: 315576000000}}}))
			return err
		}, connect.CodeInvalidArgument, "settings.escalate_after"},
		{"GetStoreSettings empty", func(ctx context.Context) error {
			_, err := admin.GetStoreSettings(ctx, req(&posv1.GetStoreSettingsRequest{}))
			return err
		}, connect.CodeInvalidArgument, "store_id"},
	}
	refuseEach(t, adminCases)

	if after := snapshot(); after != before {
		t.Errorf("refused requests changed state:\nbefore %s\nafter  %s", before, after)
	}
	_ = auth.RoleAdmin
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
