package utf8field_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/utf8field"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// FuzzOf (Handoff's request messages, which have no maps): whenever protobuf refuses wire bytes for invalid UTF-8, Of names a field (the
// caller then hears which), and never panics or names one on another failure.
func FuzzOf(f *testing.F) {
	seed := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return []byte(strings.ReplaceAll(string(b), "@@", "\xff\xfe"))
	}
	f.Add(uint8(0), seed(&fulfilmentv1.PlaceOrderRequest{IdempotencyKey: "k", PickupName: "Al@@"}))
	f.Add(uint8(0), seed(&fulfilmentv1.PlaceOrderRequest{Lines: []*fulfilmentv1.PlaceOrderLine{{LineId: "l", UnitPrice: &commonv1.Money{CurrencyCode: "U@@"}}}}))
	f.Add(uint8(1), seed(&cartv1.CreateCartRequest{}))
	f.Add(uint8(2), seed(&inventoryv1.CreateStoreRequest{Store: &inventoryv1.Store{Name: "x@@", OpeningHours: []*inventoryv1.OpeningHours{{OpenTime: "0@@"}}}}))
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		var m proto.Message
		switch which % 3 {
		case 0:
			m = &fulfilmentv1.PlaceOrderRequest{}
		case 1:
			m = &cartv1.CreateCartRequest{}
		default:
			m = &inventoryv1.CreateStoreRequest{}
		}
		err := proto.Unmarshal(b, m)
		path, ok := utf8field.Of(b, m.ProtoReflect().Descriptor(), err)
		var bad interface{ InvalidUTF8() bool }
		isUTF8 := err != nil && errors.As(err, &bad) && bad.InvalidUTF8()
		if ok && !isUTF8 {
			t.Fatalf("%T %x: Of named %q for %v", m, b, path, err)
		}
		if isUTF8 && !ok {
			t.Fatalf("%T %x: protobuf refused invalid UTF-8 (%v), but Of names no field", m, b, err)
		}
		if ok && (path == "" || !utf8.ValidString(path)) {
			t.Fatalf("%T %x: Of named %q", m, b, path)
		}
	})
}
