package cart_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/catalog"
)

// Invalid UTF-8 cannot come over the wire (protobuf refuses to decode it), but an in-process
// caller of the service can pass it. Each field the cart stores or passes on is refused as
// InvalidArgument naming it, before anything is asked or written; the cart is left as it was.
func TestInvalidUTF8InAnyFieldIsRefusedNamingIt(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	if _, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		t.Fatal(err)
	}
	before := e.get("alice", c.GetId())
	const bad = "ab\xffcd"

	_, err := e.cart.GetCart(ctx, "alice", bad)
	wantCode(t, "GetCart", err, codes.InvalidArgument, "cart_id")
	_, err = e.cart.AddLine(ctx, "alice", &cartv1.AddLineRequest{CartId: bad, Sku: sku, Quantity: 1})
	wantCode(t, "AddLine", err, codes.InvalidArgument, "cart_id")
	_, err = e.cart.AddLine(ctx, "alice", &cartv1.AddLineRequest{CartId: c.GetId(), Sku: bad, Quantity: 1})
	wantCode(t, "AddLine", err, codes.InvalidArgument, "sku")
	_, err = e.cart.CreateCart(ctx, "alice", &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Sku: bad, Quantity: 1}}})
	wantCode(t, "CreateCart", err, codes.InvalidArgument, "lines[1].sku")
	_, err = e.cart.UpdateLine(ctx, "alice", &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: bad, Quantity: 2})
	wantCode(t, "UpdateLine", err, codes.InvalidArgument, "line_id")
	_, err = e.cart.RemoveLine(ctx, "alice", &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: bad})
	wantCode(t, "RemoveLine", err, codes.InvalidArgument, "line_id")
	_, err = e.cart.ClearCart(ctx, "alice", &cartv1.ClearCartRequest{CartId: bad})
	wantCode(t, "ClearCart", err, codes.InvalidArgument, "cart_id")
	_, err = e.cart.SetPickup(ctx, "alice", &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: bad}}})
	wantCode(t, "SetPickup", err, codes.InvalidArgument, "pickup.store_id")
	_, _, err = e.cart.Checkout(ctx, "alice", &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-" + bad})
	wantCode(t, "Checkout", err, codes.InvalidArgument, "idempotency_key")
	_, _, err = e.cart.Checkout(ctx, "alice", &cartv1.CheckoutRequest{CartId: bad, IdempotencyKey: "key-utf8-1"})
	wantCode(t, "Checkout", err, codes.InvalidArgument, "cart_id")

	wantUnchanged(t, e, "alice", before)
}

// What an owner refuses as bad input, of what the cart passed on from the request, is the
// caller's bad input: InvalidArgument naming the request's own field, never Internal. (The cart
// checks what it foresees up front; this is the backstop for the rest.)
func TestAnOwnersRefusalOfTheRequestsTextNamesTheCartsField(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	ctx := e.as("alice")
	before := e.get("alice", c.GetId())
	if err := e.catRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	e.serveNATS("catalog", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, catalog.SubjectBatchGetVariants, func(context.Context, *catalogv1.BatchGetVariantsRequest) (*catalogv1.BatchGetVariantsResponse, error) {
			return nil, rpcerr.Invalid("skus[0]", "is not a SKU this catalog can read")
		})
	})
	e.serveNATS("inventory", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("inventory", "get_store"), func(context.Context, *inventoryv1.GetStoreRequest) (*inventoryv1.GetStoreResponse, error) {
			return nil, rpcerr.Invalid("store_id", "is not a store id this inventory can read")
		})
	})
	_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: "sku-the-catalog-refuses", Quantity: 1})
	wantCode(t, "AddLine of a SKU the catalog refuses", err, codes.InvalidArgument, "sku:", "catalog")
	_, err = e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: "sku-the-catalog-refuses", Quantity: 1}}})
	wantCode(t, "CreateCart with a SKU the catalog refuses", err, codes.InvalidArgument, "lines:", "catalog")
	_, err = e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: "store-inventory-refuses"}}})
	wantCode(t, "SetPickup of a store id inventory refuses", err, codes.InvalidArgument, "pickup.store_id:", "inventory")
	wantUnchanged(t, e, "alice", before)
}
