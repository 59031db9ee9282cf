package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// startHandoff runs the whole system in-process and returns the flags that point mobile-mock
// at it, as a developer's running system would be found: addresses, and the data dir holding
// the development token key.
func startHandoff(t *testing.T) (stack.Ready, []string) {
	t.Helper()
	dataDir := t.TempDir()
	ready := stacktest.Start(t, func(c *stack.Config) { c.DataDir = dataDir })
	return ready, []string{"-gateway", "http://" + ready.GatewayAddr, "-pos", "http://" + ready.POSAdapterAddr, "-data-dir", dataDir}
}

func noEnv(string) string { return "" }

// stockScarce sets sku's stock to units at the first n stores accepting orders now near the
// demo city's centre, through inventory's admin API with a token signed by the system's
// development key (in the -data-dir of flags).
func stockScarce(t *testing.T, ready stack.Ready, flags []string, sku string, units int32, n int) {
	t.Helper()
	ctx, cc := inventoryAdmin(t, ready, flags)
	found, err := inventoryv1.NewStoreLocatorServiceClient(cc).FindStores(ctx, &inventoryv1.FindStoresRequest{
		Location: load.DemoCityCentre, RadiusMeters: 100_000, MaxResults: int32(n)})
	if err != nil || len(found.GetStores()) == 0 {
		t.Fatalf("open stores: %v, %v", found, err)
	}
	admin := inventoryv1.NewInventoryAdminServiceClient(cc)
	for _, m := range found.GetStores() {
		id := m.GetStore().GetId()
		if _, err := admin.SetStock(ctx, &inventoryv1.SetStockRequest{StoreId: id, Sku: sku, OnHand: units, IdempotencyKey: "scarce-" + id}); err != nil {
			t.Fatalf("set %s at %s: %v", sku, id, err)
		}
	}
}

// inventoryAdmin is a connection to inventory's gRPC API and a context carrying an admin token
// signed by the system's development key (in the -data-dir of flags).
func inventoryAdmin(t *testing.T, ready stack.Ready, flags []string) (context.Context, *grpc.ClientConn) {
	t.Helper()
	token := adminToken(t, flags)
	cc, err := grpc.NewClient(ready.ServiceAddrs[stack.TargetInventory], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token), cc
}

// adminToken is an admin token signed by the system's development key (in the -data-dir of
// flags).
func adminToken(t *testing.T, flags []string) string {
	t.Helper()
	keys, err := system.Keys("", flags[slices.Index(flags, "-data-dir")+1])
	if err != nil {
		t.Fatal(err)
	}
	token, err := keys.Issue(auth.Principal{Subject: "test", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// available is how much of sku the stores a load run finds (the 50 nearest the demo city's
// centre) have available in all, as inventory says.
func available(t *testing.T, ready stack.Ready, flags []string, sku string) int64 {
	t.Helper()
	ctx, cc := inventoryAdmin(t, ready, flags)
	locator := inventoryv1.NewStoreLocatorServiceClient(cc)
	found, err := locator.FindStores(ctx, &inventoryv1.FindStoresRequest{
		Location: load.DemoCityCentre, RadiusMeters: 100_000, MaxResults: 50, IncludeNotAccepting: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, m := range found.GetStores() {
		res, err := locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: m.GetStore().GetId(), Skus: []string{sku}})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.GetAvailability() {
			n += int64(a.GetAvailable())
		}
	}
	return n
}

// The demo plays one order from the store search to the hand-over, and says so step by step.
func TestDemoTakesAnOrderFromSearchToCollected(t *testing.T) {
	ready, flags := startHandoff(t)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"demo"}, flags...), noEnv, &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("demo exited %d: %s\n%s", code, stderr.String(), out)
	}
	for _, want := range []string{
		"LATTE-16", "km", // the nearest store with stock, and how far it is
		"subtotal", "CONFIRMED", "pickup code", // cart and checkout
		"ticket #", "NEW_ORDER", "AcceptOrder → PREPARING", "MarkReady → READY", // the terminal
		"CONFIRMED → PREPARING", "PREPARING → READY", "READY → COLLECTED", // the shopper's WatchOrder
		"COLLECTED at",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's story lacks %q:\n%s", want, out)
		}
	}
	t.Logf("demo output:\n%s", out)
	// The demo's terminal is revoked as it ends: against a running system, the store's list
	// filled with live terminals whose credentials nobody held.
	if n := liveMockTerminals(t, ready, flags); n != 0 {
		t.Errorf("%d mobile-mock terminals still live after the demo ended", n)
	}
}

// The demo fails, and says why, when no store can fill the cart.
func TestDemoExitsNonZeroWhenNoStoreHasTheItems(t *testing.T) {
	_, flags := startHandoff(t)
	var stdout, stderr bytes.Buffer
	// No store is within reach of the middle of the Pacific.
	code := run(t.Context(), append([]string{"demo", "-near", "0,-140"}, flags...), noEnv, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "no open store") {
		t.Fatalf("demo far from every store exited %d with %q; want non-zero and 'no open store'", code, stderr.String())
	}
}

func loadRun(t *testing.T, ready stack.Ready, flags []string, args ...string) (*load.Result, string, string) {
	t.Helper()
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "results.json"), filepath.Join(dir, "latency.svg")
	args = append([]string{"load", "-quiet", "-inventory", ready.ServiceAddrs[stack.TargetInventory], "-out", jsonPath, "-histogram", svgPath}, args...)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append(args, flags...), noEnv, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("load exited %d: %s\n%s", code, stderr.String(), stdout.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res load.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results JSON: %v", err)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("latency histogram is not well-formed SVG: %v", err)
		}
	}
	return &res, stdout.String(), string(svg)
}

// A short load run takes orders through their whole life with terminals at the stores,
// measures them, and finds nothing oversold, by its own count and by inventory's.
func TestLoadRunsOrdersToCollectedAndMeasuresThem(t *testing.T) {
	ready, flags := startHandoff(t)
	res, summary, svg := loadRun(t, ready, flags, "-shoppers", "4", "-duration", "3s")
	t.Logf("summary:\n%s", summary)
	if res.OrdersWithTicket == 0 || res.Collected == 0 || res.OrdersPerSecond <= 0 || res.CollectedPerSecond <= 0 {
		t.Errorf("no order went through: %d with a ticket, %d collected", res.OrdersWithTicket, res.Collected)
	}
	// orders/s can be worked out again from the results: the orders ticketed within the window
	// over the window.
	if res.OrdersInWindow == 0 || res.OrdersInWindow > res.OrdersWithTicket || res.OrdersPerSecond != float64(res.OrdersInWindow)/res.OrdersWindowSeconds {
		t.Errorf("orders/s %.3f from %d of %d orders ticketed within %.3fs", res.OrdersPerSecond, res.OrdersInWindow, res.OrdersWithTicket, res.OrdersWindowSeconds)
	}
	// So can collected/s and checkouts/s: their counts were in neither the results nor the
	// summary ("(N in all)" took in the orders finished after the window).
	for _, rate := range []struct {
		name      string
		perSecond float64
		window    float64
		count     uint64
	}{
		{"collected/s", res.CollectedPerSecond, res.CollectedWindowSeconds, res.CollectedInWindow},
		{"checkouts/s", res.CheckoutsPerSecond, res.CheckoutsWindowSeconds, res.CheckoutsInWindow},
	} {
		if rate.count == 0 || math.Abs(rate.perSecond*rate.window-float64(rate.count)) > 0.01 {
			t.Errorf("%s %.3f over %.3fs is not its count in the window, %d", rate.name, rate.perSecond, rate.window, rate.count)
		}
	}
	if want := fmt.Sprintf("(%d in the window, %d in all)", res.CollectedInWindow, res.Collected); !strings.Contains(summary, want) {
		t.Errorf("the summary does not give collected/s's count as %q", want)
	}
	if n := liveMockTerminals(t, ready, flags); n != 0 {
		t.Errorf("%d mobile-mock terminals still live after the load ended", n)
	}
	if res.CheckoutLatency.Count == 0 || res.CheckoutLatency.P99MS <= 0 || res.ConfirmedToTicket.Count == 0 {
		t.Errorf("latencies not measured: checkout %+v, confirmed→ticket %+v", res.CheckoutLatency, res.ConfirmedToTicket)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors in a quiet run: %v", res.Errors)
	}
	if !res.Sound() {
		t.Errorf("oversold %d, unchecked %d units, invariants %+v", res.OversoldUnits, res.UncheckedUnits, res.Invariants)
	}
	for _, want := range []string{"orders/s", "collected/s", "p99", "oversold units", "inventory check   OK"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if !strings.Contains(svg, "<rect") || !strings.Contains(svg, "p99") {
		t.Error("the histogram has no bars or no p99 mark")
	}
}

// With -basket each shopper sends its cart whole: one CreateCart with the lines and the
// pickup choice, then the checkout, and every order still goes through its whole life.
func TestLoadWithBasketsMakesEachCartInOneCall(t *testing.T) {
	ready, flags := startHandoff(t)
	res, summary, _ := loadRun(t, ready, flags, "-shoppers", "2", "-orders", "8", "-basket")
	t.Logf("summary:\n%s", summary)
	if !res.Basket || !strings.Contains(summary, "sent whole in one CreateCart") {
		t.Errorf("the results do not say the carts were sent whole:\n%s", summary)
	}
	if res.Checkouts != 8 || res.Confirmed == 0 || res.Confirmed+res.Rejected != 8 || res.Collected != res.Confirmed || len(res.Errors) != 0 {
		t.Errorf("8 checkouts from whole carts: %d checkouts, %d confirmed, %d rejected, %d collected, errors %v",
			res.Checkouts, res.Confirmed, res.Rejected, res.Collected, res.Errors)
	}
	for _, rpc := range []string{"AddLine", "SetPickup"} {
		if _, ok := res.Calls[rpc]; ok {
			t.Errorf("%s was called; whole carts need only CreateCart and Checkout", rpc)
		}
	}
	if res.Calls["CreateCart"].Count != 8 {
		t.Errorf("CreateCart calls: %+v, want 8", res.Calls["CreateCart"])
	}
	if !res.Sound() {
		t.Errorf("oversold %d, unchecked %d units, invariants %+v", res.OversoldUnits, res.UncheckedUnits, res.Invariants)
	}
}

// Every shopper after the same scarce SKU: some are turned away, none gets stock that was not
// there.
func TestLoadOnAScarceHotSKUOversellsNothing(t *testing.T) {
	ready, flags := startHandoff(t)
	// Cardamom buns are out at most stores and scarce at the rest (internal/demo), but the
	// stores open now may have none: 2 are put at each of three open stores, so that some
	// checkouts get them and most are turned away, whatever the hour.
	stockScarce(t, ready, flags, "CARDBUN", 2, 3)
	res, summary, _ := loadRun(t, ready, flags, "-shoppers", "8", "-orders", "60", "-hot-sku", "CARDBUN")
	t.Logf("summary:\n%s", summary)
	if res.Checkouts != 60 || res.Confirmed+res.Rejected != res.Checkouts {
		t.Errorf("%d checkouts: %d confirmed + %d rejected; want 60 all answered", res.Checkouts, res.Confirmed, res.Rejected)
	}
	// Both sides of the race for the scarce stock were reached: some got it, some were turned
	// away (the demo chain has fewer buns than 60 checkouts want).
	if res.Confirmed == 0 || res.Rejected == 0 {
		t.Errorf("%d confirmed, %d rejected; want some of each for a scarce SKU", res.Confirmed, res.Rejected)
	}
	if !res.Sound() {
		t.Errorf("oversold %d units (%+v), unchecked %d; invariants %+v", res.OversoldUnits, res.Oversold, res.UncheckedUnits, res.Invariants)
	}
}

// -spawn needs nothing running: it starts Handoff in-process (here on the test's PostgreSQL),
// loads it and stops it again; this is what `make bench` runs.
func TestLoadSpawnsItsOwnHandoff(t *testing.T) {
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "results.json")
	args := []string{"load", "-spawn", "-database-url", testenv.FreshDatabaseURL(t), "-shoppers", "2", "-orders", "6", "-quiet", "-out", out}
	if code := run(t.Context(), args, noEnv, &stdout, &stderr); code != 0 {
		t.Fatalf("load -spawn exited %d: %s\n%s", code, stderr.String(), stdout.String())
	}
	var res load.Result
	if b, err := os.ReadFile(out); err != nil || json.Unmarshal(b, &res) != nil {
		t.Fatalf("results: %v\n%s", err, b)
	}
	if res.MaxInFlight != 4 {
		t.Errorf("orders open per shopper at most: %d, want the default 4", res.MaxInFlight)
	}
	if res.Checkouts != 6 || res.Confirmed+res.Rejected != 6 || res.Collected != res.Confirmed || !res.Invariants.OK {
		t.Errorf("6 checkouts on a spawned Handoff: %d checkouts, %d confirmed, %d rejected, %d collected, invariants %+v",
			res.Checkouts, res.Confirmed, res.Rejected, res.Collected, res.Invariants)
	}
	if !strings.Contains(stderr.String(), "Handoff ready") {
		t.Errorf("no word of the system starting:\n%s", stderr.String())
	}
	// The chain keeps late-morning hours: more stores take orders than the three open all night,
	// and the results say how many did.
	if !strings.Contains(stderr.String(), "keeps its stores' hours in Etc/GMT") || res.StoresAccepting <= 3 || res.StoresAccepting > res.Stores {
		t.Errorf("%d of %d stores accepting orders; want the chain in a late-morning zone, most of them open:\n%s", res.StoresAccepting, res.Stores, stderr.String())
	}
	if !strings.Contains(stdout.String(), fmt.Sprintf("%d of them taking orders", res.StoresAccepting)) {
		t.Errorf("the summary does not say how many stores took orders:\n%s", stdout.String())
	}
	var usage bytes.Buffer
	if code := run(t.Context(), []string{"load", "-spawn", "-demo-hours", "noon"}, noEnv, &usage, &usage); code != 2 {
		t.Errorf("-demo-hours noon exited %d, want 2 (a usage error)", code)
	}
}

// loadConfig is a load run against the system of startHandoff, its calls going through
// transport.
func loadConfig(t *testing.T, ready stack.Ready, flags []string, transport http.RoundTripper) load.Config {
	t.Helper()
	keys, err := system.Keys("", flags[slices.Index(flags, "-data-dir")+1])
	if err != nil {
		t.Fatal(err)
	}
	return load.Config{
		Endpoints: system.Endpoints{
			GatewayURL: "http://" + ready.GatewayAddr, POSURL: "http://" + ready.POSAdapterAddr,
			InventoryAddr: ready.ServiceAddrs[stack.TargetInventory], Keys: keys,
		},
		HTTPClient: &http.Client{Transport: transport},
	}
}

func newTransport() http.RoundTripper { return http.DefaultTransport.(*http.Transport).Clone() }

// refusingCarts is a way to the gateway on which CreateCart fails as if the edge were down
// (every one, or the first first), counted; every other call goes through.
type refusingCarts struct {
	http.RoundTripper
	first   int64 // refuse the first this many (0: all), or
	nth     int64 // only the nth
	carts   atomic.Int64
	refused atomic.Int64
}

func (c *refusingCarts) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/CreateCart") {
		n := c.carts.Add(1)
		// By the call's own number: two shoppers reading refused at once both fell under first.
		if c.nth > 0 && n == c.nth || c.nth == 0 && (c.first == 0 || n <= c.first) {
			c.refused.Add(1)
			return nil, errors.New("connection refused (the test's edge is down)")
		}
	}
	return c.RoundTripper.RoundTrip(req)
}

// While the gateway refuses, shoppers wait longer and longer before their next try instead of
// calling again at once, which for as long as an edge is down would hammer it with thousands
// of calls a second.
func TestLoadShoppersBackOffWhileCallsFail(t *testing.T) {
	ready, flags := startHandoff(t)
	carts := &refusingCarts{RoundTripper: newTransport()}
	const shoppers, window = 4, 2 * time.Second
	cfg := loadConfig(t, ready, flags, carts)
	cfg.Shoppers, cfg.Duration = shoppers, window
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	// Each shopper's waits from 50 ms doubling to 2 s (each at least half its nominal length)
	// allow at most about nine tries in 2 s; calling again at once makes hundreds.
	n := carts.refused.Load()
	if n == 0 || n > shoppers*12 {
		t.Errorf("%d CreateCart calls refused from %d shoppers in %v; want some, and at most %d", n, shoppers, window, shoppers*12)
	}
	if res.Checkouts != 0 || len(res.Errors) == 0 {
		t.Errorf("with every cart refused: %d checkouts, errors %v", res.Checkouts, res.Errors)
	}
}

// -orders N makes N checkouts: an order whose cart could not be made is tried again and is not
// one of them. A run whose carts all fail gives up, and says so, rather than trying for ever.
func TestLoadOrdersCountsCheckoutsMadeAndGivesUpWhenNoneCanBe(t *testing.T) {
	ready, flags := startHandoff(t)
	carts := &refusingCarts{RoundTripper: newTransport(), first: 3}
	cfg := loadConfig(t, ready, flags, carts)
	cfg.Shoppers, cfg.Orders, cfg.Basket = 2, 4, true
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if carts.refused.Load() != 3 || res.Checkouts != 4 || res.Calls["CreateCart"].Count != 4 || res.GaveUp != "" {
		t.Errorf("-orders 4 with the first 3 carts refused: %d refused, %d checkouts, %d carts made, gave up %q; want 3, 4, 4 and not given up",
			carts.refused.Load(), res.Checkouts, res.Calls["CreateCart"].Count, res.GaveUp)
	}

	cfg = loadConfig(t, ready, flags, &refusingCarts{RoundTripper: newTransport()})
	cfg.Shoppers, cfg.Orders, cfg.Basket, cfg.GiveUpAfter = 2, 4, true, time.Second
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan *load.Result, 1)
	go func() {
		res, err := load.Run(ctx, cfg)
		if err != nil {
			t.Errorf("load: %v", err)
		}
		done <- res
	}()
	select {
	case res = <-done:
	case <-time.After(15 * time.Second):
		cancel()
		<-done
		t.Fatal("-orders 4 with every cart refused still running after 15 s (giving up after 1 s without a checkout)")
	}
	if res == nil {
		return
	}
	summary := summaryOf(res)
	if res.Checkouts != 0 || res.OrdersAsked != 4 || res.GaveUp == "" || !strings.Contains(summary, "GAVE UP: 0 of the 4 checkouts asked") {
		t.Errorf("every cart refused: %d checkouts of %d, gave up %q; summary:\n%s", res.Checkouts, res.OrdersAsked, res.GaveUp, summary)
	}
}

// losingCheckouts is a way to the gateway on which the answers to the Checkout calls numbered
// from lose[0] to lose[1] (from 1, in the order they are sent) are lost after the gateway
// has taken them: the order is made, the shopper never learns of it. With unsent, those calls
// never reach the gateway; with noLookups, every ListOrders fails as well.
type losingCheckouts struct {
	http.RoundTripper
	lose              [2]int64
	unsent, noLookups bool
	calls             atomic.Int64
}

func (c *losingCheckouts) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.noLookups && strings.HasSuffix(req.URL.Path, "/ListOrders") {
		return nil, errors.New("connection refused (the test's edge is down)")
	}
	if !strings.HasSuffix(req.URL.Path, "/Checkout") {
		return c.RoundTripper.RoundTrip(req)
	}
	n := c.calls.Add(1)
	lost := n >= c.lose[0] && n <= c.lose[1]
	if lost && c.unsent {
		return nil, errors.New("connection refused (the test's edge is down)")
	}
	res, err := c.RoundTripper.RoundTrip(req)
	if err != nil || !lost {
		return res, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return nil, errors.New("connection reset (the test lost the answer)")
}

// An order whose checkout's answer was lost, every try, was made all the same: its units are
// counted, from its ticket at the terminal, and the run's count of units confirmed is what
// inventory lost.
func TestLoadCountsTheUnitsOfAnOrderWhoseCheckoutGotNoAnswer(t *testing.T) {
	ready, flags := startHandoff(t)
	const sku = "LATTE-16"
	before := available(t, ready, flags, sku)
	// One shopper checks out one after the other: calls 2 to 4 are the second checkout's
	// three tries.
	cfg := loadConfig(t, ready, flags, &losingCheckouts{RoundTripper: newTransport(), lose: [2]int64{2, 4}})
	cfg.Shoppers, cfg.Orders, cfg.HotSKU, cfg.Basket = 1, 3, sku, true
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	summary := summaryOf(res)
	t.Logf("summary:\n%s", summary)
	sold := before - available(t, ready, flags, sku)
	if sold != 3 || res.ConfirmedUnits != sold || res.Confirmed != 2 || res.ConfirmedUnanswered != 1 || res.Errors["Checkout unavailable"] != 1 {
		t.Errorf("3 checkouts, the second's answer lost: inventory lost %d units, the run counted %d; %d confirmed, %d confirmed without an answer, errors %v; want 3, 3, 2, 1 and one Checkout unavailable",
			sold, res.ConfirmedUnits, res.Confirmed, res.ConfirmedUnanswered, res.Errors)
	}
	if !res.Sound() {
		t.Errorf("oversold %d, unchecked %d units, %d checkouts unknown, invariants %+v", res.OversoldUnits, res.UncheckedUnits, res.UnknownCheckouts, res.Invariants)
	}
}

// A checkout that got no answer and no ticket is looked up after the run: one that made no
// order leaves the run sound; one that cannot be looked up leaves it unchecked, never sound.
func TestLoadLooksUpCheckoutsThatGotNoAnswer(t *testing.T) {
	ready, flags := startHandoff(t)
	for _, lookups := range []bool{true, false} {
		cfg := loadConfig(t, ready, flags, &losingCheckouts{RoundTripper: newTransport(), lose: [2]int64{1, 3}, unsent: true, noLookups: !lookups})
		cfg.Shoppers, cfg.Orders, cfg.Basket = 1, 1, true
		res, err := load.Run(t.Context(), cfg)
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		summary := summaryOf(res)
		unknown := 1
		if lookups {
			unknown = 0
		}
		if res.Checkouts != 1 || res.ConfirmedUnits != 0 || res.UnknownCheckouts != unknown || res.Sound() != lookups ||
			strings.Contains(summary, "NOT CHECKED") == lookups {
			t.Errorf("a checkout never sent, looked up after: %v: %d checkouts, %d units, %d unknown, sound %v; summary:\n%s",
				lookups, res.Checkouts, res.ConfirmedUnits, res.UnknownCheckouts, res.Sound(), summary)
		}
	}
}

// slowHandOvers is a way to the pos-adapter on which every HandOver waits delay first: the
// shoppers' pickups, and so a run of a number of orders, end that much later.
// A wait with no checkout made, every order of the run still in its pickup, ended by one
// refused cart is no outage: the run goes on and makes every checkout asked for.
func TestLoadOrdersDoesNotGiveUpOnOneFailureAfterALongPickup(t *testing.T) {
	ready, flags := startHandoff(t)
	carts := &refusingCarts{RoundTripper: newTransport(), nth: 2}
	cfg := loadConfig(t, ready, flags, &slowHandOvers{RoundTripper: carts, delay: 2 * time.Second})
	cfg.Shoppers, cfg.Orders, cfg.Basket, cfg.MaxInFlight, cfg.GiveUpAfter = 1, 3, true, 1, time.Second
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if carts.refused.Load() != 1 || res.GaveUp != "" || res.Checkouts != 3 {
		t.Fatalf("-orders 3, one order after another with 2 s hand-overs, the second cart refused: %d refused, gave up %q, %d checkouts; want 1, not given up, 3",
			carts.refused.Load(), res.GaveUp, res.Checkouts)
	}
}

// summaryOf is the summary the load command prints for res.
func summaryOf(res *load.Result) string {
	var b bytes.Buffer
	res.PrintSummary(&b)
	return b.String()
}

type slowHandOvers struct {
	http.RoundTripper
	delay time.Duration
}

func (s *slowHandOvers) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/HandOver") {
		select {
		case <-time.After(s.delay):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return s.RoundTripper.RoundTrip(req)
}

// With -orders, orders/s is over the time from the start to the last ticket received, not until
// the last pickup has ended: pickups 3 s slow do not dilute it.
func TestLoadOrdersRatesEndAtTheirLastEvent(t *testing.T) {
	ready, flags := startHandoff(t)
	const delay = 3 * time.Second
	cfg := loadConfig(t, ready, flags, &slowHandOvers{RoundTripper: newTransport(), delay: delay})
	cfg.Shoppers, cfg.Orders, cfg.Basket = 2, 4, true
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	summary := summaryOf(res)
	t.Logf("summary:\n%s", summary)
	n := float64(res.OrdersWithTicket)
	if res.OrdersWithTicket == 0 || res.Collected != res.OrdersWithTicket || res.WindowSeconds < delay.Seconds() {
		t.Fatalf("%d orders with a ticket, %d collected, in %.2fs; want all collected after the %v hand-overs", res.OrdersWithTicket, res.Collected, res.WindowSeconds, delay)
	}
	// Every ticket is in well before the first hand-over is through.
	if res.OrdersPerSecond < n/(res.WindowSeconds-delay.Seconds()+1) {
		t.Errorf("orders/s %.2f for %d orders with a ticket in a run of %.2fs with hand-overs %v slow: the window includes the pickups", res.OrdersPerSecond, res.OrdersWithTicket, res.WindowSeconds, delay)
	}
	if res.OrdersWindowSeconds <= 0 || res.OrdersWindowSeconds > res.WindowSeconds-delay.Seconds()+1 || res.OrdersPerSecond != n/res.OrdersWindowSeconds ||
		res.CollectedWindowSeconds < delay.Seconds() || res.CollectedPerSecond != float64(res.Collected)/res.CollectedWindowSeconds ||
		!strings.Contains(summary, "to the last ticket") {
		t.Errorf("windows: orders %.2fs, collected %.2fs, run %.2fs; rates %.2f, %.2f; summary:\n%s",
			res.OrdersWindowSeconds, res.CollectedWindowSeconds, res.WindowSeconds, res.OrdersPerSecond, res.CollectedPerSecond, summary)
	}
}

// A run interrupted (Ctrl-C) is measured until the interrupt, not over the duration it was
// to have; the orders it cut off are counted apart, not as errors of the system; and the
// checks after the run are still made.
func TestLoadInterruptedIsMeasuredUntilTheInterrupt(t *testing.T) {
	ready, flags := startHandoff(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := loadConfig(t, ready, flags, newTransport())
	cfg.Shoppers, cfg.Duration = 4, 4*time.Second
	cfg.Progress = func(p load.Progress) {
		if p.Elapsed >= time.Second {
			cancel()
		}
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	summary := summaryOf(res)
	t.Logf("summary:\n%s", summary)
	if !res.Interrupted || res.WindowSeconds < 0.9 || res.WindowSeconds > 2.5 || !strings.Contains(summary, "INTERRUPTED after") {
		t.Errorf("a 4 s run interrupted after about 1 s: interrupted %v, window %.2fs", res.Interrupted, res.WindowSeconds)
	}
	if res.OrdersWithTicket == 0 || res.InterruptedOrders == 0 || len(res.Errors) != 0 || res.Failed != 0 {
		t.Errorf("%d orders with a ticket, %d cut off; errors %v (%d); want some of each and no errors", res.OrdersWithTicket, res.InterruptedOrders, res.Errors, res.Failed)
	}
	if !res.Sound() {
		t.Errorf("oversold %d, unchecked %d units, %d checkouts unknown, invariants %+v", res.OversoldUnits, res.UncheckedUnits, res.UnknownCheckouts, res.Invariants)
	}
}

// Interrupted after its window, while its last orders finish, a run keeps its measurement:
// only the drain is cut short.
func TestLoadInterruptedAfterItsWindowKeepsItsMeasurement(t *testing.T) {
	ready, flags := startHandoff(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := loadConfig(t, ready, flags, &slowHandOvers{RoundTripper: newTransport(), delay: 3 * time.Second})
	cfg.Shoppers, cfg.Duration, cfg.Basket = 2, time.Second, true
	cfg.Progress = func(p load.Progress) {
		if p.Elapsed >= 1500*time.Millisecond {
			cancel() // the hand-overs are still under way
		}
	}
	res, err := load.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	summary := summaryOf(res)
	t.Logf("summary:\n%s", summary)
	if res.Interrupted || res.WindowSeconds < 0.95 || res.WindowSeconds > 1.1 || strings.Contains(summary, "INTERRUPTED") {
		t.Errorf("a 1 s run interrupted in its drain: interrupted %v, window %.2fs; want its whole window of 1 s", res.Interrupted, res.WindowSeconds)
	}
	if res.OrdersWithTicket == 0 || res.InterruptedOrders == 0 || len(res.Errors) != 0 {
		t.Errorf("%d orders with a ticket, %d cut off, errors %v; want some of each and no errors", res.OrdersWithTicket, res.InterruptedOrders, res.Errors)
	}
}

// The usage text of demo and load follows the running Handoff's addresses and never prints a
// secret from the environment.
func TestUsageFollowsTheSystemsAddressesAndPrintsNoSecret(t *testing.T) {
	env := map[string]string{
		"HANDOFF_GATEWAY_ADDR": "127.0.0.1:18080", "HANDOFF_POS_ADDR": "127.0.0.1:18090",
		"HANDOFF_JWT_KEYS": "k1:c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVm", "DATABASE_URL": "postgres://u:db-password-7@db/x",
	}
	for _, cmd := range []string{"demo", "load"} {
		var stderr bytes.Buffer
		if code := run(t.Context(), []string{cmd, "-h"}, func(k string) string { return env[k] }, io.Discard, &stderr); code != 0 {
			t.Errorf("%s -h = %d; want 0", cmd, code)
		}
		out := stderr.String()
		for _, want := range []string{"http://127.0.0.1:18080", "http://127.0.0.1:18090"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s -h does not default to the running system's %s:\n%s", cmd, want, out)
			}
		}
		for _, secret := range []string{"c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVm", "db-password-7"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s -h printed the secret %q", cmd, secret)
			}
		}
	}
}

// pendingCheckouts is a way to the gateway and the pos-adapter on which every Checkout's
// answer is turned into PENDING (as when inventory is too slow to answer within the
// checkout), every WatchOrder fails, and no terminal's ticket feed can be followed: the
// shopper never learns that its order was confirmed.
type pendingCheckouts struct{ http.RoundTripper }

func (c pendingCheckouts) RoundTrip(req *http.Request) (*http.Response, error) {
	switch path := req.URL.Path; {
	case strings.HasSuffix(path, "/WatchOrder"), strings.HasSuffix(path, "/StreamTickets"):
		return nil, errors.New("connection reset (the test's network)")
	case !strings.HasSuffix(path, "/Checkout"):
		return c.RoundTripper.RoundTrip(req)
	}
	res, err := c.RoundTripper.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	// A gRPC-web body: a message frame (flag 0, 4-byte length, message), then the trailers'.
	if len(body) < 5 || body[0] != 0 {
		return nil, fmt.Errorf("the test cannot read this Checkout answer (%d bytes)", len(body))
	}
	n := binary.BigEndian.Uint32(body[1:5])
	var msg cartv1.CheckoutResponse
	if err := proto.Unmarshal(body[5:5+n], &msg); err != nil {
		return nil, err
	}
	msg.GetOrder().State = fulfilmentv1.OrderState_ORDER_STATE_PENDING
	out, err := proto.Marshal(&msg)
	if err != nil {
		return nil, err
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(out)))
	res.Body = io.NopCloser(bytes.NewReader(slices.Concat(frame, out, body[5+n:])))
	res.ContentLength = -1
	res.Header.Del("Content-Length")
	return res, nil
}

// An order answered PENDING whose watch then fails, and whose ticket no terminal receives, is
// looked up after the run: it was confirmed, so its units are counted, and the run's count of
// units confirmed is what inventory lost.
func TestLoadLooksUpAnOrderAnsweredPendingWhoseFateItNeverLearnt(t *testing.T) {
	ready, flags := startHandoff(t)
	const sku = "LATTE-16"
	before := available(t, ready, flags, sku)
	cfg := loadConfig(t, ready, flags, pendingCheckouts{newTransport()})
	// The shopper opens its failing watch again until the order's time is up: 4 s, not 30.
	cfg.Shoppers, cfg.Orders, cfg.HotSKU, cfg.Basket, cfg.OrderTimeout = 1, 1, sku, true, 4*time.Second
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	sold := before - available(t, ready, flags, sku)
	if res.Checkouts != 1 || sold != 1 || res.ConfirmedUnits != sold || res.UnknownCheckouts != 0 {
		t.Errorf("1 checkout answered PENDING, confirmed unseen: %d checkouts, inventory lost %d units, the run counted %d, %d unknown; want 1, 1, 1, 0; summary:\n%s",
			res.Checkouts, sold, res.ConfirmedUnits, res.UnknownCheckouts, summaryOf(res))
	}
}
