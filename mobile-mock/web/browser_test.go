package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/terminal"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pageResults is window.results of the page, as drive.mjs prints it.
type pageResults struct {
	Products []string `json:"products"`
	Store    *struct {
		ID             string  `json:"id"`
		Name           string  `json:"name"`
		DistanceMeters float64 `json:"distanceMeters"`
	} `json:"store"`
	Order *struct {
		ID         string `json:"id"`
		State      string `json:"state"`
		StoreID    string `json:"storeId"`
		PickupCode string `json:"pickupCode"`
	} `json:"order"`
	Updates []struct {
		State string `json:"state"`
		From  string `json:"from"`
		To    string `json:"to"`
	} `json:"updates"`
	TextModeStates []string `json:"textModeStates"`
	FinalState     string   `json:"finalState"`
	Done           bool     `json:"done"`
	Error          string   `json:"error"`
}

type driveEvent struct {
	Event   string      `json:"event"`
	Message string      `json:"message"`
	Results pageResults `json:"results"`
	DOM     struct {
		Order    string   `json:"order"`
		Products int      `json:"products"`
		Log      []string `json:"log"`
	} `json:"dom"`
}

// A real browser shops through the gateway: headless Chromium loads the page from one origin
// and calls the gateway on another (CORS allows exactly the page's origin), over gRPC-web with
// connect-web and protoc-gen-es code. It lists products, checks out, and its WatchOrder stream
// shows the order going through PREPARING and READY to COLLECTED as a terminal of the store
// works it through the pos-adapter. The same order is watched at once with the official
// gRPC-Web client (grpc-web on npm) in its default text mode, which must see it too.
func TestBrowserListsProductsChecksOutAndWatchesTheOrderOverGRPCWeb(t *testing.T) {
	chromium := findChromium(t)
	node := findNode(t)
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ensureNodeModules(t, dir, node)
	bundle := buildPage(t, dir, node)

	// The page's own origin: index.html from here, the bundle from the test's build.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, filepath.Join(dir, "index.html")) })
	mux.HandleFunc("GET /main.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, bundle) })
	page := httptest.NewServer(mux)
	defer page.Close()

	ready := stacktest.Start(t, func(c *stack.Config) { c.AllowedOrigins = []string{page.URL} })
	gatewayURL := "http://" + ready.GatewayAddr
	if strings.TrimPrefix(page.URL, "http://") == ready.GatewayAddr {
		t.Fatal("the page and the gateway share an origin; CORS would not be exercised")
	}
	customer, err := ready.Keys.Issue(auth.Principal{Subject: "browser-shopper", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ready.Keys.Issue(auth.Principal{Subject: "browser-test", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"gateway": {gatewayURL}, "token": {customer}, "sku": {"LATTE-16"}, "lat": {"47.6145"}, "lng": {"-122.3210"}}
	pageURL := page.URL + "/?" + q.Encode()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "drive.mjs"), pageURL)
	cmd.Dir = dir
	cmd.Env = append(withNode(node), "CHROMIUM="+chromium)
	var browserLog bytes.Buffer
	cmd.Stderr = &browserLog
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			cancel() // do not wait for the driver's own timeout
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("browser console and driver log:\n%s", browserLog.String())
		}
	}()

	var done *driveEvent
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for done == nil && lines.Scan() {
		var ev driveEvent
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("driver printed something that is not an event: %q", lines.Text())
		}
		switch ev.Event {
		case "error":
			t.Fatalf("the browser run failed: %s", ev.Message)
		case "watching":
			r := ev.Results
			if r.Error != "" {
				t.Fatalf("the page failed before its order was confirmed: %s", r.Error)
			}
			if len(r.Products) == 0 {
				t.Fatal("the page listed no products")
			}
			if r.Order == nil || r.Order.State != "CONFIRMED" || r.Order.PickupCode == "" {
				t.Fatalf("checkout in the browser: %+v; want a CONFIRMED order with a pickup code", r.Order)
			}
			// The page is watching: the store's terminal works the order, and the page must see
			// each step happen live.
			workOrder(t, ctx, "http://"+ready.POSAdapterAddr, admin, r.Order.StoreID, r.Order.ID, r.Order.PickupCode)
		case "done":
			done = &ev
		}
	}
	if done == nil {
		t.Fatalf("the driver ended without a result (%v)", lines.Err())
	}
	r := done.Results
	if r.Error != "" {
		t.Fatalf("the page reported an error: %s", r.Error)
	}
	if r.FinalState != "COLLECTED" {
		t.Fatalf("WatchOrder in the browser ended at %q, want COLLECTED; updates %+v", r.FinalState, r.Updates)
	}
	var seen []string
	for _, u := range r.Updates {
		if u.To != "" {
			seen = append(seen, u.To)
		}
	}
	for _, want := range []string{"PREPARING", "READY", "COLLECTED"} {
		if !slices.Contains(seen, want) {
			t.Errorf("the browser's WatchOrder stream never showed the change to %s (it saw %v)", want, seen)
		}
	}
	for _, want := range []string{"READY", "COLLECTED"} {
		if !slices.Contains(r.TextModeStates, want) {
			t.Errorf("the official gRPC-Web client's text-mode watch never showed %s (it saw %v)", want, r.TextModeStates)
		}
	}
	if done.DOM.Products != len(r.Products) || !strings.Contains(done.DOM.Order, "COLLECTED") {
		t.Errorf("the page's DOM shows %d products and order %q; want %d and COLLECTED", done.DOM.Products, done.DOM.Order, len(r.Products))
	}
	t.Logf("browser: %d products; %s at %s (%.0f m); WatchOrder saw %v; in text mode %v", len(r.Products), r.Order.ID, r.Store.Name, r.Store.DistanceMeters, seen, r.TextModeStates)
}

// workOrder plays the store: a terminal registered for it accepts the order, marks it ready and
// hands it over with the shopper's pickup code.
func workOrder(t *testing.T, ctx context.Context, posURL, adminToken, storeID, orderID, code string) {
	t.Helper()
	admin := terminal.NewAdmin(shopper.HTTPClient(4), posURL, adminToken)
	term, err := admin.Register(ctx, storeID, "browser test counter")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := term.Accept(ctx, orderID); err != nil {
		t.Fatalf("accept %s: %v", orderID, err)
	}
	if _, err := term.MarkReady(ctx, orderID); err != nil {
		t.Fatalf("mark %s ready: %v", orderID, err)
	}
	if _, err := term.HandOver(ctx, orderID, code); err != nil {
		t.Fatalf("hand over %s: %v", orderID, err)
	}
}

// findChromium returns the Chromium to drive, or skips, loudly, where there is none: the only
// reason this test may skip (.ci/system-deps installs it where it can).
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	skipLoudly(t, "Chromium is not installed (Debian/Ubuntu: apt-get install chromium; `make test` as root installs it via .ci/system-deps)")
	return ""
}

// findNode returns a Node.js the pinned npm packages run on (20 or newer: playwright-core refuses
// less), as .ci/node finds it: the machine's when new enough, else the pinned one it installs
// into .tmp/node (what `make test` does first). It skips, loudly, only where there is no Node.js
// and no npm to fetch one with; a Node.js too old and none to be had fails, saying what to install.
func findNode(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", ".ci", "node"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		skipLoudly(t, "Node.js is not installed (it runs playwright-core to drive Chromium; install Node.js 20+ with npm): "+strings.TrimSpace(stderr.String()))
	case err != nil:
		t.Fatalf("no Node.js the browser test's npm packages run on: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("%s", strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out))
}

// withNode is the environment with node's directory first on PATH, for the npm packages' scripts
// (#!/usr/bin/env node).
func withNode(node string) []string {
	return append(os.Environ(), "PATH="+filepath.Dir(node)+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func skipLoudly(t *testing.T, why string) {
	t.Helper()
	msg := "\n" + strings.Repeat("!", 78) + "\n!!! BROWSER TEST SKIPPED: " + why + "\n" + strings.Repeat("!", 78)
	os.Stderr.WriteString(msg + "\n")
	t.Skip(msg)
}

// ensureNodeModules installs the pinned npm packages when `make web-deps` has not.
func ensureNodeModules(t *testing.T, dir, node string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		skipLoudly(t, "npm is not installed and mobile-mock/web/node_modules is missing")
	}
	t.Logf("installing mobile-mock/web's npm packages (npm ci)")
	cmd := exec.CommandContext(t.Context(), npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.Env = withNode(node)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}

// buildPage bundles main.ts with esbuild into a temporary main.js.
func buildPage(t *testing.T, dir, node string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "main.js")
	esbuild := filepath.Join(dir, "node_modules", ".bin", "esbuild")
	cmd := exec.CommandContext(t.Context(), esbuild, "main.ts", "--bundle", "--format=esm", "--target=es2022", "--outfile="+out, "--log-level=warning")
	cmd.Dir = dir
	cmd.Env = withNode(node)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("esbuild main.ts: %v\n%s", err, b)
	}
	return out
}
