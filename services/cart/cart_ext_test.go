package cart_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// wantCode fails unless err has code and its message contains every fragment.
func wantCode(t *testing.T, what string, err error, code codes.Code, fragments ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(status.Convert(err).Message(), f) {
			t.Fatalf("%s: message %q does not name %q", what, status.Convert(err).Message(), f)
		}
	}
}

// wantUnchanged fails unless the cart reads exactly as before.
func wantUnchanged(t *testing.T, e *env, customer string, before *cartv1.Cart) {
	t.Helper()
	if after := e.get(customer, before.GetId()); !proto.Equal(after, before) {
		t.Fatalf("a refused change altered the cart:\n before %v\n after  %v", before, after)
	}
}

func TestCustomerCannotReadOrChangeAnotherCustomersCart(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	mine := e.newCart("alice")
	mine = e.addLine("alice", mine.GetId(), sku, 2)
	lineID := mine.GetLines()[0].GetLineId()

	bob := e.as("bob")
	_, err := e.client.GetCart(bob, &cartv1.GetCartRequest{CartId: mine.GetId()})
	wantCode(t, "bob reads alice's cart", err, codes.NotFound, mine.GetId())
	_, err = e.client.AddLine(bob, &cartv1.AddLineRequest{CartId: mine.GetId(), Sku: sku, Quantity: 1})
	wantCode(t, "bob adds to alice's cart", err, codes.NotFound)
	_, err = e.client.UpdateLine(bob, &cartv1.UpdateLineRequest{CartId: mine.GetId(), LineId: lineID, Quantity: 5})
	wantCode(t, "bob updates alice's line", err, codes.NotFound)
	_, err = e.client.RemoveLine(bob, &cartv1.RemoveLineRequest{CartId: mine.GetId(), LineId: lineID})
	wantCode(t, "bob removes alice's line", err, codes.NotFound)
	_, err = e.client.ClearCart(bob, &cartv1.ClearCartRequest{CartId: mine.GetId()})
	wantCode(t, "bob clears alice's cart", err, codes.NotFound)
	_, err = e.client.SetPickup(bob, &cartv1.SetPickupRequest{CartId: mine.GetId(), Pickup: nearest(47.61, -122.33, 0)})
	wantCode(t, "bob sets alice's pickup", err, codes.NotFound)
	_, err = e.client.Checkout(bob, &cartv1.CheckoutRequest{CartId: mine.GetId(), IdempotencyKey: "bob-key-000001"})
	wantCode(t, "bob checks out alice's cart", err, codes.NotFound)
	// Not found reads the same as a cart that never existed: nothing tells bob it is there.
	_, errMissing := e.client.GetCart(bob, &cartv1.GetCartRequest{CartId: "no-such-cart"})
	wantCode(t, "bob reads a missing cart", errMissing, codes.NotFound)

	_, err = e.client.GetCart(t.Context(), &cartv1.GetCartRequest{CartId: mine.GetId()})
	wantCode(t, "anonymous read", err, codes.Unauthenticated)
	_, err = e.client.CreateCart(t.Context(), &cartv1.CreateCartRequest{})
	wantCode(t, "anonymous create", err, codes.Unauthenticated)

	if got := e.get("alice", mine.GetId()); !proto.Equal(got, mine) {
		t.Fatalf("alice's cart changed after bob's attempts:\n before %v\n after  %v", mine, got)
	}
}

func TestLinesArePricedByTheCatalogWithLineAndCartTotalsInMinorUnits(t *testing.T) {
	e := newEnv(t)
	skuA, priceA := e.sku(0)
	skuB, priceB := e.sku(3)
	c := e.newCart("alice")
	if c.GetState() != cartv1.CartState_CART_STATE_OPEN || c.GetVersion() != 1 || c.GetCustomerId() != "alice" ||
		c.GetSubtotal().GetAmountMinor() != 0 || c.GetSubtotal().GetCurrencyCode() != "USD" {
		t.Fatalf("new cart = %v; want open, version 1, alice's, 0 USD", c)
	}
	e.addLine("alice", c.GetId(), skuA, 3)
	c = e.addLine("alice", c.GetId(), skuB, 1)

	if len(c.GetLines()) != 2 || c.GetLines()[0].GetSku() != skuA || c.GetLines()[1].GetSku() != skuB {
		t.Fatalf("lines = %v; want %s then %s", c.GetLines(), skuA, skuB)
	}
	a := c.GetLines()[0]
	if a.GetUnitPrice().GetAmountMinor() != priceA || a.GetLineTotal().GetAmountMinor() != 3*priceA || a.GetLineTotal().GetCurrencyCode() != "USD" {
		t.Fatalf("line %s = %v; want unit %d, total %d USD", skuA, a, priceA, 3*priceA)
	}
	if a.GetProductName() == "" || a.GetVariantName() == "" || a.GetProductId() != e.productOf(skuA) {
		t.Fatalf("line %s lacks its catalog names: %v", skuA, a)
	}
	if a.GetAvailableAtStore() != -1 {
		t.Fatalf("available_at_store with no store chosen = %d, want -1", a.GetAvailableAtStore())
	}
	if want := 3*priceA + priceB; c.GetSubtotal().GetAmountMinor() != want || c.GetSubtotal().GetCurrencyCode() != "USD" {
		t.Fatalf("subtotal = %v, want %d USD", c.GetSubtotal(), want)
	}
	if c.GetVersion() != 3 {
		t.Fatalf("version after two changes = %d, want 3", c.GetVersion())
	}
}

func TestAddingAnExistingSKURaisesItsLineUpTo99AndNoFurther(t *testing.T) {
	e := newEnv(t)
	sku, price := e.sku(1)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 60)
	c = e.addLine("alice", c.GetId(), sku, 39)
	if len(c.GetLines()) != 1 || c.GetLines()[0].GetQuantity() != 99 || c.GetSubtotal().GetAmountMinor() != 99*price {
		t.Fatalf("cart = %v; want one line of 99", c.GetLines())
	}
	_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
	wantCode(t, "adding the 100th", err, codes.InvalidArgument, "quantity", "99")
	wantUnchanged(t, e, "alice", c)
}

func TestQuantityOutside1To99IsInvalidArgumentNamingQuantity(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	c = e.addLine("alice", c.GetId(), sku, 1)
	for _, q := range []int32{0, -1, 100} {
		_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: q})
		wantCode(t, fmt.Sprintf("AddLine quantity %d", q), err, codes.InvalidArgument, "quantity")
		_, err = e.client.UpdateLine(e.as("alice"), &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: c.GetLines()[0].GetLineId(), Quantity: q})
		wantCode(t, fmt.Sprintf("UpdateLine quantity %d", q), err, codes.InvalidArgument, "quantity")
	}
	wantUnchanged(t, e, "alice", c)
}

func TestUnknownOrArchivedSKUIsNotFoundNamingIt(t *testing.T) {
	e := newEnv(t)
	keep, _ := e.sku(0)
	archived, _ := e.sku(5)
	c := e.newCart("alice")
	c = e.addLine("alice", c.GetId(), archived, 1)
	c = e.addLine("alice", c.GetId(), keep, 1)

	_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: "NO-SUCH-SKU", Quantity: 1})
	wantCode(t, "unknown sku", err, codes.NotFound, "NO-SUCH-SKU")
	// A SKU longer than any the catalog gives is refused as such, not sent to be looked up (one
	// of megabytes would not fit the catalog's request, and the caller would be told to retry).
	_, err = e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: strings.Repeat("X", 2<<20), Quantity: 1})
	wantCode(t, "a sku of two megabytes", err, codes.InvalidArgument, "sku", "at most 64")

	if _, err := e.catalogAdmin.ArchiveProduct(t.Context(), &catalogv1.ArchiveProductRequest{ProductId: e.productOf(archived)}); err != nil {
		t.Fatal(err)
	}
	// The catalog's event reaches the cart promptly (its cache would keep the SKU for an hour
	// here). The probe names a stale expected_version: until the SKU is refused it is Aborted
	// and changes nothing.
	testenv.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: archived, Quantity: 1, ExpectedVersion: 1})
		if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), archived) {
			return fmt.Errorf("AddLine of the archived sku = %v; want NotFound naming %s", err, archived)
		}
		return nil
	})

	// The cart with the now-archived line still reads, with the line's last known price.
	got := e.get("alice", c.GetId())
	if !proto.Equal(got, c) {
		t.Fatalf("cart after archiving one of its products:\n got  %v\n want %v", got, c)
	}
}

func TestGetCartShowsTodaysCatalogPricePromptlyAfterAnAdminChange(t *testing.T) {
	e := newEnv(t) // cache TTL an hour: only the catalog's event can refresh the price
	sku, price := e.sku(2)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 2)
	if got := e.get("alice", c.GetId()); got.GetLines()[0].GetUnitPrice().GetAmountMinor() != price {
		t.Fatalf("before the change the cart shows %v, want %d", got.GetLines()[0].GetUnitPrice(), price)
	}

	p, err := e.catalog.GetProduct(t.Context(), e.productOf(sku))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range p.GetVariants() {
		if v.GetSku() == sku {
			v.Price = &commonv1.Money{AmountMinor: price + 100, CurrencyCode: "USD"}
		}
	}
	if _, err := e.catalogAdmin.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}}); err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	testenv.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		got := e.get("alice", c.GetId())
		if l := got.GetLines()[0]; l.GetUnitPrice().GetAmountMinor() != price+100 || got.GetSubtotal().GetAmountMinor() != 2*(price+100) {
			return fmt.Errorf("after a price change the cart shows %v, subtotal %v; want unit %d", l.GetUnitPrice(), got.GetSubtotal(), price+100)
		}
		return nil
	})
}

func TestStaleExpectedVersionIsAbortedNamingTheCurrentVersionAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	skuA, _ := e.sku(0)
	skuB, _ := e.sku(1)
	c := e.newCart("alice")
	c = e.addLine("alice", c.GetId(), skuA, 1) // version 2
	phone, laptop := c, c                      // both devices read version 2

	res, err := e.client.UpdateLine(e.as("alice"), &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: phone.GetLines()[0].GetLineId(), Quantity: 4, ExpectedVersion: phone.GetVersion()})
	if err != nil {
		t.Fatalf("phone's update: %v", err)
	}
	current := res.GetCart()
	if current.GetVersion() != 3 {
		t.Fatalf("version after the phone's update = %d, want 3", current.GetVersion())
	}

	ctx := e.as("alice")
	refusals := map[string]error{}
	_, refusals["AddLine"] = e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skuB, Quantity: 1, ExpectedVersion: laptop.GetVersion()})
	_, refusals["UpdateLine"] = e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: laptop.GetLines()[0].GetLineId(), Quantity: 9, ExpectedVersion: laptop.GetVersion()})
	_, refusals["RemoveLine"] = e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: laptop.GetLines()[0].GetLineId(), ExpectedVersion: laptop.GetVersion()})
	_, refusals["ClearCart"] = e.client.ClearCart(ctx, &cartv1.ClearCartRequest{CartId: c.GetId(), ExpectedVersion: laptop.GetVersion()})
	_, refusals["SetPickup"] = e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 5000), ExpectedVersion: laptop.GetVersion()})
	_, refusals["Checkout"] = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "laptop-checkout-1", ExpectedVersion: laptop.GetVersion()})
	for rpc, err := range refusals {
		wantCode(t, rpc+" with a stale version", err, codes.Aborted, "version 3")
	}
	wantUnchanged(t, e, "alice", current)

	// With the current version the laptop's change goes through.
	if _, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: skuB, Quantity: 1, ExpectedVersion: current.GetVersion()}); err != nil {
		t.Fatalf("AddLine at the current version: %v", err)
	}
}

func TestConcurrentWritesAtOneVersionLetExactlyOneThrough(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	const devices = 8
	var wg sync.WaitGroup
	errs := make([]error, devices)
	for i := range devices {
		sku, _ := e.sku(i)
		wg.Go(func() {
			_, errs[i] = e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1, ExpectedVersion: c.GetVersion()})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.Aborted:
		default:
			t.Fatalf("concurrent AddLine: %v; want OK or Aborted", err)
		}
	}
	got := e.get("alice", c.GetId())
	if ok != 1 || len(got.GetLines()) != 1 || got.GetVersion() != c.GetVersion()+1 {
		t.Fatalf("%d writes succeeded, cart has %d lines at version %d; want exactly one write, one line, version %d",
			ok, len(got.GetLines()), got.GetVersion(), c.GetVersion()+1)
	}

	// Without expected versions, concurrent adds of one SKU all count: none is lost.
	sku, _ := e.sku(0)
	c2 := e.newCart("alice")
	for range devices {
		wg.Go(func() {
			if _, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c2.GetId(), Sku: sku, Quantity: 2}); err != nil {
				t.Errorf("AddLine: %v", err)
			}
		})
	}
	wg.Wait()
	if got := e.get("alice", c2.GetId()); len(got.GetLines()) != 1 || got.GetLines()[0].GetQuantity() != 2*devices {
		t.Fatalf("after %d concurrent adds of 2: %v; want one line of %d", devices, got.GetLines(), 2*devices)
	}
}

func TestUpdateRemoveAndClearLines(t *testing.T) {
	e := newEnv(t)
	skuA, priceA := e.sku(0)
	skuB, priceB := e.sku(1)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), skuA, 1)
	c = e.addLine("alice", c.GetId(), skuB, 1)
	ctx := e.as("alice")

	res, err := e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: c.GetLines()[0].GetLineId(), Quantity: 7})
	if err != nil || res.GetCart().GetLines()[0].GetQuantity() != 7 || res.GetCart().GetSubtotal().GetAmountMinor() != 7*priceA+priceB {
		t.Fatalf("UpdateLine to 7 = %v, %v", res.GetCart(), err)
	}
	_, err = e.client.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: c.GetId(), LineId: "no-such-line", Quantity: 2})
	wantCode(t, "update of a missing line", err, codes.NotFound, "no-such-line")

	rm, err := e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: c.GetLines()[0].GetLineId()})
	if err != nil || len(rm.GetCart().GetLines()) != 1 || rm.GetCart().GetLines()[0].GetSku() != skuB {
		t.Fatalf("RemoveLine = %v, %v; want only %s left", rm.GetCart(), err, skuB)
	}
	_, err = e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: c.GetLines()[0].GetLineId()})
	wantCode(t, "removing a removed line", err, codes.NotFound)

	cl, err := e.client.ClearCart(ctx, &cartv1.ClearCartRequest{CartId: c.GetId()})
	if err != nil || len(cl.GetCart().GetLines()) != 0 || cl.GetCart().GetSubtotal().GetAmountMinor() != 0 {
		t.Fatalf("ClearCart = %v, %v; want no lines, 0 subtotal", cl.GetCart(), err)
	}
}

func nearest(lat, lng, radius float64) *cartv1.Pickup {
	return &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{
		Location: &commonv1.LatLng{Latitude: lat, Longitude: lng}, RadiusMeters: radius,
	}}}
}

func TestPickupNearestAPointIsValidatedAndKept(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	ctx := e.as("alice")
	for _, bad := range []struct {
		pickup *cartv1.Pickup
		field  string
	}{
		{nearest(91, 0, 0), "pickup.nearest.location.latitude"},
		{nearest(0, -181, 0), "pickup.nearest.location.longitude"},
		{nearest(47.6, -122.3, 100_001), "pickup.nearest.radius_meters"},
		{&cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{}}}, "pickup.nearest.location"},
		{&cartv1.Pickup{}, "pickup"},
		{&cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{}}, "pickup.store_id"},
	} {
		_, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: bad.pickup})
		wantCode(t, "SetPickup "+bad.field, err, codes.InvalidArgument, bad.field)
	}
	wantUnchanged(t, e, "alice", c)

	res, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6062, -122.3321, 3000)})
	if err != nil {
		t.Fatal(err)
	}
	n := e.get("alice", c.GetId()).GetPickup().GetNearest()
	if n.GetLocation().GetLatitude() != 47.6062 || n.GetLocation().GetLongitude() != -122.3321 || n.GetRadiusMeters() != 3000 {
		t.Fatalf("pickup = %v; want nearest (47.6062, -122.3321) within 3000 m", res.GetCart().GetPickup())
	}
}

func TestChoosingAStoreNeedsInventoryToKnowIt(t *testing.T) {
	// With no inventory service answering, a named store cannot be checked: the change is
	// refused as Unavailable (retryable) and the cart is left alone.
	e := newEnv(t)
	c := e.newCart("alice")
	_, err := e.client.SetPickup(e.as("alice"), &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: e.chain.Stores[0].ID}}})
	wantCode(t, "SetPickup without inventory", err, codes.Unavailable, "inventory")
	wantUnchanged(t, e, "alice", c)
}

func TestCheckoutRefusesBadInputBeforeTouchingTheCart(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	ctx := e.as("alice")
	for _, bad := range []struct {
		req   *cartv1.CheckoutRequest
		field string
	}{
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "short"}, "idempotency_key"},
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: strings.Repeat("k", 129)}, "idempotency_key"},
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: " \t      \n"}, "idempotency_key"},
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678", Email: "not an address"}, "email"},
		// Its bare address, amy b@example.com, is none: the order could not carry it.
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678", Email: `"amy b"@example.com`}, "email"},
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678", CustomerNote: strings.Repeat("n", 281)}, "customer_note"},
		{&cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678", PickupName: strings.Repeat("p", 65)}, "pickup_name"},
		{&cartv1.CheckoutRequest{IdempotencyKey: "key-12345678"}, "cart_id"},
	} {
		_, err := e.client.Checkout(ctx, bad.req)
		wantCode(t, "Checkout with bad "+bad.field, err, codes.InvalidArgument, bad.field)
	}
	_, err := e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678"})
	wantCode(t, "checkout of an empty cart", err, codes.FailedPrecondition, "no lines")
	sku, _ := e.sku(0)
	c = e.addLine("alice", c.GetId(), sku, 1)
	_, err = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-12345678"})
	wantCode(t, "checkout without pickup", err, codes.FailedPrecondition, "pickup")
	wantUnchanged(t, e, "alice", c)
}

func TestCheckoutWithoutAnAnswerIsSettledBeforeTheCartChanges(t *testing.T) {
	// Nobody serves place_order: the outcome is unknown, so the cart stays open but refuses
	// changes (the order might exist) and the client is told to retry with the same key.
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	ctx := e.as("alice")
	res, err := e.client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-unanswered"})
	wantCode(t, "checkout with no fulfilment", err, codes.Unavailable, "same idempotency_key")
	_, err = e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
	wantCode(t, "change during an unsettled checkout", err, codes.Aborted, "being checked out")
	_, err = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-another-one"})
	wantCode(t, "second checkout with another key", err, codes.Aborted, "being checked out")
	if got := e.get("alice", c.GetId()); got.GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetOrderId() != "" || got.GetVersion() != res.GetCart().GetVersion() {
		t.Fatalf("cart after an unanswered checkout = %v; want open, no order, version unchanged", got)
	}

	// The lease lapses with the outcome still unknown: the order may exist (fulfilment may have
	// written it after the cart stopped waiting), so the cart's next change or checkout first
	// asks fulfilment for it. While fulfilment cannot say, nothing changes.
	lapse := func(key string) {
		t.Helper()
		if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET checkout_key = $2, checkout_until = now() - interval '1 second' WHERE id = $1`, c.GetId(), key); err != nil {
			t.Fatal(err)
		}
	}
	lapse("key-unanswered")
	_, err = e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
	wantCode(t, "change after the lease lapsed, fulfilment silent", err, codes.Unavailable, "key-unanswered")
	_, err = e.client.Checkout(ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-another-one"})
	wantCode(t, "checkout after the lease lapsed, fulfilment silent", err, codes.Unavailable, "key-unanswered")
	if got := e.get("alice", c.GetId()); got.GetVersion() != res.GetCart().GetVersion() || len(got.GetLines()) != 1 {
		t.Fatalf("cart after refused changes = %v; want it unchanged", got)
	}

	// Fulfilment answers: no order under the key, so the cart opens and the change is made; an
	// order under the key checks the cart out as that order, and the change is refused.
	var asked []string
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "find_checkout_order"), func(_ context.Context, req *fulfilmentv1.FindCheckoutOrderRequest) (*fulfilmentv1.FindCheckoutOrderResponse, error) {
			asked = append(asked, req.GetIdempotencyKey())
			switch {
			case req.GetCustomerId() != "alice" || req.GetCartId() != c.GetId():
				return nil, status.Error(codes.InvalidArgument, "wrong customer or cart")
			case req.GetIdempotencyKey() != "key-made-an-order":
				return nil, status.Error(codes.NotFound, "no order")
			}
			return &fulfilmentv1.FindCheckoutOrderResponse{Order: &fulfilmentv1.Order{Id: "order-made-late", CartId: c.GetId(),
				State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}}, nil
		})
	})
	added, err := e.client.AddLine(ctx, &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
	if err != nil || len(added.GetCart().GetLines()) != 1 || added.GetCart().GetLines()[0].GetQuantity() != 2 {
		t.Fatalf("change once fulfilment says there is no order: %v, %v; want it made", added.GetCart(), err)
	}
	lapse("key-made-an-order")
	_, err = e.client.RemoveLine(ctx, &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: added.GetCart().GetLines()[0].GetLineId()})
	wantCode(t, "change of a cart whose lapsed checkout made an order", err, codes.FailedPrecondition, "order-made-late")
	if got := e.get("alice", c.GetId()); got.GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetOrderId() != "order-made-late" || len(got.GetLines()) != 1 {
		t.Fatalf("cart after settling = %v; want checked out as order-made-late, its line kept", got)
	}
	if !slices.Equal(asked, []string{"key-unanswered", "key-made-an-order"}) {
		t.Fatalf("fulfilment was asked about keys %v; want each lapsed key once", asked)
	}
}

func TestAbandonedOpenCartsAreDeleted(t *testing.T) {
	e := newEnv(t)
	old := e.newCart("alice")
	svc := cart.New(cart.Config{Pool: e.pool, NATS: e.natsConn(), AbandonAfter: time.Millisecond})
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := svc.DeleteAbandoned(t.Context()); err != nil {
			return err
		}
		if _, err := e.client.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: old.GetId()}); status.Code(err) != codes.NotFound {
			return fmt.Errorf("abandoned cart still readable: %v", err)
		}
		return nil
	})
}

func TestCartShowsLastKnownPricesWhenTheCatalogDoesNotAnswer(t *testing.T) {
	// Caches off: every question goes to the catalog, which is what this test takes away.
	e := newEnv(t, func(c *cart.Config) { c.CacheTTL = -1 })
	sku, price := e.sku(0)
	c := e.newCart("alice")
	c = e.addLine("alice", c.GetId(), sku, 2)
	if err := e.catRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: sku, Quantity: 1})
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("AddLine with the catalog down = %v, want Unavailable", err)
		}
		return nil
	})
	got := e.get("alice", c.GetId())
	if !proto.Equal(got, c) || got.GetSubtotal().GetAmountMinor() != 2*price {
		t.Fatalf("cart with the catalog down:\n got  %v\n want %v", got, c)
	}
}

func TestAbandonmentCountsFromTheLastChangeNotTheCreation(t *testing.T) {
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	// Created long ago, changed just now: not abandoned.
	if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET create_time = now() - interval '40 days' WHERE id = $1`, c.GetId()); err != nil {
		t.Fatal(err)
	}
	e.addLine("alice", c.GetId(), sku, 1)
	svc := cart.New(cart.Config{Pool: e.pool, NATS: e.natsConn(), AbandonAfter: time.Hour})
	if n, err := svc.DeleteAbandoned(t.Context()); err != nil || n != 0 {
		t.Fatalf("DeleteAbandoned = %d, %v; want 0 deleted: the cart changed a moment ago", n, err)
	}
	if got := e.get("alice", c.GetId()); len(got.GetLines()) != 1 {
		t.Fatalf("cart after the sweep = %v; want it kept with its line", got)
	}
}

func TestCartWritesAreHeapOnlyUpdates(t *testing.T) {
	// A shopper's every action rewrites the cart row; with no index on what changes, Postgres
	// rewrites it in place without touching an index. An index on update_time (or any column
	// a write changes) would make each of these a full update.
	e := newEnv(t)
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	stats := func() (upd, hot int64) {
		t.Helper()
		if err := e.pool.QueryRow(t.Context(), `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'carts'::regclass`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		return upd, hot
	}
	upd0, hot0 := stats()
	const writes = 20
	for range writes {
		e.addLine("alice", c.GetId(), sku, 1)
	}
	// Backends report their counts to the statistics system a moment after their transactions.
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		upd, hot := stats()
		if upd-upd0 < writes {
			return fmt.Errorf("%d updates counted so far, want %d", upd-upd0, writes)
		}
		if hot-hot0 < (upd-upd0)*9/10 {
			return fmt.Errorf("%d of %d cart updates were heap-only; want nearly all", hot-hot0, upd-upd0)
		}
		return nil
	})
}

// A retry of a checkout while the first request is still placing the order (a double tap, a
// client's retry) that fails on its own (here: the catalog stops answering its pricing) leaves
// the lease to the first request: the cart cannot change while the order may be on its way.
// heldCheckout is alice's checkout of a fresh cart with key "key-double-tap" whose order
// fulfilment is placing: fulfilment holds the first place_order until release, then answers
// with order-1, and answers any later one with retry.
type heldCheckout struct {
	ctx     context.Context
	cartID  string
	sku     string
	release chan struct{}
	first   chan error // the first request's outcome
}

func (e *env) holdCheckout(retry func(*fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error)) *heldCheckout {
	e.t.Helper()
	sku, _ := e.sku(0)
	c := e.newCart("alice")
	e.addLine("alice", c.GetId(), sku, 1)
	h := &heldCheckout{ctx: e.as("alice"), cartID: c.GetId(), sku: sku, release: make(chan struct{}), first: make(chan error, 1)}
	if _, err := e.client.SetPickup(h.ctx, &cartv1.SetPickupRequest{CartId: c.GetId(), Pickup: nearest(47.6, -122.3, 0)}); err != nil {
		e.t.Fatal(err)
	}
	placing := make(chan struct{})
	var calls atomic.Int32
	e.serveNATS("fulfilment", func(svc *natsrpc.Service) error {
		return natsrpc.Handle(svc, natsrpc.Subject("fulfilment", "place_order"), func(_ context.Context, req *fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
			if calls.Add(1) > 1 {
				if retry == nil {
					return nil, rpcerr.Invalid("idempotency_key", "this test expects no retry to reach fulfilment")
				}
				return retry(req)
			}
			close(placing)
			<-h.release
			return &fulfilmentv1.PlaceOrderResponse{Order: &fulfilmentv1.Order{Id: "order-1", CartId: req.GetCartId(),
				State: fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}}, nil
		})
	})
	go func() {
		_, err := e.client.Checkout(h.ctx, &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "key-double-tap"})
		h.first <- err
	}()
	<-placing
	return h
}

// finish lets the first request's order through and checks the cart is checked out as it,
// with its one line.
func (h *heldCheckout) finish(t *testing.T, e *env) {
	t.Helper()
	close(h.release)
	if err := <-h.first; err != nil {
		t.Fatalf("the first request: %v", err)
	}
	if got := e.get("alice", h.cartID); got.GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || got.GetOrderId() != "order-1" || len(got.GetLines()) != 1 {
		t.Fatalf("cart = %v; want checked out as order-1 with its one line", got)
	}
}

func TestAFailedRetryLeavesTheLeaseToTheCheckoutItRetries(t *testing.T) {
	e := newEnv(t, func(c *cart.Config) { c.CacheTTL = -1 }) // every pricing asks the catalog
	h := e.holdCheckout(nil)
	if err := e.catRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.Checkout(h.ctx, &cartv1.CheckoutRequest{CartId: h.cartID, IdempotencyKey: "key-double-tap"})
	wantCode(t, "the retry, the catalog down", err, codes.Unavailable)
	var leased bool
	if err := e.pool.QueryRow(t.Context(), `SELECT checkout_until > now() FROM carts WHERE id = $1`, h.cartID).Scan(&leased); err != nil || !leased {
		t.Fatalf("after the retry failed, the first request's lease is running: %v (%v); want true", leased, err)
	}
	h.finish(t, e)
}

// A retry that fulfilment refuses made no order, but its first request may be placing one under
// the same key: the lease is the first request's, and the refusal leaves it running, so the
// cart cannot change (and take a second order) while that order is written.
func TestARefusedRetryLeavesTheLeaseToTheCheckoutItRetries(t *testing.T) {
	e := newEnv(t)
	h := e.holdCheckout(func(*fulfilmentv1.PlaceOrderRequest) (*fulfilmentv1.PlaceOrderResponse, error) {
		return nil, rpcerr.Invalid("pickup_name", "refused for this test")
	})
	_, err := e.client.Checkout(h.ctx, &cartv1.CheckoutRequest{CartId: h.cartID, IdempotencyKey: "key-double-tap"})
	wantCode(t, "the retry, refused by fulfilment", err, codes.InvalidArgument, "pickup_name")
	_, err = e.client.AddLine(h.ctx, &cartv1.AddLineRequest{CartId: h.cartID, Sku: h.sku, Quantity: 1})
	wantCode(t, "a change while the first request places its order", err, codes.Aborted, "being checked out")
	h.finish(t, e)
}

// A cart at its most lines refuses another SKU as a precondition that names the SKU, and the
// cart is unchanged; more of a SKU it has still goes on that line.
func TestAddLineToAFullCartNamesTheSKUAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	c := e.newCart("alice")
	sku, _ := e.sku(0)
	c = e.addLine("alice", c.GetId(), sku, 1)
	// 99 more lines copied from the first (the demo menu has fewer SKUs than a cart may hold).
	if _, err := e.pool.Exec(t.Context(), `UPDATE carts SET lines = lines || (
		SELECT jsonb_agg(jsonb_set(jsonb_set(lines->0, '{line_id}', to_jsonb(gen_random_uuid()::text)), '{sku}', to_jsonb('FILL-' || i)))
		FROM generate_series(1, 99) AS i), version = version + 1 WHERE id = $1`, c.GetId()); err != nil {
		t.Fatal(err)
	}
	full := e.get("alice", c.GetId())
	if n := len(full.GetLines()); n != 100 {
		t.Fatalf("the cart has %d lines; want 100", n)
	}
	other, _ := e.sku(1)
	_, err := e.client.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: other, Quantity: 1})
	wantCode(t, "AddLine of a 101st sku", err, codes.FailedPrecondition, other)
	wantUnchanged(t, e, "alice", full)
	if got := e.addLine("alice", c.GetId(), sku, 1); len(got.GetLines()) != 100 || got.GetLines()[0].GetQuantity() != 2 {
		t.Fatalf("more of a sku the full cart has: %d lines, first %d units; want 100 lines, 2 units", len(got.GetLines()), got.GetLines()[0].GetQuantity())
	}
}
