package checkout_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/cart"
)

// The cart's questions to other services, as the request spy names them.
const (
	askCatalog      = "catalog.batch_get_variants"
	askStore        = "inventory.get_store"
	askAvailability = "inventory.get_availability"
	placeOrder      = "fulfilment.place_order"
)

// TestAShoppersJourneyCostsFewRoundTrips pins what each action costs the cart once the catalog
// and the store are in its caches: SQL statements (BEGIN/COMMIT count) and NATS requests, in
// the order they are asked.
// Before lines moved into the cart row and the caches came, the same journey took 21
// statements and 9 requests.
func TestAShoppersJourneyCostsFewRoundTrips(t *testing.T) {
	e := newEnv(t)
	sku := e.skus(1)[0]
	requests := e.spyRequests()
	e.filledCart("someone-else", 1, sku) // fills the caches: the SKU, the store
	e.statements.take()
	requests.take()

	ctx := e.as("alice")
	var cartID string
	steps := []struct {
		action     string
		do         func() error
		statements int
		requests   []string
	}{
		{"CreateCart", func() error {
			res, err := e.carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
			cartID = res.GetCart().GetId()
			return err
		}, 1, nil},
		{"AddLine", func() error {
			_, err := e.carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: cartID, Sku: sku, Quantity: 1})
			return err
		}, 2, nil},
		{"SetPickup", func() error {
			_, err := e.carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: cartID, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}}})
			return err
		}, 2, []string{askAvailability}},
		{"GetCart", func() error {
			_, err := e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: cartID})
			return err
		}, 1, []string{askAvailability}},
		{"Checkout", func() error {
			res, err := e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: cartID, IdempotencyKey: "journey-cost-1"})
			if err == nil && res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
				err = fmt.Errorf("order %v", res.GetOrder().GetState())
			}
			return err
		}, 2, []string{placeOrder}}, // priced as the cart is shown, from the cache
		{"GetCart checked out", func() error {
			_, err := e.carts.GetCart(ctx, &cartv1.GetCartRequest{CartId: cartID})
			return err
		}, 1, nil}, // availability is not shown on a checked-out cart, so not asked
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.action, err)
		}
		stmts, reqs := e.statements.take(), requests.take()
		t.Logf("%-20s %d statements, NATS requests %v", st.action, stmts, reqs)
		if stmts > st.statements || !slices.Equal(reqs, st.requests) {
			t.Errorf("%s cost %d statements and asked %v; want at most %d statements and exactly %v", st.action, stmts, reqs, st.statements, st.requests)
		}
	}
}

func TestCatalogPriceChangeReachesTheCartAndItsCheckoutPromptly(t *testing.T) {
	e := newEnv(t) // the cart's caches keep answers for an hour: only the event can tell it
	sku := e.skus(1)[0]
	c := e.filledCart("alice", 2, sku)
	price := c.GetLines()[0].GetUnitPrice().GetAmountMinor()
	requests := e.spyRequests()
	if _, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	if reqs := requests.take(); slices.Contains(reqs, askCatalog) || slices.Contains(reqs, askStore) {
		t.Fatalf("a view of a cart whose SKU and store were just looked up asked %v; want both from the cache", reqs)
	}

	e.changePrice(sku, price+25)
	e.waitForPrice("alice", c.GetId(), price+25)
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "new-price-checkout"})
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	if o := res.GetOrder(); o.GetTotal().GetAmountMinor() != 2*(price+25) {
		t.Fatalf("order total %v; want %d at the new price", o.GetTotal(), 2*(price+25))
	}
}

// A shopper is charged no price they were not shown: a checkout pinned to the subtotal the
// cart showed is refused once a price has changed, makes no order and leaves the cart open;
// pinned to the subtotal shown again, it goes through at the new price.
func TestACheckoutPinnedToTheSubtotalShownIsRefusedWhenAPriceChanged(t *testing.T) {
	e := newEnv(t)
	sku := e.skus(1)[0]
	c := e.filledCart("alice", 2, sku)
	price, shown := c.GetLines()[0].GetUnitPrice().GetAmountMinor(), c.GetSubtotal()

	// Bad input, not a price change: a negative amount, another currency, one spelt otherwise.
	for i, bad := range []*commonv1.Money{{AmountMinor: -1, CurrencyCode: "USD"}, {AmountMinor: shown.GetAmountMinor(), CurrencyCode: "EUR"},
		{AmountMinor: shown.GetAmountMinor(), CurrencyCode: "usd"}} {
		_, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: fmt.Sprintf("pinned-bad-%d", i),
			ExpectedSubtotal: bad})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "expected_subtotal") {
			t.Fatalf("Checkout with expected_subtotal %v on a USD cart = %v; want InvalidArgument naming expected_subtotal", bad, err)
		}
	}

	e.changePrice(sku, price+25)
	e.waitForPrice("alice", c.GetId(), price+25)
	_, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "pinned-old", ExpectedSubtotal: shown})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "expected_subtotal") {
		t.Fatalf("Checkout pinned to the subtotal before the price change = %v; want FailedPrecondition naming expected_subtotal", err)
	}
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetCart().GetVersion() != c.GetVersion() {
		t.Fatalf("cart after the refused checkout = %v, %v; want open and unchanged", got.GetCart(), err)
	}
	orders, err := e.orders.ListOrders(e.as("alice"), &fulfilmentv1.ListOrdersRequest{})
	if err != nil || len(orders.GetOrders()) != 0 {
		t.Fatalf("orders after the refused checkout: %v, %v; want none", orders.GetOrders(), err)
	}

	now := got.GetCart().GetSubtotal()
	if now.GetAmountMinor() != 2*(price+25) {
		t.Fatalf("the cart shows a subtotal of %v; want %d", now, 2*(price+25))
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "pinned-new", ExpectedSubtotal: now})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || res.GetOrder().GetTotal().GetAmountMinor() != now.GetAmountMinor() {
		t.Fatalf("Checkout pinned to the subtotal shown now = %v, %v; want CONFIRMED with total %d", res.GetOrder(), err, now.GetAmountMinor())
	}
}

func TestArchivedProductIsRefusedByAddLineAndCheckoutPromptly(t *testing.T) {
	e := newEnv(t)
	// Two SKUs of different products: one is archived, the other stays.
	keep := e.skus(1)[0]
	var archived string
	for _, sku := range e.skus(10) {
		if e.productOf(sku) != e.productOf(keep) {
			archived = sku
			break
		}
	}
	c := e.filledCart("alice", 1, keep, archived)
	if _, err := e.catalogAdmin.ArchiveProduct(t.Context(), &catalogv1.ArchiveProductRequest{ProductId: e.productOf(archived)}); err != nil {
		t.Fatal(err)
	}
	// Until the cart hears of it the probe, with a stale expected_version, is Aborted and
	// changes nothing.
	testenv.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		_, err := e.carts.AddLine(e.as("alice"), &cartv1.AddLineRequest{CartId: c.GetId(), Sku: archived, Quantity: 1, ExpectedVersion: 1})
		if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), archived) {
			return fmt.Errorf("AddLine of the archived sku = %v; want NotFound naming %s", err, archived)
		}
		return nil
	})
	_, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "archived-line-1"})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), archived) {
		t.Fatalf("Checkout with an archived line = %v; want NotFound naming %s", err, archived)
	}

	// No order was made and the cart is open to change: without that line it checks out.
	got, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil || got.GetCart().GetState() != cartv1.CartState_CART_STATE_OPEN || got.GetCart().GetVersion() != c.GetVersion() {
		t.Fatalf("cart after the refused checkout = %v, %v; want open and unchanged", got.GetCart(), err)
	}
	if _, err := e.carts.RemoveLine(e.as("alice"), &cartv1.RemoveLineRequest{CartId: c.GetId(), LineId: c.GetLines()[1].GetLineId()}); err != nil {
		t.Fatalf("RemoveLine of the archived line: %v", err)
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "archived-line-2"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED || len(res.GetOrder().GetLines()) != 1 {
		t.Fatalf("Checkout without the archived line = %v, %v; want CONFIRMED with one line", res.GetOrder(), err)
	}
}

func TestStoreChangeReachesTheCartPromptly(t *testing.T) {
	e := newEnv(t)
	c := e.filledCart("alice", 1, e.skus(1)...)
	if _, err := e.inventory.UpdateStore(t.Context(), &inventoryv1.Store{Id: storeID, Name: "Renamed Test Store"}, []string{"name"}, 0); err != nil {
		t.Fatalf("UpdateStore: %v", err)
	}
	testenv.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		res, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()})
		if err != nil {
			return err
		}
		if name := res.GetCart().GetPickup().GetStoreName(); name != "Renamed Test Store" {
			return fmt.Errorf("pickup store shown as %q after the rename", name)
		}
		return nil
	})
}

func TestCachesAreDroppedWhenTheCartsNATSConnectionComesBack(t *testing.T) {
	// Events sent while the cart was cut off never reach it: whatever it cached before is
	// asked again once it is back, however long its TTL.
	e := newEnv(t)
	c := e.filledCart("alice", 1, e.skus(1)...)
	requests := e.spyRequests()
	if _, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	if reqs := requests.take(); slices.Contains(reqs, askCatalog) || slices.Contains(reqs, askStore) {
		t.Fatalf("a warm view asked %v; want the SKU and the store from the cache", reqs)
	}

	id, err := e.cartConn.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nats.DisconnectClientByID(id); err != nil {
		t.Fatalf("cut the cart off: %v", err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !e.cartConn.IsConnected() {
			return fmt.Errorf("cart not reconnected yet")
		}
		if _, err := e.carts.GetCart(e.as("alice"), &cartv1.GetCartRequest{CartId: c.GetId()}); err != nil {
			return err
		}
		if reqs := requests.take(); !slices.Contains(reqs, askCatalog) || !slices.Contains(reqs, askStore) {
			return fmt.Errorf("a view after the reconnect asked %v; want the catalog and the store asked again", reqs)
		}
		return nil
	})
}

func TestCheckoutPricesAsTheCartShowsAndALostPriceEventLastsOnlyTheCacheTTL(t *testing.T) {
	// A price changed with no event (a lost one, say) leaves the cart's cache wrong for its
	// TTL. Within it the order carries the price the shopper was shown; after it, the
	// catalog's.
	const ttl = 2 * time.Second
	e := newEnv(t, func(c *cart.Config) { c.CacheTTL = ttl })
	sku := e.skus(1)[0]
	filling := time.Now() // the cache learns the price after this, so keeps it until filling+ttl at least
	c := e.filledCart("alice", 1, sku)
	shown := c.GetLines()[0].GetUnitPrice().GetAmountMinor()
	changed := time.Now()
	if _, err := e.catalogDB.Exec(t.Context(), `UPDATE variants SET price_minor = price_minor + 100 WHERE sku = $1`, sku); err != nil {
		t.Fatal(err)
	}
	res, err := e.carts.Checkout(e.as("alice"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "priced-as-shown"})
	if err != nil {
		t.Fatal(err)
	}
	got := res.GetOrder().GetLines()[0].GetUnitPrice().GetAmountMinor()
	switch {
	case time.Since(filling) < ttl && got != shown:
		t.Fatalf("order line priced %d; want %d, as the cart showed it", got, shown)
	case got != shown && got != shown+100:
		t.Fatalf("order line priced %d; want %d as shown, or the catalog's %d (this machine took longer than the TTL)", got, shown, shown+100)
	}

	// Past the TTL the cart asks the catalog again: shown and ordered at the new price.
	time.Sleep(ttl - time.Since(changed) + 10*time.Millisecond)
	c = e.filledCart("bob", 1, sku)
	if got := c.GetLines()[0].GetUnitPrice().GetAmountMinor(); got != shown+100 {
		t.Fatalf("a cart filled after the TTL shows %d; want the catalog's %d", got, shown+100)
	}
	res, err = e.carts.Checkout(e.as("bob"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "priced-after-ttl"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetOrder().GetLines()[0].GetUnitPrice().GetAmountMinor(); got != shown+100 {
		t.Fatalf("order line priced %d after the TTL; want the catalog's %d", got, shown+100)
	}
}

func TestAClosedCartStopsListeningToItsOwnersEvents(t *testing.T) {
	e := newEnv(t)
	nc := testenv.NATSConn(t, e.nats)
	svc := cart.New(cart.Config{NATS: nc, Logger: testenv.Logger(t), CacheTTL: time.Hour})
	if n := nc.NumSubscriptions(); n != 2 {
		t.Fatalf("a new cart service holds %d subscriptions; want 2 (product and store events)", n)
	}
	svc.Close()
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("after Close %d subscriptions remain; want none", n)
	}
	svc.Close() // twice is harmless
}

// changePrice sets sku's price in the catalog.
func (e *env) changePrice(sku string, amount int64) {
	e.t.Helper()
	p, err := e.catalogPublic.GetProduct(e.t.Context(), &catalogv1.GetProductRequest{ProductId: e.productOf(sku)})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, v := range p.GetProduct().GetVariants() {
		if v.GetSku() == sku {
			v.Price = &commonv1.Money{AmountMinor: amount, CurrencyCode: "USD"}
		}
	}
	if _, err := e.catalogAdmin.UpdateProduct(e.t.Context(), &catalogv1.UpdateProductRequest{
		Product: p.GetProduct(), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}},
	}); err != nil {
		e.t.Fatalf("UpdateProduct: %v", err)
	}
}

// waitForPrice waits until customer's cart shows its first line at amount: the catalog's
// change has reached the cart service.
func (e *env) waitForPrice(customer, cartID string, amount int64) {
	e.t.Helper()
	testenv.CheckFor(e.t, 3*time.Second, 10*time.Millisecond, func() error {
		res, err := e.carts.GetCart(e.as(customer), &cartv1.GetCartRequest{CartId: cartID})
		if err != nil {
			return err
		}
		if got := res.GetCart().GetLines()[0].GetUnitPrice().GetAmountMinor(); got != amount {
			return fmt.Errorf("cart shows unit price %d after the change to %d", got, amount)
		}
		return nil
	})
}

// A checked-out cart is the record of what was ordered: after a price change it still shows
// the prices its order was placed with, and their subtotal is the order's total.
func TestACheckedOutCartShowsWhatItsOrderCharged(t *testing.T) {
	e := newEnv(t)
	sku := e.skus(1)[0]
	c := e.filledCart("cat", 2, sku)
	res, err := e.carts.Checkout(e.as("cat"), &cartv1.CheckoutRequest{CartId: c.GetId(), IdempotencyKey: "charged-price-checkout"})
	if err != nil || res.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("Checkout: %v, %v", res.GetOrder().GetState(), err)
	}
	charged := res.GetOrder().GetLines()[0].GetUnitPrice().GetAmountMinor()
	if shown := res.GetCart().GetLines()[0].GetUnitPrice().GetAmountMinor(); shown != charged {
		t.Fatalf("the checkout's cart shows %d; its order charged %d", shown, charged)
	}

	e.changePrice(sku, charged+1000)
	open := e.filledCart("dot", 1, sku)
	e.waitForPrice("dot", open.GetId(), charged+1000) // the change has reached the cart service

	got, err := e.carts.GetCart(e.as("cat"), &cartv1.GetCartRequest{CartId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if shown := got.GetCart().GetLines()[0].GetUnitPrice().GetAmountMinor(); shown != charged {
		t.Errorf("the checked-out cart shows unit price %d after the catalog's change; its order charged %d", shown, charged)
	}
	if sub, total := got.GetCart().GetSubtotal().GetAmountMinor(), res.GetOrder().GetTotal().GetAmountMinor(); sub != total {
		t.Errorf("the checked-out cart's subtotal %d; its order's total %d", sub, total)
	}
}
