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

// Clip cuts between characters and leaves nothing Postgres refuses (invalid UTF-8, NUL).
func TestClipKeepsTextPostgresCanStore(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"ab中", 4, "ab"}, // 中 is 3 bytes: a cut at 4 would split it
		{"ab中", 5, "ab中"},
		{"a\x00b", 10, "a\uFFFDb"},
		{"a\xe4\xb8b", 10, "a\uFFFDb"},
		{"中中", 1, ""},
	} {
		got := pgtext.Clip(c.in, c.n)
		if got != c.want || len(got) > c.n || strings.ContainsRune(got, 0) {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
