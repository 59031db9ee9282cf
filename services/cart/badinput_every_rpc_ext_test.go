package cart_test

// DESIGN.md invariant 7 (bad input gets a clear error naming the field, and changes nothing),
// every field of every RPC of CartService (the checks made before any other service is asked).

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

func TestEveryCartRPCRefusesBadInputNamingTheField(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	sku2, _ := e.sku(1)
	c := e.addLine("c1", e.newCart("c1").GetId(), sku, 1)
	lineID := c.GetLines()[0].GetLineId()
	ctx := e.as("c1")
	long := strings.Repeat("x", 100_000)
	id := c.GetId()

	tests := []testenv.Refusal{
		{Name: "CreateCart 101 lines", Do: func() error {
			var ls []*cartv1.NewCartLine
			for range 101 {
				ls = append(ls, &cartv1.NewCartLine{Sku: sku, Quantity: 1})
			}
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: ls})
			return err
		}, Code: codes.InvalidArgument, Field: "lines"},
		{Name: "CreateCart quantity 0", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku}}})
			return err
		}, Code: codes.InvalidArgument, Field: "lines[0].quantity"},
		{Name: "CreateCart quantity MinInt32", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 1}, {Sku: sku2, Quantity: math.MinInt32}}})
			return err
		}, Code: codes.InvalidArgument, Field: "lines[1].quantity"},
		{Name: "CreateCart same sku twice past 99", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: sku, Quantity: 60}, {Sku: sku, Quantity: 60}}})
			return err
		}, Code: codes.InvalidArgument, Field: "lines[1]"},
		{Name: "CreateCart empty sku", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Quantity: 1}}})
			return err
		}, Code: codes.InvalidArgument, Field: "lines[0].sku"},
		{Name: "CreateCart unknown sku", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: "NO-SUCH-SKU", Quantity: 1}}})
			return err
		}, Code: 0, Field: "lines[0]"},
		{Name: "CreateCart sku 100k", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: long, Quantity: 1}}})
			return err
		}, Code: codes.InvalidArgument, Field: "lines[0].sku"},
		{Name: "CreateCart pickup NaN", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
				Location: &commonv1.LatLng{Latitude: math.NaN()}}}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.nearest.location.latitude"},
		{Name: "CreateCart pickup Inf radius", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
				Location: &commonv1.LatLng{}, RadiusMeters: math.Inf(1)}}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.nearest.radius_meters"},
		{Name: "CreateCart pickup no choice", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Pickup: &cartv1.Pickup{StoreName: "x"}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup"},
		{Name: "CreateCart pickup bad store id", Do: func() error {
			_, err := e.client.CreateCart(ctx, &cartv1.CreateCartRequest{Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: "Bad Store"}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.store_id"},
		{Name: "GetCart empty", Do: func() error { _, err := e.client.GetCart(ctx, &cartv1.GetCartRequest{}); return err }, Code: codes.InvalidArgument, Field: "cart_id"},
		{Name: "GetCart 100k", Do: func() error { _, err := e.client.GetCart(ctx, &cartv1.GetCartRequest{CartId: long}); return err }, Code: 0, Field: "cart"},
		{Name: "GetCart someone else's", Do: func() error { _, err := e.client.GetCart(e.as("c2"), &cartv1.GetCartRequest{CartId: id}); return err }, Code: codes.NotFound, Field: "cart"},
		{Name: "AddLine quantity 100", Do: func() error {
			_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku2, Quantity: 100})
			return err
		}, Code: codes.InvalidArgument, Field: "quantity"},
		{Name: "AddLine same sku past 99", Do: func() error {
			_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku, Quantity: 99})
			return err
		}, Code: codes.InvalidArgument, Field: "quantity"},
		{Name: "AddLine expected_version -1", Do: func() error {
			_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku2, Quantity: 1, ExpectedVersion: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "AddLine stale version", Do: func() error {
			_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku2, Quantity: 1, ExpectedVersion: 999})
			return err
		}, Code: codes.Aborted, Field: "expected_version"},
		{Name: "AddLine lowercase sku", Do: func() error {
			_, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: "latte", Quantity: 1})
			return err
		}, Code: 0, Field: "sku"},
		{Name: "UpdateLine quantity -1", Do: func() error {
			_, err := e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: id, LineId: lineID, Quantity: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "quantity"},
		{Name: "UpdateLine quantity 0", Do: func() error {
			_, err := e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: id, LineId: lineID, Quantity: 0})
			return err
		}, Code: codes.InvalidArgument, Field: "quantity"},
		{Name: "UpdateLine unknown line", Do: func() error {
			_, err := e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: id, LineId: "nope", Quantity: 2})
			return err
		}, Code: codes.NotFound, Field: "nope"},
		{Name: "UpdateLine empty line", Do: func() error {
			_, err := e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: id, Quantity: 2})
			return err
		}, Code: codes.InvalidArgument, Field: "line_id"},
		{Name: "RemoveLine empty line", Do: func() error {
			_, err := e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: id})
			return err
		}, Code: codes.InvalidArgument, Field: "line_id"},
		{Name: "RemoveLine 100k line", Do: func() error {
			_, err := e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: id, LineId: long})
			return err
		}, Code: 0, Field: "line"},
		{Name: "ClearCart version -1", Do: func() error {
			_, err := e.client.ClearCart(ctx, &cartv1.ClearCartRequest{CartId: id, ExpectedVersion: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "SetPickup nil", Do: func() error {
			_, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup"},
		{Name: "SetPickup empty store", Do: func() error {
			_, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.store_id"},
		{Name: "SetPickup nearest no location", Do: func() error {
			_, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{}}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.nearest.location"},
		{Name: "SetPickup radius -1", Do: func() error {
			_, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
				Location: &commonv1.LatLng{}, RadiusMeters: -1}}}})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup.nearest.radius_meters"},
		{Name: "Checkout no key", Do: func() error { _, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id}); return err }, Code: codes.InvalidArgument, Field: "idempotency_key"},
		{Name: "Checkout blank key", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: strings.Repeat(" ", 20)})
			return err
		}, Code: codes.InvalidArgument, Field: "idempotency_key"},
		{Name: "Checkout key 100k", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: long})
			return err
		}, Code: codes.InvalidArgument, Field: "idempotency_key"},
		{Name: "Checkout note long", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", CustomerNote: long})
			return err
		}, Code: codes.InvalidArgument, Field: "customer_note"},
		{Name: "Checkout pickup name long", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", PickupName: strings.Repeat("n", 65)})
			return err
		}, Code: codes.InvalidArgument, Field: "pickup_name"},
		{Name: "Checkout bad email", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", Email: "not-an-email"})
			return err
		}, Code: codes.InvalidArgument, Field: "email"},
		{Name: "Checkout subtotal negative", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", ExpectedSubtotal: &commonv1.Money{AmountMinor: -1, CurrencyCode: "USD"}})
			return err
		}, Code: codes.InvalidArgument, Field: "expected_subtotal.amount_minor"},
		{Name: "Checkout subtotal other currency", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", ExpectedSubtotal: &commonv1.Money{AmountMinor: 1, CurrencyCode: "EUR"}})
			return err
		}, Code: codes.InvalidArgument, Field: "expected_subtotal.currency_code"},
		{Name: "Checkout version -1", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000001", ExpectedVersion: -1})
			return err
		}, Code: codes.InvalidArgument, Field: "expected_version"},
		{Name: "Checkout without pickup", Do: func() error {
			_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "key-audit-000002"})
			return err
		}, Code: codes.FailedPrecondition, Field: "pickup"},
	}
	snap := func() string {
		var s string
		if err := e.pool.QueryRow(t.Context(), `SELECT format('%s carts, v%s', count(*), sum(version)) FROM carts`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snap()
	testenv.RefusedEach(t, tests)
	if after := snap(); after != before {
		t.Errorf("refused requests changed carts:\nbefore %s\nafter  %s", before, after)
	}
}
