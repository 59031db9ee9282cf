package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// proxyTo fronts addr with a proxy whose every request goes to handle, with the proxy to pass
// it on (streams flow through as they come), and gives the proxy's URL.
func proxyTo(t *testing.T, addr string, handle func(w http.ResponseWriter, r *http.Request, next http.Handler)) string {
	t.Helper()
	target, _ := url.Parse("http://" + addr)
	next := httputil.NewSingleHostReverseProxy(target)
	next.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handle(w, r, next) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

// failingCheckoutGateway fronts the gateway and answers every Checkout with HTTP 503 (gRPC-web
// clients read it as Unavailable): no order can be placed. Everything else goes through.
func failingCheckoutGateway(t *testing.T, gatewayAddr string) (string, *atomic.Int64) {
	t.Helper()
	var refused atomic.Int64
	return proxyTo(t, gatewayAddr, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasSuffix(r.URL.Path, "/Checkout") {
			refused.Add(1)
			http.Error(w, "checkout is down", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	}), &refused
}

// withGateway replaces the -gateway of flags.
func withGateway(flags []string, gw string) []string {
	out := slices.Clone(flags)
	out[slices.Index(out, "-gateway")+1] = gw
	return out
}

// A load run in which no order could be placed (every Checkout failed) measured nothing: it
// exits 1, in count and in duration mode, not 0 as a measurement would.
func TestALoadWhereEveryCheckoutFailsExitsOne(t *testing.T) {
	ready, flags := startHandoff(t)
	gw, refused := failingCheckoutGateway(t, ready.GatewayAddr)
	for _, mode := range [][]string{{"-orders", "4"}, {"-duration", "2s"}} {
		args := append([]string{"load", "-quiet", "-basket", "-shoppers", "2", "-inventory", ready.ServiceAddrs[stack.TargetInventory]}, mode...)
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append(args, withGateway(flags, gw)...), noEnv, &stdout, &stderr)
		t.Logf("%v: exit %d, %d Checkout calls refused\n%s", mode, code, refused.Load(), stdout.String())
		if code != 1 || !strings.Contains(stderr.String(), "measured nothing") {
			t.Errorf("load %v with every Checkout failing (%d refused, 0 orders placed) exited %d, %q; want 1 saying it measured nothing", mode, refused.Load(), code, stderr.String())
		}
	}
}

// Terminals are registered before the clock for the 50 stores nearest the centre; an order
// confirmed at any other store (a chain with more stores in the area) gets its store a terminal
// then, and is taken in hand, ticketed and collected like the others. Before, it timed out
// CONFIRMED and counted as an error. Its units are checked against the store's stock, taken
// before the clock with that of every store within the shoppers' reach.
func TestAnOrderAtAStoreBeyondTheNearest50IsTakenInHand(t *testing.T) {
	ready, flags := startHandoff(t)
	ctx, cc := inventoryAdmin(t, ready, flags)
	locator := inventoryv1.NewStoreLocatorServiceClient(cc)
	admin := inventoryv1.NewInventoryAdminServiceClient(cc)
	// A copy of an open store, 0.4° north of the city (about 45 km): the chain's 51st store
	// by distance from the centre, so not among the 50 a load run connects terminals for.
	found, err := locator.FindStores(ctx, &inventoryv1.FindStoresRequest{Location: load.DemoCityCentre, RadiusMeters: 100_000, MaxResults: 1})
	if err != nil || len(found.GetStores()) == 0 {
		t.Fatalf("an open store: %v %v", found, err)
	}
	st := found.GetStores()[0].GetStore()
	st.Id, st.Name = "north-01", "North"
	st.Location = &commonv1.LatLng{Latitude: load.DemoCityCentre.GetLatitude() + 0.4, Longitude: load.DemoCityCentre.GetLongitude()}
	st.OpenStatus, st.Version, st.CreateTime, st.UpdateTime = nil, 0, nil, nil
	if _, err := admin.CreateStore(ctx, &inventoryv1.CreateStoreRequest{Store: st}); err != nil {
		t.Fatalf("create store: %v", err)
	}
	if _, err := admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: st.Id, Sku: "LATTE-16", OnHand: 50, IdempotencyKey: "north-stock"}); err != nil {
		t.Fatalf("stock: %v", err)
	}

	cfg := loadConfig(t, ready, flags, newTransport())
	// Shoppers stand at the new store; terminals are for the 50 stores nearest the city centre,
	// as a run without -near has them.
	cfg.Near, cfg.Centre = st.Location, load.DemoCityCentre
	cfg.Shoppers, cfg.Orders, cfg.HotSKU, cfg.Basket, cfg.OrderTimeout = 1, 2, "LATTE-16", true, 8*time.Second
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	summary := summaryOf(res)
	t.Logf("summary:\n%s", summary)
	if res.Confirmed == 0 {
		t.Fatalf("no order was confirmed at the new store; the scenario did not happen")
	}
	if res.OrdersWithTicket != res.Confirmed || res.Collected != res.Confirmed || len(res.Errors) != 0 {
		t.Errorf("%d confirmed at a store beyond the first 50: %d with a ticket, %d collected, errors %v; want every one taken in hand by a terminal registered for the store",
			res.Confirmed, res.OrdersWithTicket, res.Collected, res.Errors)
	}
	// Its availability was taken before the clock too (the stock of every store within the
	// pickup radius of the shoppers is), so its units are checked against it: nothing was
	// oversold, and the run is sound. (Before, it was counted unchecked and the run failed.)
	if res.UncheckedUnits != 0 || res.StoresSnapshotted != 51 || !res.Sound() {
		t.Errorf("unchecked units %d, %d stores' stock taken, unsound: %q; want the new store's stock taken too and the run sound", res.UncheckedUnits, res.StoresSnapshotted, res.Unsound())
	}
}

// Rates count only what happened within the window, checkouts/s too: checkouts answered after
// it (each here answered 1.5 s late, the window 1 s) are not in it.
func TestCheckoutsPerSecondCountsOnlyCheckoutsAnsweredInTheWindow(t *testing.T) {
	ready, flags := startHandoff(t)
	gw := proxyTo(t, ready.GatewayAddr, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasSuffix(r.URL.Path, "/Checkout") {
			time.Sleep(1500 * time.Millisecond) // every checkout is answered after the 1 s window
		}
		next.ServeHTTP(w, r)
	})
	cfg := loadConfig(t, ready, flags, newTransport())
	cfg.Endpoints.GatewayURL = gw
	cfg.Shoppers, cfg.Duration, cfg.Basket, cfg.MaxInFlight = 2, time.Second, true, 1
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("window %.2fs: checkouts %d (answered %d), orders/s %.2f, checkouts/s %.2f", res.WindowSeconds, res.Checkouts, res.CheckoutLatency.Count, res.OrdersPerSecond, res.CheckoutsPerSecond)
	if res.CheckoutLatency.Count == 0 {
		t.Fatal("no checkout answered")
	}
	if res.CheckoutsPerSecond != 0 {
		t.Errorf("every checkout was answered after the %.1fs window, yet checkouts/s = %.2f (orders/s %.2f)", res.WindowSeconds, res.CheckoutsPerSecond, res.OrdersPerSecond)
	}
}
