package pgtext_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/handoff-dev/handoff/internal/pgtext"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

func TestNULIsRefusedNamingTheFieldAtAnyDepth(t *testing.T) {
	line := func(sku string) *fulfilmentv1.PlaceOrderLine {
		return &fulfilmentv1.PlaceOrderLine{LineId: "l", Sku: sku, UnitPrice: &commonv1.Money{CurrencyCode: "USD"}}
	}
	for _, c := range []struct {
		name  string
		m     proto.Message
		field string // "" when nothing is wrong
	}{
		{"clean", &fulfilmentv1.PlaceOrderRequest{PickupName: "Zoë", Lines: []*fulfilmentv1.PlaceOrderLine{line("LATTE-16")}}, ""},
		{"top level", &fulfilmentv1.PlaceOrderRequest{PickupName: "Al\x00"}, "pickup_name"},
		{"in a list", &fulfilmentv1.PlaceOrderRequest{Lines: []*fulfilmentv1.PlaceOrderLine{line("A"), line("B\x00")}}, "lines[1].sku"},
		{"nested", &fulfilmentv1.PlaceOrderRequest{Lines: []*fulfilmentv1.PlaceOrderLine{
			{UnitPrice: &commonv1.Money{CurrencyCode: "US\x00"}}}}, "lines[0].unit_price.currency_code"},
		{"map value", &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("\x00")}}, `fields["k"].string_value`},
		{"map key", &structpb.Struct{Fields: map[string]*structpb.Value{"k\x00": structpb.NewNullValue()}}, "fields"},
		{"nil", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := pgtext.Check(c.m)
			if c.field == "" {
				if err != nil {
					t.Fatalf("Check = %v; want nil", err)
				}
				return
			}
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), c.field+":") {
				t.Fatalf("Check = %v; want InvalidArgument naming %s", err, c.field)
			}
		})
	}
}
