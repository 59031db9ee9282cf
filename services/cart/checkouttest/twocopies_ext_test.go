package checkout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
)

// secondCatalogAndCart starts a second catalog copy (same schema, its own relay, serving
// NATS in the same queue group) and a second cart copy (same schema, its own NATS
// connection and caches), and returns their gRPC clients.
func (e *env) secondCatalogAndCart() (catalogv1.CatalogAdminServiceClient, cartv1.CartServiceClient) {
	t := e.t
	t.Helper()
	log := testenv.Logger(t)
	var catSchema, cartSchema string
	if err := e.catalogDB.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&catSchema); err != nil {
		t.Fatal(err)
	}
	if err := e.cartDB.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&cartSchema); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(testenv.NATSConn(t, e.nats))
	if err != nil {
		t.Fatal(err)
	}
	catPool := testenv.Pool(t, catSchema, catalog.Migrations())
	cat := catalog.New(catalog.Config{Pool: catPool, Currency: "USD", Logger: log})
	e.serveNATS("catalog", cat.RegisterNATS)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = outbox.NewRelay(catPool, js, outbox.RelayConfig{Logger: log}).Run(ctx); done <- struct{}{} }()
	cartPool := testenv.Pool(t, cartSchema, cart.Migrations(), cart.PoolOptions()...)
	c := cart.New(cart.Config{Pool: cartPool, NATS: testenv.NATSConn(t, e.nats), JS: js, Currency: "USD", Logger: log,
		CheckoutTimeout: 10 * time.Second, CacheTTL: time.Hour})
	go func() { _ = c.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	srv := grpc.NewServer()
	cat.RegisterGRPC(srv)
	c.RegisterGRPC(srv)
	conn := testenv.GRPC(t, srv)
	return catalogv1.NewCatalogAdminServiceClient(conn), cartv1.NewCartServiceClient(conn)
}

// A price changed through catalog copy B reaches both cart copies (each
// with the SKU cached for an hour) promptly, and a checkout through either is priced at it; a
// product archived through catalog B is refused by a checkout through either cart copy.
func TestCatalogChangesThroughOneCopyReachEveryCartCopy(t *testing.T) {
	e := newEnv(t)
	catB, cartB := e.secondCatalogAndCart()
	skus := e.skus(10)
	sku := skus[0]
	var other string
	for _, s := range skus {
		if e.productOf(s) != e.productOf(sku) {
			other = s
			break
		}
	}
	carts := map[string]cartv1.CartServiceClient{"cart A": e.carts, "cart B": cartB}
	// One cart per shopper per copy, so both copies have the SKU cached.
	ids := map[string]string{}
	var price int64
	for name, client := range carts {
		ctx := e.as("shopper-" + name)
		res, err := client.CreateCart(ctx, &cartv1.CreateCartRequest{})
		if err != nil {
			t.Fatal(err)
		}
		id := res.GetCart().GetId()
		if _, err := client.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku, Quantity: 2}); err != nil {
			t.Fatal(err)
		}
		p, err := client.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}}})
		if err != nil {
			t.Fatal(err)
		}
		price = p.GetCart().GetLines()[0].GetUnitPrice().GetAmountMinor()
		ids[name] = id
	}

	// The price changed through catalog B.
	got, err := e.catalogPublic.GetProduct(t.Context(), &catalogv1.GetProductRequest{ProductId: e.productOf(sku)})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range got.GetProduct().GetVariants() {
		if v.GetSku() == sku {
			v.Price = &commonv1.Money{AmountMinor: price + 40, CurrencyCode: "USD"}
		}
	}
	start := time.Now()
	if _, err := catB.UpdateProduct(t.Context(), &catalogv1.UpdateProductRequest{Product: got.GetProduct(), UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"variants"}}}); err != nil {
		t.Fatal(err)
	}
	for name, client := range carts {
		testenv.CheckFor(t, 3*time.Second, 5*time.Millisecond, func() error {
			res, err := client.GetCart(e.as("shopper-"+name), &cartv1.GetCartRequest{CartId: ids[name]})
			if err != nil {
				return err
			}
			if p := res.GetCart().GetLines()[0].GetUnitPrice().GetAmountMinor(); p != price+40 {
				return fmt.Errorf("%s shows %d", name, p)
			}
			return nil
		})
		t.Logf("%s shows the new price %v after the update through catalog B", name, time.Since(start))
	}
	for name, client := range carts {
		res, err := client.Checkout(e.as("shopper-"+name), &cartv1.CheckoutRequest{CartId: ids[name], IdempotencyKey: "price-" + name})
		if err != nil || res.GetOrder().GetTotal().GetAmountMinor() != 2*(price+40) {
			t.Fatalf("checkout through %s: %v, %v; want total %d", name, res.GetOrder().GetTotal(), err, 2*(price+40))
		}
	}

	// Archived through catalog B: a checkout through either cart copy is refused. Each try is a
	// cart of its own, made before the archive (a cart checked out before the archive's event
	// arrived is done with).
	for name, client := range carts {
		for n := range 20 {
			res, err := client.CreateCart(e.as("archive-"+name), &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: other, Quantity: 1}},
				Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}}})
			if err != nil {
				t.Fatal(err)
			}
			ids[fmt.Sprintf("archive-%s-%d", name, n)] = res.GetCart().GetId()
		}
	}
	start = time.Now()
	if _, err := catB.ArchiveProduct(t.Context(), &catalogv1.ArchiveProductRequest{ProductId: e.productOf(other)}); err != nil {
		t.Fatal(err)
	}
	for name, client := range carts {
		n := 0
		testenv.CheckFor(t, 3*time.Second, 5*time.Millisecond, func() error {
			if n == 20 {
				t.Fatalf("%s still checks out the archived product %v after the archive", name, time.Since(start))
			}
			cartID := ids[fmt.Sprintf("archive-%s-%d", name, n)]
			n++
			res, err := client.Checkout(e.as("archive-"+name), &cartv1.CheckoutRequest{CartId: cartID, IdempotencyKey: "arch-" + cartID})
			if err == nil {
				// Before the archive's event arrives (outbox relay): as with one copy.
				t.Logf("%s checked out the archived product %v after the archive: %v", name, time.Since(start), res.GetOrder().GetState())
				return fmt.Errorf("not heard yet")
			}
			if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), other) {
				return fmt.Errorf("checkout through %s: %v", name, err)
			}
			return nil
		})
		t.Logf("%s refuses the archived product %v after the archive", name, time.Since(start))
	}
}

// A checkout through cart copy A raced by an edit through cart copy B
// (which remembers the cart from its own earlier edit): the edit either lands before the
// checkout froze the cart, and the order has it, or is refused; never acknowledged and missing
// from the order, and the checked-out cart shows the order's lines.
func TestCheckoutOnOneCopyRacedByAnEditOnAnother(t *testing.T) {
	e := newEnv(t)
	_, cartB := e.secondCatalogAndCart()
	skus := e.skus(3)
	outcomes := map[string]int{}
	defer func() { t.Logf("edit outcomes: %v", outcomes) }()
	for i := range 20 {
		customer := fmt.Sprintf("racer-%d", i)
		ctx := e.as(customer)
		res, err := cartB.CreateCart(ctx, &cartv1.CreateCartRequest{Lines: []*cartv1.NewCartLine{{Sku: skus[0], Quantity: 1}},
			Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: storeID}}})
		if err != nil {
			t.Fatal(err)
		}
		id := res.GetCart().GetId()
		// B remembers the cart as it wrote it.
		if _, err := cartB.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[1], Quantity: 1}); err != nil {
			t.Fatal(err)
		}
		var (
			order   *cartv1.CheckoutResponse
			coErr   error
			edit    *cartv1.AddLineResponse
			editErr error
		)
		gate := make(chan struct{})
		done := make(chan struct{}, 2)
		go func() {
			<-gate
			order, coErr = e.carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "race-checkout"})
			done <- struct{}{}
		}()
		go func() {
			<-gate
			edit, editErr = cartB.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[2], Quantity: 2})
			done <- struct{}{}
		}()
		close(gate)
		<-done
		<-done
		if coErr != nil {
			t.Fatalf("round %d: checkout: %v", i, coErr)
		}
		has := false
		for _, l := range order.GetOrder().GetLines() {
			if l.GetSku() == skus[2] {
				has = l.GetQuantity() == 2
			}
		}
		outcomes[fmt.Sprintf("in order %v / %v", has, status.Code(editErr))]++
		if editErr == nil && !has {
			t.Errorf("round %d: the edit through B was acknowledged (version %d) but the order made through A lacks it: %v",
				i, edit.GetCart().GetVersion(), order.GetOrder().GetLines())
		}
		if editErr != nil && has {
			t.Errorf("round %d: the edit was refused (%v) but the order has it", i, editErr)
		}
		if editErr != nil && status.Code(editErr) != codes.Aborted && status.Code(editErr) != codes.FailedPrecondition {
			t.Errorf("round %d: the edit failed with %v; want Aborted or FailedPrecondition", i, editErr)
		}
		for name, client := range map[string]cartv1.CartServiceClient{"A": e.carts, "B": cartB} {
			got, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: id})
			if err != nil {
				t.Fatal(err)
			}
			if got.GetCart().GetState() != cartv1.CartState_CART_STATE_CHECKED_OUT || len(got.GetCart().GetLines()) != len(order.GetOrder().GetLines()) {
				t.Errorf("round %d: cart through %s: %v with %d lines; want checked out with the order's %d", i, name, got.GetCart().GetState(), len(got.GetCart().GetLines()), len(order.GetOrder().GetLines()))
			}
		}
		// And an edit through B after the checkout is refused, whatever B remembers.
		if _, err := cartB.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: skus[0], Quantity: 1}); err == nil {
			t.Errorf("round %d: an edit through B after the checkout was accepted", i)
		}
	}
}
