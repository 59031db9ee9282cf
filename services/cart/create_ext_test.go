package cart_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
)

func TestCreateCartWithLinesAndPickupIsTheCartAddLineAndSetPickupWouldMake(t *testing.T) {
	e := newEnv(t)
	skuA, priceA := e.sku(0)
	skuB, priceB := e.sku(3)
	pickup := nearest(47.6062, -122.3321, 3000)

	res, err := e.client.CreateCart(e.as("alice"), &cartv1.CreateCartRequest{
		Lines:  []*cartv1.NewCartLine{{Sku: skuA, Quantity: 2}, {Sku: skuB, Quantity: 1}, {Sku: skuA, Quantity: 3}},
		Pickup: pickup,
	})
	if err != nil {
		t.Fatalf("CreateCart with lines: %v", err)
	}
	got := res.GetCart()

	// The same cart made one change at a time.
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), skuA, 2)
	e.addLine("alice", c.GetId(), skuB, 1)
	e.addLine("alice", c.GetId(), skuA, 3)
	if _, err := e.client.SetPickup(e.as("alice"), &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: pickup}); err != nil {
		t.Fatal(err)
	}
	want := e.get("alice", c.GetId())

	if got.GetVersion() != 1 {
		t.Fatalf("a cart made in one call is at version %d, want 1", got.GetVersion())
	}
	if want := 5*priceA + priceB; got.GetSubtotal().GetAmountMinor() != want {
		t.Fatalf("subtotal = %v, want %d", got.GetSubtotal(), want)
	}
	// Alike but for what names the cart, its lines and its writes.
	if a, b := unnamed(want), unnamed(got); !proto.Equal(a, b) {
		t.Fatalf("the cart made in one call differs from one made change by change:\n one call       %v\n change by change %v", b, a)
	}
	// What it answered is what it stored.
	if stored := e.get("alice", got.GetId()); !proto.Equal(stored, got) {
		t.Fatalf("stored cart differs from CreateCart's answer:\n stored %v\n answer %v", stored, got)
	}
}

func TestCreateCartRefusesBadLinesOrPickupAndMakesNoCart(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	other, _ := e.sku(1)
	tooMany := make([]*cartv1.NewCartLine, 101)
	for i := range tooMany {
		tooMany[i] = &cartv1.NewCartLine{Sku: fmt.Sprintf("SKU-%d", i), Quantity: 1}
	}
	for _, bad := range []struct {
		what      string
		req       *cartv1.CreateCartRequest
		code      codes.Code
		fragments []string
	}{
		{"a line without a sku", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Quantity: 1}}},
			codes.InvalidArgument, []string{"lines[1].sku"}},
		{"no units", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku}}},
			codes.InvalidArgument, []string{"lines[0].quantity"}},
		{"100 units", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Sku: other, Quantity: 100}}},
			codes.InvalidArgument, []string{"lines[1].quantity"}},
		{"a sku given twice, over 99 together", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 60}, {Sku: other, Quantity: 1}, {Sku: sku, Quantity: 40}}},
			codes.InvalidArgument, []string{"lines[2].quantity", "99"}},
		{"101 different skus", &cartv1.CreateCartRequest{Lines: tooMany},
			codes.InvalidArgument, []string{"lines", "100"}},
		{"101 entries of one sku", &cartv1.CreateCartRequest{Lines: sameSKU(sku, 101)},
			codes.InvalidArgument, []string{"lines", "at most 100 lines, got 101"}},
		{"a sku longer than the catalog gives any, of two megabytes", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Sku: strings.Repeat("X", 2<<20), Quantity: 1}}},
			codes.InvalidArgument, []string{"lines[1].sku", "at most 64"}},
		{"an unknown sku", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Sku: "NO-SUCH-SKU", Quantity: 1}}},
			codes.NotFound, []string{"lines[1].sku", "NO-SUCH-SKU"}},
		{"a pickup point off the globe", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}}, Pickup: nearest(91, 0, 0)},
			codes.InvalidArgument, []string{"pickup.nearest.location.latitude"}},
		{"a pickup that chooses nothing", &cartv1.CreateCartRequest{Pickup: &cartv1.Pickup{}},
			codes.InvalidArgument, []string{"pickup"}},
	} {
		_, err := e.client.CreateCart(e.as("alice"), bad.req)
		wantCode(t, bad.what, err, bad.code, bad.fragments...)
	}
	var carts int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM carts WHERE customer_id = 'alice'`).Scan(&carts); err != nil {
		t.Fatal(err)
	}
	if carts != 0 {
		t.Fatalf("refused CreateCart calls made %d carts, want none", carts)
	}
}

// unnamed is c without its id, version, times and line ids.
func unnamed(c *cartv1.Cart) *cartv1.Cart {
	c = proto.CloneOf(c)
	c.Id, c.Version, c.CreateTime, c.UpdateTime = "", 0, nil, nil
	for _, l := range c.GetLines() {
		l.LineId = ""
	}
	return c
}

// sameSKU is n entries of one unit of sku.
func sameSKU(sku string, n int) []*cartv1.NewCartLine {
	out := make([]*cartv1.NewCartLine, n)
	for i := range out {
		out[i] = &cartv1.NewCartLine{Sku: sku, Quantity: 1}
	}
	return out
}
