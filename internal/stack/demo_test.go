package stack_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// startStack starts cfg and waits until it is ready; errc says how Run ended, after cancel.
func startStack(t *testing.T, cfg stack.Config) (r stack.Ready, errc <-chan error, cancel context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan stack.Ready, 1)
	done := make(chan error, 1)
	go func() { done <- stack.Run(ctx, cfg, func(r stack.Ready) { ready <- r }) }()
	select {
	case r = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("start: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("not ready in 2 minutes")
	}
	return r, done, cancel
}

// runUntilReady starts cfg and waits until it is ready; stop stops it.
func runUntilReady(t *testing.T, cfg stack.Config) (r stack.Ready, stop func()) {
	t.Helper()
	r, errc, cancel := startStack(t, cfg)
	return r, func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("stop: %v", err)
		}
	}
}

// counts reads how many stores and products the database holds.
func counts(t *testing.T, url string) (stores, products int) {
	t.Helper()
	conn := testenv.Connect(t, url)
	if err := conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM inventory.stores), (SELECT count(*) FROM catalog.products)`).Scan(&stores, &products); err != nil {
		t.Fatal(err)
	}
	return stores, products
}

// The demo chain is loaded into an empty database only: a retailer's own catalog does not get
// the demo's stores (nor its stores the demo's products), while a demo whose load a stop cut
// short, one part in and the other not, is completed at the next start.
func TestTheDemoIsNotLoadedBesideARetailersOwnData(t *testing.T) {
	own := stacktest.Config(t)
	own.LoadDemo = false
	r, stop := runUntilReady(t, own)
	tok, err := r.Keys.Issue(auth.Principal{Subject: "ops", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(r.ServiceAddrs[stack.TargetCatalog], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)
	admin := catalogv1.NewCatalogAdminServiceClient(cc)
	if _, err := admin.CreateCategory(ctx, &catalogv1.CreateCategoryRequest{Category: &catalogv1.Category{Id: "cat-tools", Slug: "tools", Name: "Tools"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Id: "prd-hammer", Name: "Hammer", CategoryId: "cat-tools",
		Variants: []*catalogv1.Variant{{Sku: "HAMMER-1", Name: "16 oz", Price: &commonv1.Money{AmountMinor: 1999, CurrencyCode: "USD"}}}}}); err != nil {
		t.Fatal(err)
	}
	_ = cc.Close()
	stop()
	own.LoadDemo = true // started again as `handoff` is, demo on
	_, stop = runUntilReady(t, own)
	stop()
	if stores, products := counts(t, own.DatabaseURL); stores != 0 || products != 1 {
		t.Errorf("a retailer's catalog of one product, started with the demo: %d stores, %d products; want 0 and 1", stores, products)
	}

	cut := stacktest.Config(t)
	_, stop = runUntilReady(t, cut)
	stop()
	full, products := counts(t, cut.DatabaseURL)
	if full == 0 || products == 0 {
		t.Fatalf("the demo loaded %d stores and %d products", full, products)
	}
	conn := testenv.Connect(t, cut.DatabaseURL)
	// The stores' part of the load undone, as a stop between the parts would leave it.
	if _, err := conn.Exec(t.Context(), `TRUNCATE inventory.stores, inventory.stock, inventory.movements, inventory.holds CASCADE`); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(context.Background())
	_, stop = runUntilReady(t, cut)
	stop()
	if stores, again := counts(t, cut.DatabaseURL); stores != full || again != products {
		t.Errorf("a demo cut short, started again: %d stores, %d products; want %d and %d", stores, again, full, products)
	}
}
