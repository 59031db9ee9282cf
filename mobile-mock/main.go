// Command mobile-mock is a command-line shopper app for Handoff. It speaks gRPC-web to the
// gateway, as the mobile and web apps do, and plays the stores' terminals through the
// pos-adapter.
//
//	mobile-mock demo [-gateway URL] [-pos URL] [-near LAT,LNG] [-items SKU:QTY,...]
//	mobile-mock load [-shoppers 64] [-duration 20s | -orders N] [-hot-sku LATTE-16] [-out results.json] [-histogram latency.svg]
//
// Both need tokens the running system accepts: they sign them with HANDOFF_JWT_KEYS, or with
// the one-process mode's development key in -data-dir, as `handoff token` does. With -spawn
// they start the whole system in this process first (a fresh data dir, the demo chain), so they
// need nothing running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "time/tzdata" // stores' local times, on machines without tzdata

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/gcpolicy"
	"github.com/handoff-dev/handoff/mobile-mock/journey"
	"github.com/handoff-dev/handoff/mobile-mock/load"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

func main() {
	gcpolicy.Apply(os.Getenv) // a load run with -spawn is the whole system in this process
	// The first SIGINT/SIGTERM ends the run; what comes after it (the figures, the after-run
	// checks, stopping a spawned system) runs on contexts of its own and may take a minute. A
	// second one ends the process at once, killed by that signal (a shell reports 130 for
	// SIGINT, 143 for SIGTERM), as in `handoff`, after the fast cleanups of onAbort (a spawned
	// system's private PostgreSQL and temporary data dir, which would be left behind), cut
	// short by a third.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		sig := <-sigs
		aborting.Store(true)
		cleaned := make(chan struct{})
		go func() {
			onAbort.run()
			close(cleaned)
		}()
		select {
		case <-cleaned:
		case <-sigs:
		}
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			_ = p.Signal(sig)
		}
		time.Sleep(time.Second) // the signal ends the process; should it not, exit as a shell would report it
		if sig == syscall.SIGTERM {
			os.Exit(143)
		}
		os.Exit(130)
	}()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if aborting.Load() {
		select {} // the run failed under the cleanups; the second signal ends the process
	}
	os.Exit(code)
}

// aborting is set once a second signal is taken.
var aborting atomic.Bool

// abortTime bounds the cleanups a second signal still runs before the process ends.
const abortTime = 3 * time.Second

// onAbort holds the cleanups a second signal runs before the process ends at once.
var onAbort abortHooks

// abortHooks are fast, bounded cleanups (each returns within abortTime) of what the process
// would otherwise leave behind on the machine.
type abortHooks struct {
	mu   sync.Mutex
	next int
	fns  map[int]func()
}

// add registers f until the returned remove is called.
func (h *abortHooks) add(f func()) (remove func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fns == nil {
		h.fns = map[int]func(){}
	}
	id := h.next
	h.next++
	h.fns[id] = f
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.fns, id)
	}
}

// run runs every registered cleanup side by side and returns when all have, or after
// abortTime.
func (h *abortHooks) run() {
	h.mu.Lock()
	var wg sync.WaitGroup
	for _, f := range h.fns {
		wg.Go(f)
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(abortTime):
	}
}

const usage = `Usage:
  mobile-mock demo [flags]   one shopper's whole journey, step by step; exits 0 only when the order is COLLECTED
  mobile-mock load [flags]   many concurrent shoppers and the stores' terminals; prints a summary
Run 'mobile-mock demo -h' or 'mobile-mock load -h' for the flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// A spawned system logs to stderr from its own goroutines while the command prints: each
	// stream takes one write at a time, whatever writer it is given.
	stdout, stderr = &oneAtATime{w: stdout}, &oneAtATime{w: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], getenv, stdout, stderr)
	case "load":
		return runLoad(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mobile-mock: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// oneAtATime passes writes on to w one at a time.
type oneAtATime struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *oneAtATime) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Write(p)
}

// target is where the system is, or how to start one: the flags demo and load share.
type target struct {
	gateway, pos, inventory string
	dataDir, jwtKeys        string
	spawn                   bool
	databaseURL             string
	demoZone                string // with spawn: the demo chain's stores' zone ("": their own)
	getenv                  func(string) string
}

// register adds the target's flags. Their defaults follow the running Handoff's variables
// (HANDOFF_GATEWAY_ADDR, …), except the secret ones, read only when used: the usage text
// prints every default.
func (t *target) register(fs *flag.FlagSet, getenv func(string) string) {
	t.getenv = getenv
	fs.StringVar(&t.gateway, "gateway", "http://"+or(getenv("HANDOFF_GATEWAY_ADDR"), "127.0.0.1:8080"), "the gateway's URL (gRPC-web)")
	fs.StringVar(&t.pos, "pos", "http://"+or(getenv("HANDOFF_POS_ADDR"), "127.0.0.1:8090"), "the pos-adapter's URL")
	fs.StringVar(&t.dataDir, "data-dir", or(getenv("HANDOFF_DATA_DIR"), ".data"), "data dir of the running one-process Handoff, holding its development token key")
	fs.StringVar(&t.jwtKeys, "jwt-keys", "", "token key set kid:base64key[,...] of the running system (default: HANDOFF_JWT_KEYS, else the development key in -data-dir)")
	fs.BoolVar(&t.spawn, "spawn", false, "start the whole system in this process first (fresh data dir, demo chain) instead of using a running one")
	fs.StringVar(&t.databaseURL, "database-url", "", "with -spawn: PostgreSQL to use (default: DATABASE_URL, else a private cluster in the fresh data dir)")
}

// endpoints resolves the target, starting the system when asked to. stop is never nil.
func (t *target) endpoints(ctx context.Context, limits gateway.RateLimits, stderr io.Writer) (system.Endpoints, func(), error) {
	t.jwtKeys, t.databaseURL = or(t.jwtKeys, t.getenv("HANDOFF_JWT_KEYS")), or(t.databaseURL, t.getenv("DATABASE_URL"))
	if !t.spawn {
		keys, err := system.Keys(t.jwtKeys, t.dataDir)
		if err != nil {
			return system.Endpoints{}, func() {}, fmt.Errorf("%w (is Handoff running from this directory? or pass -jwt-keys / -data-dir, or use -spawn)", err)
		}
		return system.Endpoints{GatewayURL: strings.TrimRight(t.gateway, "/"), POSURL: strings.TrimRight(t.pos, "/"), InventoryAddr: t.inventory, Keys: keys}, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "handoff-mobile-mock-")
	if err != nil {
		return system.Endpoints{}, func() {}, err
	}
	// Ended at once by a second signal, the process still stops the system's private
	// PostgreSQL and removes the dir: nothing else would, and a cluster is hundreds of MB.
	forget := onAbort.add(func() {
		if err := system.Discard(dir, abortTime-100*time.Millisecond); err != nil {
			fmt.Fprintf(stderr, "mobile-mock: cleaning up %s: %v\n", dir, err)
		}
	})
	// The private PostgreSQL runs as an unprivileged user when we are root: it must reach its
	// folder inside this one.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		forget()
		return system.Endpoints{}, func() {}, err
	}
	fmt.Fprintf(stderr, "mobile-mock: starting Handoff in this process (data in %s)…\n", dir)
	began := time.Now()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ep, stopSystem, err := system.Spawn(ctx, system.SpawnConfig{DataDir: dir, DatabaseURL: t.databaseURL, RateLimits: limits, Logger: logger, DemoTimeZone: t.demoZone})
	if err != nil {
		os.RemoveAll(dir)
		forget()
		return system.Endpoints{}, func() {}, err
	}
	fmt.Fprintf(stderr, "mobile-mock: Handoff ready in %s: gateway %s · pos-adapter %s\n", time.Since(began).Round(100*time.Millisecond), ep.GatewayURL, ep.POSURL)
	if t.demoZone != "" {
		fmt.Fprintf(stderr, "mobile-mock: %s\n", chainHours(ctx, ep, t.demoZone))
	}
	return ep, func() {
		if err := stopSystem(); err != nil {
			fmt.Fprintf(stderr, "mobile-mock: stopping Handoff: %v\n", err)
		}
		os.RemoveAll(dir)
		forget()
	}, nil
}

func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mobile-mock demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t target
	t.register(fs, getenv)
	near := fs.String("near", "47.6145,-122.3210", "where the shopper stands, LAT,LNG")
	items := fs.String("items", "LATTE-16:2,CROISSANT", "what goes in the cart, SKU[:QTY],...")
	radius := fs.Float64("radius", 0, "store search radius in metres (0: the locator's default, 10 km)")
	customer := fs.String("customer", "", "the shopper's customer id (default: a fresh one)")
	if err := fs.Parse(args); err != nil {
		return exitForParse(err)
	}
	if !validRadius(*radius) {
		fmt.Fprintf(stderr, "mobile-mock demo: -radius %v: want metres, 0 or more\n", *radius)
		return 2
	}
	point, err := parseLatLng(*near)
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock demo: -near: %v\n", err)
		return 2
	}
	wanted, err := journey.ParseItems(*items)
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock demo: -items: %v\n", err)
		return 2
	}
	ep, stop, err := t.endpoints(ctx, gateway.RateLimits{}, stderr)
	defer stop()
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock demo: %v\n", err)
		return 1
	}
	_, err = journey.Run(ctx, journey.Config{Endpoints: ep, Near: point, RadiusMeters: *radius, Items: wanted, Customer: *customer, Out: stdout})
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock demo: %v\n", err)
		return 1
	}
	return 0
}

func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mobile-mock load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t target
	t.register(fs, getenv)
	fs.StringVar(&t.inventory, "inventory", or(getenv("HANDOFF_INVENTORY_ADDR"), "127.0.0.1:9102"), "inventory's gRPC address, for the after-run invariant check (admin token)")
	shoppers := fs.Int("shoppers", 16, "concurrent shoppers")
	inFlight := fs.Int("in-flight", 4, "orders one shopper may have open at once: it checks out again once an order is CONFIRMED while the pickup goes on (1: one whole lifecycle after another)")
	duration := fs.Duration("duration", 20*time.Second, "how long shoppers keep ordering")
	orders := fs.Int("orders", 0, "place this many checkouts in all instead of running for -duration")
	hotSKU := fs.String("hot-sku", "", "every order is one unit of this SKU (e.g. LATTE-16): all shoppers compete for it")
	near := fs.String("near", "", "every shopper orders from this point, LAT,LNG (default: random points over the chain's area)")
	basket := fs.Bool("basket", false, "each shopper sends its cart whole, lines and pickup in one CreateCart, as an app keeping its own basket does (default: one change at a time: CreateCart, AddLine per line, SetPickup)")
	radius := fs.Float64("radius", 25_000, "pickup store search radius in metres")
	out := fs.String("out", "", "write the results as JSON to this file")
	histogram := fs.String("histogram", "", "draw the latency histograms as SVG into this file")
	quiet := fs.Bool("quiet", false, "no live progress line")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process during the run (with -spawn: of the whole system too)")
	hours := fs.String("demo-hours", "busy", "with -spawn: busy keeps the demo chain's store hours in a zone where it is late morning now, so that all its stores take orders whatever the time here; local keeps them in Seattle's, where at night only its three all-night stores do. Only a chain loaded now, into an empty database, takes either: one already in the database (-database-url, DATABASE_URL) keeps its zone, and the run says which")
	if err := fs.Parse(args); err != nil {
		return exitForParse(err)
	}
	switch *hours {
	case "busy":
		t.demoZone = system.LateMorningZone(time.Now())
	case "local":
	default:
		fmt.Fprintf(stderr, "mobile-mock load: -demo-hours %q: want busy or local\n", *hours)
		return 2
	}
	if *shoppers < 1 || (*duration <= 0 && *orders <= 0) {
		fmt.Fprintln(stderr, "mobile-mock load: need -shoppers ≥ 1 and a positive -duration or -orders")
		return 2
	}
	// Refused here, before a system is looked for or spawned: load.Run would refuse a negative
	// -orders only after the set-up, turn an -in-flight below 1 into its default, and run with
	// a negative -radius, every SetPickup then refused.
	if *orders < 0 {
		fmt.Fprintf(stderr, "mobile-mock load: -orders %d: want a number of checkouts, or 0 to run for -duration\n", *orders)
		return 2
	}
	if *inFlight < 1 {
		fmt.Fprintf(stderr, "mobile-mock load: -in-flight %d: want 1 or more\n", *inFlight)
		return 2
	}
	if !validRadius(*radius) {
		fmt.Fprintf(stderr, "mobile-mock load: -radius %v: want metres, 0 or more\n", *radius)
		return 2
	}
	cfg := load.Config{Shoppers: *shoppers, Orders: *orders, HotSKU: strings.TrimSpace(*hotSKU), RadiusMeters: *radius, MaxInFlight: *inFlight, Basket: *basket}
	if *orders == 0 {
		cfg.Duration = *duration
	}
	if *near != "" {
		p, err := parseLatLng(*near)
		if err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: -near: %v\n", err)
			return 2
		}
		cfg.Near = p
	}
	// Output files are checked before the set-up (minutes with -spawn): a path that cannot be
	// written is a bad flag value, found now rather than after the whole run.
	for _, o := range []struct{ flag, path string }{{"-out", *out}, {"-histogram", *histogram}, {"-cpuprofile", *cpuProfile}} {
		if err := checkWritable(o.path); err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: %s: %v\n", o.flag, err)
			return 2
		}
	}
	// A load run is many shoppers on one machine: the gateway's per-caller and per-address
	// limits, meant for one person with an app, are lifted in the system started here. Against
	// a running system every order is placed by a new customer, so per-customer limits do not
	// bite; per-address ones would if they apply to token holders.
	lifted := gateway.RateLimits{PerCaller: 1e9, PerCallerBurst: 1 << 30, PerAddress: 1e9, PerAddressBurst: 1 << 30, Checkout: 1e9, CheckoutBurst: 1 << 30}
	ep, stop, err := t.endpoints(ctx, lifted, stderr)
	defer stop()
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock load: %v\n", err)
		return 1
	}
	cfg.Endpoints = ep
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(stderr, "mobile-mock: "+format+"\n", args...) }
	endProgress := func() {}
	if !*quiet {
		cfg.Progress, endProgress = progressPrinter(stderr)
	}
	// The profile is created only now that the run can start: one that cannot (no system
	// found) leaves an existing profile as it was, and no empty one behind.
	if *cpuProfile != "" {
		profile, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: -cpuprofile: %v\n", err)
			return 1
		}
		defer profile.Close()
		if err := pprof.StartCPUProfile(profile); err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	res, err := load.Run(ctx, cfg)
	endProgress()
	if err != nil {
		fmt.Fprintf(stderr, "mobile-mock load: %v\n", err)
		return 1
	}
	res.PrintSummary(stdout)
	// Every output is written, and the verdict said, whatever fails: one failing write does
	// not cost the others or the word on oversold stock.
	code := 0
	if *out != "" {
		if err := res.WriteJSON(*out); err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: -out: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(stdout, "  results           %s\n", *out)
		}
	}
	if *histogram != "" {
		if err := res.WriteSVG(*histogram); err != nil {
			fmt.Fprintf(stderr, "mobile-mock load: -histogram: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(stdout, "  histogram         %s\n", *histogram)
		}
	}
	if why := verdict(res); why != "" {
		fmt.Fprintf(stderr, "mobile-mock load: %s\n", why)
		code = 1
	}
	return code
}

// verdict says why a finished run does not exit 0; "" when it does.
func verdict(res *load.Result) string {
	switch {
	case !res.Sound():
		return res.Unsound() + " (see the summary)"
	case res.Interrupted:
		return fmt.Sprintf("interrupted after %.1fs; the figures are of the run until then", res.WindowSeconds)
	case res.GaveUp != "":
		// Before Unmeasured: a run that gave up measured nothing either, and this says why.
		return fmt.Sprintf("gave up after %d of the %d checkouts asked: %s", res.Checkouts, res.OrdersAsked, res.GaveUp)
	}
	if why := res.Unmeasured(); why != "" {
		return "the run measured nothing: " + why
	}
	return ""
}

// checkWritable reports whether a file can be written at path ("" is no file), leaving
// nothing behind: a file it had to create is removed again, an existing one is left as is.
func checkWritable(path string) error {
	if path == "" {
		return nil
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if errors.Is(statErr, fs.ErrNotExist) {
		return os.Remove(path)
	}
	return nil
}

// progressPrinter rewrites one status line on a terminal, or prints a line every 5s elsewhere.
// end finishes the status line.
func progressPrinter(w io.Writer) (progress func(load.Progress), end func()) {
	tty := false
	out := w
	if o, ok := out.(*oneAtATime); ok {
		out = o.w
	}
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	printed := false
	end = func() {
		if tty && printed {
			fmt.Fprintln(w)
		}
	}
	return func(p load.Progress) {
		printed = true
		phase := ""
		if p.Draining {
			phase = " (finishing orders in flight)"
		}
		line := fmt.Sprintf("[%5.1fs] checkouts %d · confirmed %d · rejected %d · ticket at terminal %d (%.0f/s now) · collected %d · errors %d · checkout p99 %s%s",
			p.Elapsed.Seconds(), p.Checkouts, p.Confirmed, p.Rejected, p.OrdersWithTicket, p.OrdersPerSecond, p.Collected, p.Errors, p.CheckoutP99.Round(100*time.Microsecond), phase)
		if tty {
			fmt.Fprintf(w, "\r\x1b[K%s", line)
			return
		}
		if int(p.Elapsed.Seconds())%5 == 0 {
			fmt.Fprintln(w, line)
		}
	}, end
}

func parseLatLng(s string) (*commonv1.LatLng, error) {
	lat, lng, ok := strings.Cut(s, ",")
	if !ok {
		return nil, fmt.Errorf("%q: want LAT,LNG", s)
	}
	la, err1 := strconv.ParseFloat(strings.TrimSpace(lat), 64)
	lo, err2 := strconv.ParseFloat(strings.TrimSpace(lng), 64)
	// Written as what is wanted, not what is refused: ParseFloat reads "NaN", which compares
	// false with everything.
	if err := errors.Join(err1, err2); err != nil || !(la >= -90 && la <= 90 && lo >= -180 && lo <= 180) {
		return nil, fmt.Errorf("%q: want LAT,LNG in degrees", s)
	}
	return &commonv1.LatLng{Latitude: la, Longitude: lo}, nil
}

// validRadius reports whether r is a search radius: metres, 0 or more (not NaN or infinite).
func validRadius(r float64) bool { return r >= 0 && !math.IsInf(r, 1) }

func exitForParse(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// chainHours says, as the stores tell it, which zone the demo chain keeps its hours in and how
// many of its stores take orders now. The chain takes the zone asked for (wanted) only when it
// is loaded into an empty database; one already there (-database-url or DATABASE_URL naming a
// database used before) keeps the zone it was first loaded in, and a late-morning promise
// would then be false.
func chainHours(ctx context.Context, ep system.Endpoints, wanted string) string {
	app := shopper.New(http.DefaultClient, ep.GatewayURL, "")
	res, err := app.Locator.FindStores(ctx, connect.NewRequest(&inventoryv1.FindStoresRequest{
		Location: load.DemoCityCentre, RadiusMeters: 100_000, MaxResults: 50, IncludeNotAccepting: true,
	}))
	if err != nil {
		return fmt.Sprintf("could not look at the demo chain's stores: %v", err)
	}
	var zones []string
	accepting := 0
	for _, m := range res.Msg.GetStores() {
		if z := m.GetStore().GetTimeZone(); !slices.Contains(zones, z) {
			zones = append(zones, z)
		}
		if m.GetStore().GetOpenStatus().GetAcceptingOrders() {
			accepting++
		}
	}
	stores := len(res.Msg.GetStores())
	if len(zones) == 1 && zones[0] == wanted {
		return fmt.Sprintf("the demo chain keeps its stores' hours in %s, where it is %s now: %d of its %d stores take orders", wanted, localClock(wanted), accepting, stores)
	}
	clocks := make([]string, len(zones))
	for i, z := range zones {
		clocks[i] = fmt.Sprintf("%s, where it is %s now", z, localClock(z))
	}
	return fmt.Sprintf("the database held the demo chain already: its stores keep their hours in %s, not in %s as asked (-demo-hours), and %d of its %d take orders now; for a fresh database leave out -database-url and DATABASE_URL",
		strings.Join(clocks, "; "), wanted, accepting, stores)
}

// localClock is the time now in zone, "15:04".
func localClock(zone string) string {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return "unknown"
	}
	return time.Now().In(loc).Format("15:04")
}
