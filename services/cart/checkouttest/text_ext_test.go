package checkout_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

// Text Postgres cannot store (a NUL) in any field the shopper sends is refused as
// InvalidArgument naming the field (DESIGN invariant 7), never Internal or Unknown, and changes
// nothing: the cart is left open, unleased, and takes an edit at once. The server here has none
// of the stack's interceptors (internal/grpcserver), so the cart must check for itself.
func TestANULInAnyFieldIsRefusedNamingItAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	c := e.filledCart("alice", 1, skus...)
	ctx := e.as("alice")
	lineID := c.GetLines()[0].GetLineId()
	check := func(call, field string, err error) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), field) {
			t.Errorf("%s with a NUL in %s: %v %q; want InvalidArgument naming %s", call, field, st.Code(), st.Message(), field)
		}
	}
	_, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: "ab\x00cd", Quantity: 1})
	check("AddLine", "sku", err)
	_, err = e.carts.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: "ab\x00cd", Quantity: 1}}})
	check("CreateCart", "lines[0].sku", err)
	_, err = e.carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: "st\x00re"}}})
	check("SetPickup", "pickup.store_id", err)
	_, err = e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: "ca\x00rt"})
	check("GetCart", "cart_id", err)
	_, err = e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: "ca\x00rt", Sku: skus[0], Quantity: 1})
	check("AddLine", "cart_id", err)
	_, err = e.carts.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: "li\x00ne", Quantity: 2})
	check("UpdateLine", "line_id", err)
	_, err = e.carts.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: lineID + "\x00"})
	check("RemoveLine", "line_id", err)
	_, err = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key\x00key\x00key"})
	check("Checkout", "idempotency_key", err)
	_, err = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "note-nul-1", CustomerNote: "no\x00te"})
	check("Checkout", "customer_note", err)

	// Nothing changed: the cart is open, unleased, at its version, and takes an edit at once.
	got, err := e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCart().GetVersion() != c.GetVersion() || len(got.GetCart().GetLines()) != 1 || got.GetCart().GetLines()[0].GetQuantity() != 1 {
		t.Fatalf("the cart after the refusals: version %d, lines %v; want version %d with its one line as it was", got.GetCart().GetVersion(), got.GetCart().GetLines(), c.GetVersion())
	}
	if _, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skus[0], Quantity: 1}); err != nil {
		t.Fatalf("the cart after the refusals: %v", err)
	}
}

// An idempotency key is counted in characters, as the API says ("8-128 characters") and as
// fulfilment counts it: 128 characters of two bytes each are accepted, 129 refused naming it.
func TestAnIdempotencyKeyIsCountedInCharactersNotBytes(t *testing.T) {
	e := newEnv(t)
	skus := e.skus(1)
	ctx := e.as("alice")
	c := e.filledCart("alice", 1, skus...)
	_, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: strings.Repeat("é", 129)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "idempotency_key") {
		t.Fatalf("checkout with a key of 129 characters: %v; want InvalidArgument naming idempotency_key", err)
	}
	if _, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: strings.Repeat("é", 128)}); err != nil {
		t.Fatalf("checkout with a key of 128 characters (256 bytes): %v", err)
	}
	c2 := e.filledCart("alice", 1, skus...)
	if _, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c2.GetId(), IdempotencyKey: "ééééééé"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("checkout with a key of 7 characters (14 bytes): %v; want InvalidArgument", err)
	}
}
