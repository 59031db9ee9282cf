package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/mobile-mock/load"
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

// The demo plays one order from the store search to the hand-over, and says so step by step.
func TestDemoTakesAnOrderFromSearchToCollected(t *testing.T) {
	_, flags := startHandoff(t)
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
	if res.CheckoutLatency.Count == 0 || res.CheckoutLatency.P99MS <= 0 || res.ConfirmedToTicket.Count == 0 {
		t.Errorf("latencies not measured: checkout %+v, confirmed→ticket %+v", res.CheckoutLatency, res.ConfirmedToTicket)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors in a quiet run: %v", res.Errors)
	}
	if res.OversoldUnits != 0 || !res.Invariants.Checked || !res.Invariants.OK {
		t.Errorf("oversold %d, invariants %+v", res.OversoldUnits, res.Invariants)
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

// Every shopper after the same scarce SKU: some are turned away, none gets stock that was not
// there.
func TestLoadOnAScarceHotSKUOversellsNothing(t *testing.T) {
	ready, flags := startHandoff(t)
	// Cardamom buns are out at most stores and scarce at the rest (internal/demo).
	res, summary, _ := loadRun(t, ready, flags, "-shoppers", "8", "-orders", "60", "-hot-sku", "CARDBUN")
	t.Logf("summary:\n%s", summary)
	if res.Checkouts != 60 || res.Confirmed+res.Rejected != res.Checkouts {
		t.Errorf("%d checkouts: %d confirmed + %d rejected; want 60 all answered", res.Checkouts, res.Confirmed, res.Rejected)
	}
	if res.OversoldUnits != 0 || !res.Invariants.Checked || !res.Invariants.OK {
		t.Errorf("oversold %d units (%+v); invariants %+v", res.OversoldUnits, res.Oversold, res.Invariants)
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
}
