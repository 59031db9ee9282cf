package journey

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

// -items reads SKU[:QTY],...: a SKU without a quantity is one, each field is read whole, and
// a SKU named twice is one item of both quantities (the catalog answers it once, the cart
// makes it one line).
func TestItemsAreReadWholeAndASKUNamedTwiceIsOneItem(t *testing.T) {
	got, err := ParseItems("LATTE-16:1, CROISSANT ,LATTE-16:2")
	if want := []Item{{"LATTE-16", 3}, {"CROISSANT", 1}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseItems = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{":2", " :1", "LATTE-16:2x", "LATTE-16:", "LATTE-16:0", "LATTE-16:100", "LATTE-16:1.5", "LATTE-16:60,LATTE-16:40", ",", ""} {
		if items, err := ParseItems(bad); err == nil {
			t.Errorf("ParseItems(%q) = %v; want an error", bad, items)
		}
	}
}

// dedupCatalog answers BatchGetVariants as the catalog does: each SKU asked for once, however
// often it is asked.
type dedupCatalog struct {
	catalogv1connect.UnimplementedCatalogServiceHandler
}

func (dedupCatalog) BatchGetVariants(_ context.Context, req *connect.Request[catalogv1.BatchGetVariantsRequest]) (*connect.Response[catalogv1.BatchGetVariantsResponse], error) {
	var res catalogv1.BatchGetVariantsResponse
	seen := map[string]bool{}
	for _, sku := range req.Msg.GetSkus() {
		if !seen[sku] {
			seen[sku] = true
			res.Variants = append(res.Variants, &catalogv1.Variant{Sku: sku, ProductName: "Product " + sku, Name: "one",
				Price: &commonv1.Money{CurrencyCode: "USD", AmountMinor: 100}, Orderable: true})
		}
	}
	return connect.NewResponse(&res), nil
}

// The journey tells what the shopper wants as the catalog lists it, each SKU with its quantity.
// Items naming a SKU twice (a Config made by hand: ParseItems merges them) were paired with the
// catalog's answer by position, which has the SKU once: "LATTE-16 × 1" and "CROISSANT × 2",
// LATTE-16's second quantity told as CROISSANT's. Here the run ends at the store search, which this
// gateway does not serve.
func TestTheJourneyTellsEachSKUWithAllItsQuantity(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(catalogv1connect.NewCatalogServiceHandler(dedupCatalog{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	keys, err := auth.ParseKeySet("k1:" + strings.Repeat("A", 43) + "=")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = Run(t.Context(), Config{
		Endpoints: system.Endpoints{GatewayURL: srv.URL, POSURL: srv.URL, Keys: keys},
		Near:      &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3},
		Items:     []Item{{"LATTE-16", 1}, {"LATTE-16", 2}, {"CROISSANT", 4}},
		Out:       &out,
	})
	if err == nil || !strings.Contains(err.Error(), "find stores") {
		t.Fatalf("journey against a gateway with only the catalog: %v; want it to stop at the store search\n%s", err, out.String())
	}
	told := map[string]string{}
	for _, m := range regexp.MustCompile(`catalog\s+(\S+) .* × (\d+)`).FindAllStringSubmatch(out.String(), -1) {
		told[m[1]] += m[2] + " "
	}
	if want := map[string]string{"LATTE-16": "3 ", "CROISSANT": "4 "}; len(told) != 2 || told["LATTE-16"] != want["LATTE-16"] || told["CROISSANT"] != want["CROISSANT"] {
		t.Errorf("the catalog lines tell %v; want LATTE-16 × 3 and CROISSANT × 4 once each\n%s", told, out.String())
	}
}
