package utf8field_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/handoff-dev/handoff/internal/utf8field"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// bad is m in the wire format with every "@@" in its strings made two bytes that are not
// UTF-8: the lengths stay as they were, so only the text is wrong.
func bad(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte("@@"), []byte{0xff, 0xfe})
}

// The field refused for invalid UTF-8 is named at any depth, in lists and maps, as pgtext
// names one holding a NUL.
func TestTheFieldThatIsNotUTF8IsNamed(t *testing.T) {
	line := func(sku string) *fulfilmentv1.PlaceOrderLine {
		return &fulfilmentv1.PlaceOrderLine{LineId: "l", Sku: sku, UnitPrice: &commonv1.Money{CurrencyCode: "USD"}}
	}
	for _, c := range []struct {
		name  string
		m     proto.Message
		field string
	}{
		{"top level", &fulfilmentv1.PlaceOrderRequest{IdempotencyKey: "k", PickupName: "Al@@"}, "pickup_name"},
		{"in a list", &fulfilmentv1.PlaceOrderRequest{Lines: []*fulfilmentv1.PlaceOrderLine{line("A"), line("B"), line("C@@")}}, "lines[2].sku"},
		{"nested", &fulfilmentv1.PlaceOrderRequest{Lines: []*fulfilmentv1.PlaceOrderLine{
			{LineId: "l", UnitPrice: &commonv1.Money{CurrencyCode: "U@@"}}}}, "lines[0].unit_price.currency_code"},
		{"map value", &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("v@@")}}, `fields["k"].string_value`},
		{"map value in a list", &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewListValue(&structpb.ListValue{
			Values: []*structpb.Value{structpb.NewStringValue("ok"), structpb.NewStringValue("@@")}})}}, `fields["k"].list_value.values[1].string_value`},
		{"map key", &structpb.Struct{Fields: map[string]*structpb.Value{"k@@": structpb.NewNullValue()}}, "fields"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bad(t, c.m)
			fresh := c.m.ProtoReflect().Type().New().Interface()
			err := proto.Unmarshal(b, fresh)
			if err == nil {
				t.Fatal("the message decoded; want it refused for invalid UTF-8")
			}
			if path, ok := utf8field.Of(b, fresh.ProtoReflect().Descriptor(), err); !ok || path != c.field {
				t.Fatalf("Of = %q, %v; want %q", path, ok, c.field)
			}
		})
	}
}

// Only the invalid UTF-8 failure is explained: a message malformed otherwise names no field.
func TestOtherFailuresNameNoField(t *testing.T) {
	garbage := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f} // field 1, length past the end
	var m fulfilmentv1.GetOrderRequest
	err := proto.Unmarshal(garbage, &m)
	if err == nil {
		t.Fatal("garbage decoded")
	}
	if path, ok := utf8field.Of(garbage, m.ProtoReflect().Descriptor(), err); ok {
		t.Fatalf("Of named %q for a truncated message", path)
	}
}
