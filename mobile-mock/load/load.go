// Package load drives a running Handoff with many concurrent shoppers and the stores' terminals
// and measures it. Each shopper, in a loop, fills a cart and checks out (a new customer every
// order, as in real life); once the order is CONFIRMED (or has ended otherwise) the shopper
// starts its next order, while the order's pickup — watching it, handing the pickup code to the
// store when it is ready, seeing it COLLECTED — runs on in its own goroutine. A shopper has at
// most Config.MaxInFlight orders open at once (checkout included) and waits for one to finish
// before starting another, so a slow system is not flooded: the offered load is bounded by
// shoppers × MaxInFlight open orders. With MaxInFlight 1 a shopper's orders are strictly one
// after another, the whole lifecycle each. A simulated terminal per store follows the store's
// ticket feed and accepts and readies every order of the run. Shoppers speak gRPC-web to the
// gateway, terminals gRPC-web to the pos-adapter.
//
// What is measured: checkout latency (the Checkout call, as the shopper sees it), confirmed ->
// ticket-at-terminal latency (the order's CONFIRMED time to the NEW_ORDER ticket arriving at
// the terminal), and the full lifecycle to COLLECTED; orders/s counts checkouts CONFIRMED whose
// ticket reached a terminal within the run's window, collected/s orders seen COLLECTED within
// it. A run of a number of orders (Config.Orders) has no window of its own: each rate is over
// the time from the start to the last event it counts (the last ticket received, the last order
// collected), so the pickups still finishing after the last ticket do not dilute orders/s.
// Afterwards it checks nothing was oversold: the units confirmed per store and SKU against
// what the store had available when the run began, and inventory's own invariant check. An
// order's units are counted once, when the shopper sees it confirmed or when its ticket reaches
// the terminal, whichever comes first: a checkout whose answer was lost still made its order.
// Checkouts left without an answer and without a ticket are asked about after the run.
package load

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Config is one load run.
type Config struct {
	Endpoints system.Endpoints
	// HTTPClient carries every call; nil makes one sized for the run.
	HTTPClient *http.Client
	// Shoppers is how many shoppers order at once.
	Shoppers int
	// Duration is how long shoppers start new orders (when Orders is 0). Orders in flight at the
	// end are completed, but only what happened within Duration counts towards the rates. A run
	// whose context ends (Ctrl-C) stops there: its window ends then, the orders in flight are
	// cut off and counted apart, not as errors, and the checks after the run still run.
	Duration time.Duration
	// Orders, when positive, is how many checkouts to make in all instead of a duration: an
	// order whose cart could not be made is tried again and does not count.
	Orders int
	// GiveUpAfter, with Orders, stops the run when no checkout has been made for this long
	// while orders kept failing before it (an edge down or refusing); 0 means 30s. The result
	// says so.
	GiveUpAfter time.Duration
	// HotSKU, when set, makes every order one unit of this SKU: every shopper competes for the
	// same stock. Otherwise orders are 1-3 lines of the made-to-order menu.
	HotSKU string
	// Near, when set, puts every shopper at this point; otherwise each order is placed from a
	// random point within the area of the chain's stores.
	Near *commonv1.LatLng
	// Centre is where stores are looked for at the start (terminals are registered for the
	// 50 nearest); nil means Near, or the demo city's centre.
	Centre *commonv1.LatLng
	// RadiusMeters bounds the pickup store search; 0 means 25 km.
	RadiusMeters float64
	// OrderTimeout bounds one order's whole lifecycle; 0 means 30s.
	OrderTimeout time.Duration
	// Basket makes each shopper send its cart whole, lines and pickup choice in one CreateCart,
	// as an app that keeps the basket itself (or "order again") does; otherwise the cart is
	// made one change at a time: CreateCart, AddLine per line, SetPickup.
	Basket bool
	// MaxInFlight is how many orders one shopper may have open at once (from checkout to
	// COLLECTED or another end); 0 means 4. A shopper starts its next order once the last one
	// is CONFIRMED, as long as fewer than MaxInFlight are open.
	MaxInFlight int
	// Progress, when set, is called about once a second while the run goes.
	Progress func(Progress)
	// Logf receives notes about the run's set-up; nil discards them.
	Logf func(format string, args ...any)
}

// DemoCityCentre is a point in the middle of the demo chain's city (Seattle's Capitol Hill).
var DemoCityCentre = &commonv1.LatLng{Latitude: 47.6145, Longitude: -122.3210}

// Progress is the run so far.
type Progress struct {
	Elapsed          time.Duration
	Window           time.Duration // the run's planned length; 0 in count mode
	Checkouts        uint64
	Confirmed        uint64
	Rejected         uint64
	OrdersWithTicket uint64
	Collected        uint64
	Errors           uint64
	// OrdersPerSecond is over the last second.
	OrdersPerSecond float64
	CheckoutP99     time.Duration
	Draining        bool
}

// run is one load run in progress.
type run struct {
	cfg    Config
	app    *shopper.App
	prefix string // customer ids of this run start with it
	fleet  *fleet
	// accepting is how many of the chain's stores took orders at the start.
	accepting int

	menu  []string // SKUs orders are made of
	box   [2]*commonv1.LatLng
	start time.Time
	end   atomic.Int64 // of the measuring window, Unix nanoseconds; 0 until known (count mode)

	loadAvgStart float64
	// cpuStart and cpuEnd frame the CPU the run used: from the first shopper to the last order's end.
	cpuStart, cpuEnd cpuUse
	cpuWindow        time.Duration
	budget           orderBudget
	// failingSince is when orders began to fail before their checkout with none made since
	// (Unix nanoseconds; 0 while checkouts are made), to give up in count mode when none can
	// be; gaveUp is set then.
	failingSince atomic.Int64
	gaveUp       atomic.Bool

	checkout  Histogram
	toTicket  Histogram
	lifecycle Histogram
	// The two legs of confirmed -> ticket: until the pos-adapter raised the ticket, and from
	// then until it reached the terminal.
	toRaised, raisedToTerminal Histogram
	calls                      callTimes

	checkouts, confirmed, rejected, failed atomic.Uint64
	withTicket, collected                  atomic.Uint64 // in total
	withTicketInWindow, collectedInWindow  atomic.Uint64
	answeredInWindow                       atomic.Uint64 // checkouts answered within the window
	// When the last event each rate counts happened (Unix nanoseconds): an order's ticket
	// received with the shopper knowing it confirmed, an order collected, a checkout answered.
	lastTicket, lastCollected, lastAnswered atomic.Int64
	// runCtx is the context the shoppers order on. interruptedAt is when it ended while they
	// did (Unix nanoseconds; 0 if it did not): the window ends there. interrupted counts the
	// orders it cut off.
	runCtx        context.Context
	interruptedAt atomic.Int64
	interrupted   atomic.Uint64

	orders sync.Map // order id -> *tracked

	mu       sync.Mutex
	errors   map[string]uint64
	rejects  map[string]uint64
	units    map[stockKey]int64 // confirmed units per store and SKU
	initial  map[stockKey]int64 // available at the start
	snapshot map[string]bool    // stores whose availability was taken at the start
	// snapshotNote, when set, says why stores an order can land at may be missing from snapshot.
	snapshotNote string
	// unanswered are the checkouts that got no answer and may have made an order, by cart id:
	// the shopper (its customer) who made it. A ticket for the cart's order settles one.
	unanswered map[string]string
	counted    map[string]bool // carts whose orders' units are counted
	// unknown is how many of them could not be settled after the run: an order may exist whose
	// units were not counted.
	unknown int
}

type stockKey struct{ store, sku string }

// tracked is what the shopper and the terminal learn of one order; whichever learns the second
// half completes the confirmed -> ticket measurement.
type tracked struct {
	mu          sync.Mutex
	confirmedAt time.Time // the order's CONFIRMED time, per its history
	receivedAt  time.Time // when the shopper learnt it
	ticketAt    time.Time
	raisedAt    time.Time // the ticket's create_time: when the pos-adapter raised it
	acted       bool      // the terminal is taking it in hand or has (false again once that failed)
	unitsIn     bool      // its units are counted
}

// Run runs the load and returns its results. It fails only when the run could not start; what
// goes wrong during the run is counted in the results.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Shoppers <= 0 {
		return nil, errors.New("load: shoppers must be at least 1")
	}
	if cfg.Duration <= 0 && cfg.Orders <= 0 {
		return nil, errors.New("load: give a duration or a number of orders")
	}
	if cfg.RadiusMeters == 0 {
		cfg.RadiusMeters = 25_000
	}
	if cfg.OrderTimeout == 0 {
		cfg.OrderTimeout = 30 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = 30 * time.Second
	}
	if cfg.Centre == nil {
		cfg.Centre = cfg.Near
	}
	if cfg.Centre == nil {
		cfg.Centre = DemoCityCentre
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = shopper.HTTPClient((cfg.MaxInFlight+3)*cfg.Shoppers + 128)
	}
	r := &run{
		cfg:        cfg,
		prefix:     "load-" + uuid.NewString()[:8] + "-",
		errors:     map[string]uint64{},
		rejects:    map[string]uint64{},
		units:      map[stockKey]int64{},
		initial:    map[stockKey]int64{},
		snapshot:   map[string]bool{},
		unanswered: map[string]string{},
		counted:    map[string]bool{},
	}
	r.app = shopper.New(cfg.HTTPClient, cfg.Endpoints.GatewayURL, "", connect.WithInterceptors(&r.calls))
	defer r.cfg.HTTPClient.CloseIdleConnections()
	err := r.prepare(ctx)
	if r.fleet != nil {
		defer r.fleet.stop()
	}
	if err != nil {
		return nil, err
	}
	r.calls.reset() // only the run's own calls count
	r.measure(ctx)
	r.settleUnanswered(ctx)
	return r.result(ctx), nil
}

// prepare learns the menu and the stores, registers and connects a terminal per store found
// (the 50 nearest the centre) and takes the availability of every store an order can land at,
// all before the clock starts.
func (r *run) prepare(ctx context.Context) error {
	ctx = shopper.WithToken(ctx, r.token("setup"))
	if err := r.loadMenu(ctx); err != nil {
		return err
	}
	fres, err := r.app.Locator.FindStores(ctx, connect.NewRequest(&inventoryv1.FindStoresRequest{
		Location: r.cfg.Centre, RadiusMeters: 100_000, MaxResults: 50, IncludeNotAccepting: true,
	}))
	if err != nil {
		return fmt.Errorf("find the chain's stores: %w", err)
	}
	stores := fres.Msg.GetStores()
	if len(stores) == 0 {
		return errors.New("no stores within 100 km of the centre")
	}
	accepting := 0
	for i, m := range stores {
		loc := m.GetStore().GetLocation()
		if i == 0 {
			r.box = [2]*commonv1.LatLng{{Latitude: loc.GetLatitude(), Longitude: loc.GetLongitude()}, {Latitude: loc.GetLatitude(), Longitude: loc.GetLongitude()}}
		}
		r.box[0].Latitude, r.box[0].Longitude = min(r.box[0].Latitude, loc.GetLatitude()), min(r.box[0].Longitude, loc.GetLongitude())
		r.box[1].Latitude, r.box[1].Longitude = max(r.box[1].Latitude, loc.GetLatitude()), max(r.box[1].Longitude, loc.GetLongitude())
		if m.GetStore().GetOpenStatus().GetAcceptingOrders() {
			accepting++
		}
	}
	r.accepting = accepting
	r.cfg.Logf("%d stores found, %d accepting orders now; menu of %d SKUs", len(stores), accepting, len(r.menu))

	adminToken, err := r.cfg.Endpoints.Token(auth.Principal{Subject: "mobile-mock-load", Role: auth.RoleAdmin})
	if err != nil {
		return err
	}
	r.fleet = newFleet(r, adminToken)
	ids := make([]string, len(stores))
	for i, m := range stores {
		ids[i] = m.GetStore().GetId()
	}
	if err := r.fleet.connect(ctx, ids); err != nil {
		return err
	}
	r.cfg.Logf("%d terminals registered and following their stores' feeds", len(ids))
	// The stock is taken of every store an order can land at, not only of the 50 found: in a
	// bigger chain the nearest store able to fill an order may be another (its terminal is
	// registered when an order lands there).
	reach, listed, pages, err := r.storesInReach(ctx, r.reachArea())
	if err != nil {
		// The run goes on with the stock of the stores found: units sold elsewhere are
		// reported unchecked, saying why, so the run is not called sound.
		r.snapshotNote = fmt.Sprintf("the chain's stores could not be listed, so only the stock of the %d found near the centre was taken: %v", len(ids), err)
		r.cfg.Logf("%s", r.snapshotNote)
	}
	for _, id := range ids {
		delete(reach, id)
	}
	all := slices.Concat(ids, slices.Sorted(maps.Keys(reach)))
	if len(reach) > 0 {
		r.cfg.Logf("%d more stores within %.0f m of the shoppers' area (of %d listed in %d ListStores calls): their stock is taken too", len(reach), min(r.cfg.RadiusMeters, maxOrderRadius), listed, pages)
	}
	return r.takeAvailability(ctx, all)
}

// loadMenu collects the SKUs orders are made of: the hot SKU, or every orderable variant of the
// made-to-order menu (stock there stands for ingredients, so a run does not just empty shelves).
func (r *run) loadMenu(ctx context.Context) error {
	if r.cfg.HotSKU != "" {
		res, err := r.app.Catalog.BatchGetVariants(ctx, connect.NewRequest(&catalogv1.BatchGetVariantsRequest{Skus: []string{r.cfg.HotSKU}}))
		if err != nil {
			return fmt.Errorf("hot SKU %s: %w", r.cfg.HotSKU, err)
		}
		if !res.Msg.GetVariants()[0].GetOrderable() {
			return fmt.Errorf("hot SKU %s is not orderable", r.cfg.HotSKU)
		}
		r.menu = []string{r.cfg.HotSKU}
		return nil
	}
	var all []string
	token := ""
	for {
		res, err := r.app.Catalog.ListProducts(ctx, connect.NewRequest(&catalogv1.ListProductsRequest{PageSize: 100, PageToken: token}))
		if err != nil {
			return fmt.Errorf("list the catalog: %w", err)
		}
		for _, p := range res.Msg.GetProducts() {
			for _, v := range p.GetVariants() {
				if !v.GetOrderable() {
					continue
				}
				all = append(all, v.GetSku())
				if slices.Contains(p.GetTags(), demo.TagMadeToOrder) {
					r.menu = append(r.menu, v.GetSku())
				}
			}
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(r.menu) == 0 { // a catalog without the demo's tags: order anything
		r.menu = all
	}
	if len(r.menu) == 0 {
		return errors.New("the catalog has nothing orderable")
	}
	if len(r.menu) > 200 { // GetAvailability's limit per call
		r.menu = r.menu[:200]
	}
	return nil
}

// takeAvailability records what each store can promise of the menu before the run, to check
// afterwards that no more than that was confirmed.
func (r *run) takeAvailability(ctx context.Context, stores []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range stores {
		g.Go(func() error {
			res, err := r.app.Locator.GetAvailability(shopper.WithToken(gctx, r.token("stock-"+id)),
				connect.NewRequest(&inventoryv1.GetAvailabilityRequest{StoreId: id, Skus: r.menu}))
			if err != nil {
				return fmt.Errorf("availability at %s: %w", id, err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, a := range res.Msg.GetAvailability() {
				r.initial[stockKey{id, a.GetSku()}] = int64(a.GetAvailable())
			}
			r.snapshot[id] = true
			return nil
		})
	}
	return g.Wait()
}

// token mints a customer token of this run.
func (r *run) token(who string) string {
	tok, err := r.cfg.Endpoints.Token(auth.Principal{Subject: r.prefix + who, Role: auth.RoleCustomer})
	if err != nil {
		panic(err) // a customer principal with a subject always signs
	}
	return tok
}

// measure runs the shoppers until the duration is over (or the orders are placed) and every
// order in flight has finished.
func (r *run) measure(ctx context.Context) {
	r.loadAvgStart = loadAverage()
	r.cpuStart = readCPUUse()
	r.start = time.Now()
	if r.cfg.Orders > 0 {
		r.budget.init(r.cfg.Orders)
	} else {
		r.end.Store(r.start.Add(r.cfg.Duration).UnixNano())
	}
	progressDone := make(chan struct{})
	stopProgress := make(chan struct{})
	go func() {
		defer close(progressDone)
		r.reportProgress(stopProgress)
	}()
	// An interrupt (Ctrl-C) ends the window: what happens after, as the orders in flight are
	// cut off, is not the system's doing.
	r.runCtx = ctx
	shopped, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			r.interrupt()
		case <-shopped:
		}
	}()
	var wg sync.WaitGroup
	for i := range r.cfg.Shoppers {
		wg.Go(func() { r.shopper(ctx, i) })
	}
	wg.Wait()
	close(shopped)
	<-watched
	if ctx.Err() != nil && r.interruptedAt.Load() == 0 {
		r.interrupt() // as the last orders ended
	}
	r.cpuEnd, r.cpuWindow = readCPUUse(), time.Since(r.start)
	r.end.CompareAndSwap(0, time.Now().UnixNano())
	close(stopProgress)
	<-progressDone
}

// interrupt ends the window now, if it has not ended already. Once it has, the measurement
// stands: only the drain is cut short, and the orders it cuts off are counted apart.
func (r *run) interrupt() {
	now := time.Now().UnixNano()
	for {
		e := r.end.Load()
		if e != 0 && e <= now {
			return
		}
		if r.end.CompareAndSwap(e, now) {
			r.interruptedAt.Store(now)
			return
		}
	}
}

func (r *run) inWindow(t time.Time) bool { e := r.end.Load(); return e == 0 || t.UnixNano() <= e }

// latest moves last (Unix nanoseconds) on to t if t is later.
func latest(last *atomic.Int64, t time.Time) {
	for n := t.UnixNano(); ; {
		old := last.Load()
		if old >= n || last.CompareAndSwap(old, n) {
			return
		}
	}
}

// endTime is the end of the measuring window (zero until known).
func (r *run) endTime() time.Time {
	if e := r.end.Load(); e != 0 {
		return time.Unix(0, e)
	}
	return time.Time{}
}

func (r *run) reportProgress(stop <-chan struct{}) {
	if r.cfg.Progress == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last uint64
	lastAt := r.start
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			n := r.withTicket.Load()
			p := Progress{
				Elapsed:          now.Sub(r.start),
				Window:           r.cfg.Duration,
				Checkouts:        r.checkouts.Load(),
				Confirmed:        r.confirmed.Load(),
				Rejected:         r.rejected.Load(),
				OrdersWithTicket: n,
				Collected:        r.collected.Load(),
				Errors:           r.failed.Load(),
				OrdersPerSecond:  float64(n-last) / now.Sub(lastAt).Seconds(),
				CheckoutP99:      r.checkout.Quantile(0.99),
				Draining:         r.cfg.Orders == 0 && now.After(r.endTime()),
			}
			last, lastAt = n, now
			r.cfg.Progress(p)
		}
	}
}

// shopper places orders until the run is over: the next checkout as soon as the last order is
// CONFIRMED (or ended), with at most MaxInFlight orders open; it returns once all have ended.
func (r *run) shopper(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(r.start.UnixNano())))
	slots := make(chan struct{}, r.cfg.MaxInFlight)
	var (
		open  sync.WaitGroup
		pause time.Duration
	)
	defer open.Wait()
	for n := 0; ctx.Err() == nil && !r.gaveUp.Load(); n++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if r.cfg.Orders > 0 {
			if !r.budget.take(ctx) {
				<-slots
				return
			}
		} else if time.Now().After(r.endTime()) {
			<-slots
			return
		}
		confirmed := make(chan bool, 1)
		open.Go(func() {
			defer func() { <-slots }()
			r.order(ctx, fmt.Sprintf("s%d-o%d", id, n), rng, confirmed)
		})
		if failed := <-confirmed; !failed {
			pause = 0
			continue
		}
		// A call failed before the order was placed: an edge down or refusing. Trying again at
		// once would hammer it (and fill the error counts) for as long as it is down; asked for
		// a number of checkouts, the run would never end while it is.
		if r.cfg.Orders > 0 {
			if r.failingTooLong(time.Now().UnixNano()) {
				r.gaveUp.Store(true)
				return
			}
		}
		pause = min(max(2*pause, minPause), maxPause)
		select {
		case <-time.After(pause/2 + rand.N(pause/2)):
		case <-ctx.Done():
			return
		}
	}
}

// failingTooLong notes an order failed before its checkout at now (Unix nanoseconds) and
// reports whether orders have kept failing, no checkout made, for longer than GiveUpAfter. Given
// up only then: a long wait with no checkout (every order still in its pickup, say) ended by one
// failure is no outage. failingSince is read once: a checkout made by another shopper may reset
// it to 0 at any moment, and a second read taking that 0 for the start would give up at once.
func (r *run) failingTooLong(now int64) bool {
	since := r.failingSince.Load()
	if since == 0 {
		r.failingSince.CompareAndSwap(0, now)
		return false
	}
	return time.Duration(now-since) > r.cfg.GiveUpAfter
}

// orderBudget is the checkouts still to make in count mode. A shopper takes one before making
// its order's cart and gives it back if the cart fails, so only a checkout made uses one up; a
// shopper finding none left while other shoppers' carts are being made waits to see whether
// theirs are given back.
type orderBudget struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every settle
	left    int           // neither made nor taken
	taken   int           // taken by carts being made
}

func (b *orderBudget) init(n int) { b.left, b.changed = n, make(chan struct{}) }

// take takes one checkout for a cart about to be made; false when none is left (or ctx ended).
func (b *orderBudget) take(ctx context.Context) bool {
	for {
		b.mu.Lock()
		if b.left > 0 {
			b.left--
			b.taken++
			b.mu.Unlock()
			return true
		}
		changed, waiting := b.changed, b.taken > 0
		b.mu.Unlock()
		if !waiting {
			return false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// settle ends a take: used when the checkout is made, else the checkout is given back.
func (b *orderBudget) settle(used bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.taken--
	if !used {
		b.left++
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// minPause and maxPause bound a shopper's wait after an order failed before it was placed,
// doubling while failures go on.
const minPause, maxPause = 50 * time.Millisecond, 2 * time.Second

// order is one shopper's whole order: cart, checkout, watching it, handing over the code. It
// sends on confirmed once the order is CONFIRMED or has ended without being confirmed: true
// when a call failed before the order was placed. rng is used only before that.
func (r *run) order(ctx context.Context, who string, rng *rand.Rand, confirmed chan<- bool) {
	var once sync.Once
	failed := false
	release := func() { once.Do(func() { confirmed <- failed }) }
	defer release()
	ctx, cancel := context.WithTimeout(shopper.WithToken(ctx, r.token(who)), r.cfg.OrderTimeout)
	defer cancel()

	cart, ok := r.fillCart(ctx, rng)
	if r.cfg.Orders > 0 {
		r.budget.settle(ok) // only a checkout made uses up one of the orders asked
	}
	if !ok {
		failed = true
		return
	}

	r.checkouts.Add(1)
	r.failingSince.Store(0)
	began := time.Now()
	// No answer is not no order: as the cart asks, the shopper retries with the same key to
	// learn the order's fate (else its units would be missing from the oversold check).
	key := "load-" + uuid.NewString()
	var (
		kres *connect.Response[cartv1.CheckoutResponse]
		err  error
	)
	attempt := 1
	for ; ; attempt++ {
		// As an app does: the order is to charge the subtotal the shopper was shown.
		kres, err = r.app.Cart.Checkout(ctx, connect.NewRequest(&cartv1.CheckoutRequest{CartId: cart.GetId(), IdempotencyKey: key,
			ExpectedSubtotal: cart.GetSubtotal()}))
		if err == nil || attempt == checkoutAttempts || ctx.Err() != nil || !retryCheckout(connect.CodeOf(err)) {
			break
		}
		r.fail("Checkout (retried with its key)", err)
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	if err != nil {
		r.orderFail(ctx, "Checkout", err)
		if code := connect.CodeOf(err); attempt > 1 || retryCheckout(code) || code == connect.CodeCanceled {
			r.lookUpLater(cart.GetId(), who) // the order may exist all the same
		}
		failed = true
		return
	}
	answered := time.Now()
	r.checkout.Record(answered.Sub(began))
	if r.inWindow(answered) {
		r.answeredInWindow.Add(1)
		latest(&r.lastAnswered, answered)
	}
	order := kres.Msg.GetOrder()
	switch order.GetState() {
	case fulfilmentv1.OrderState_ORDER_STATE_REJECTED:
		r.reject(order)
		return
	}
	// An order is counted confirmed (its units toward the oversold check) the first time it is
	// seen CONFIRMED or later: a watch may skip straight past CONFIRMED to PREPARING or READY.
	counted := false
	count := func(o *fulfilmentv1.Order) {
		if !counted && confirmedOrLater(o.GetState()) {
			counted = true
			r.confirm(o)
			release() // the shopper may start the next order; the pickup goes on here
		}
	}
	count(order)
	if counted {
		// A store beyond those found before the clock started (the chain's 50 nearest) gets
		// its terminal now: its order's ticket comes to it, as one store's does to its till.
		if _, err := r.fleet.terminal(ctx, order.GetStoreId()); err != nil {
			r.orderFail(ctx, "RegisterTerminal", err)
			return
		}
	}
	final := false
	defer func() {
		if !counted && !final {
			// Answered PENDING and its fate never learnt (the watch failed or the run ended):
			// it may have been confirmed since.
			r.lookUpLater(cart.GetId(), who)
		}
	}()

	// The shopper watches the order and, once it is READY, shows the pickup code at the counter.
	state := order.GetState()
	handedOver := false
	// watch reads one WatchOrder stream: done when the order's part here is over (a final
	// state, or a hand-over that failed), else the stream's end.
	watch := func(stream *connect.ServerStreamForClient[fulfilmentv1.WatchOrderResponse]) (done bool, err error) {
		defer func() {
			if final {
				// The service ends the stream right after a final state. Reading it to its
				// end lets the HTTP/1.1 connection carry the next call; closing it early
				// would drop the connection and cost a new one for every order.
				for stream.Receive() {
				}
			}
			_ = stream.Close()
		}()
		for stream.Receive() {
			o := stream.Msg().GetOrder()
			if o.GetVersion() < order.GetVersion() {
				continue
			}
			order, state = o, o.GetState()
			count(order)
			switch state {
			case fulfilmentv1.OrderState_ORDER_STATE_READY:
				if handedOver {
					continue
				}
				handedOver = true
				if err := r.fleet.handOver(ctx, order.GetStoreId(), order.GetId(), order.GetPickupCode()); err != nil {
					r.orderFail(ctx, "HandOver", err)
					return true, nil
				}
			case fulfilmentv1.OrderState_ORDER_STATE_COLLECTED:
				final = true
				now := time.Now()
				r.lifecycle.Record(now.Sub(began))
				r.collected.Add(1)
				if r.inWindow(now) {
					r.collectedInWindow.Add(1)
					latest(&r.lastCollected, now)
				}
				return true, nil
			case fulfilmentv1.OrderState_ORDER_STATE_REJECTED:
				final = true
				r.reject(order)
				return true, nil
			case fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, fulfilmentv1.OrderState_ORDER_STATE_EXPIRED:
				final = true
				r.failState(order)
				return true, nil
			}
		}
		return false, stream.Err()
	}
	// A watch that breaks is opened again while the order has time, as an app does: the
	// services end their streams on purpose when draining (Unavailable, to be called again), a
	// proxy may cut one, and a stream opens with the order as it is now. Each break is counted,
	// apart from the failures that end an order ("WatchOrder (opened again)"), so that the
	// summary shows streams breaking though every order was collected.
	pause := minWatchPause
	for {
		stream, err := r.app.Orders.WatchOrder(ctx, connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: order.GetId()}))
		if err == nil {
			seen := order.GetVersion()
			var done bool
			if done, err = watch(stream); done {
				return
			}
			if order.GetVersion() > seen {
				pause = minWatchPause // the stream served: a break now is a new one
			}
		}
		if r.cutOff(ctx) {
			return
		}
		if ctx.Err() != nil {
			r.mu.Lock()
			r.errors["order timed out "+strings.TrimPrefix(state.String(), "ORDER_STATE_")]++
			r.mu.Unlock()
			r.failed.Add(1)
			return
		}
		if err == nil {
			err = connect.NewError(connect.CodeUnknown, fmt.Errorf("stream ended with the order %s", state))
		}
		if !shopper.WatchAgain(err) {
			r.orderFail(ctx, "WatchOrder", err)
			return
		}
		r.fail("WatchOrder (opened again)", err)
		select {
		case <-time.After(pause):
		case <-ctx.Done(): // the next WatchOrder fails at once, and the order is counted timed out
		}
		pause = min(2*pause, maxWatchPause)
	}
}

// minWatchPause and maxWatchPause bound a shopper's wait before it opens a broken watch again,
// doubling while it keeps breaking without news of the order.
const minWatchPause, maxWatchPause = 100 * time.Millisecond, 2 * time.Second

// fillCart makes the order's cart, whole or change by change as configured, and returns it as
// last answered; false when a call failed (counted).
func (r *run) fillCart(ctx context.Context, rng *rand.Rand) (*cartv1.Cart, bool) {
	lines := r.pickLines(rng)
	pickup := &cartv1.Pickup{Choice: &cartv1.Pickup_Nearest{Nearest: &cartv1.NearestStore{Location: r.pickPoint(rng), RadiusMeters: r.cfg.RadiusMeters}}}
	if r.cfg.Basket {
		basket := &cartv1.CreateCartRequest{Pickup: pickup}
		for _, l := range lines {
			basket.Lines = append(basket.Lines, &cartv1.NewCartLine{Sku: l.GetSku(), Quantity: l.GetQuantity()})
		}
		cres, err := r.app.Cart.CreateCart(ctx, connect.NewRequest(basket))
		if err != nil {
			r.orderFail(ctx, "CreateCart", err)
			return nil, false
		}
		return cres.Msg.GetCart(), true
	}
	cres, err := r.app.Cart.CreateCart(ctx, connect.NewRequest(&cartv1.CreateCartRequest{}))
	if err != nil {
		r.orderFail(ctx, "CreateCart", err)
		return nil, false
	}
	cartID := cres.Msg.GetCart().GetId()
	for _, l := range lines {
		if _, err := r.app.Cart.AddLine(ctx, connect.NewRequest(&cartv1.AddLineRequest{CartId: cartID, Sku: l.GetSku(), Quantity: l.GetQuantity()})); err != nil {
			r.orderFail(ctx, "AddLine", err)
			return nil, false
		}
	}
	sres, err := r.app.Cart.SetPickup(ctx, connect.NewRequest(&cartv1.SetPickupRequest{CartId: cartID, Pickup: pickup}))
	if err != nil {
		r.orderFail(ctx, "SetPickup", err)
		return nil, false
	}
	return sres.Msg.GetCart(), true
}

// pickLines makes an order: one unit of the hot SKU, or 1-3 menu lines of 1-2 units.
func (r *run) pickLines(rng *rand.Rand) []*inventoryv1.StockLine {
	if r.cfg.HotSKU != "" {
		return []*inventoryv1.StockLine{{Sku: r.cfg.HotSKU, Quantity: 1}}
	}
	n := 1 + rng.IntN(3)
	lines := make([]*inventoryv1.StockLine, 0, n)
	for range n {
		sku := r.menu[rng.IntN(len(r.menu))]
		if slices.ContainsFunc(lines, func(l *inventoryv1.StockLine) bool { return l.GetSku() == sku }) {
			continue
		}
		lines = append(lines, &inventoryv1.StockLine{Sku: sku, Quantity: int32(1 + rng.IntN(2))})
	}
	return lines
}

// pickPoint is where the shopper orders from: Near, or anywhere in the stores' area.
func (r *run) pickPoint(rng *rand.Rand) *commonv1.LatLng {
	if r.cfg.Near != nil {
		return r.cfg.Near
	}
	lo, hi := r.box[0], r.box[1]
	return &commonv1.LatLng{
		Latitude:  lo.GetLatitude() + rng.Float64()*(hi.GetLatitude()-lo.GetLatitude()),
		Longitude: lo.GetLongitude() + rng.Float64()*(hi.GetLongitude()-lo.GetLongitude()),
	}
}

// checkoutAttempts is how often a shopper sends a checkout that gets no answer, with its key.
const checkoutAttempts = 3

// retryCheckout reports whether a checkout failing with code may have made an order, so that
// the cart asks for a retry with the same key.
func retryCheckout(code connect.Code) bool {
	switch code {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeInternal, connect.CodeUnknown:
		return true
	}
	return false
}

// confirmedOrLater reports whether an order in state s was confirmed: its units were sold.
func confirmedOrLater(s fulfilmentv1.OrderState) bool {
	switch s {
	case fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED, fulfilmentv1.OrderState_ORDER_STATE_PREPARING,
		fulfilmentv1.OrderState_ORDER_STATE_READY, fulfilmentv1.OrderState_ORDER_STATE_COLLECTED:
		return true
	}
	return false
}

// confirm records a CONFIRMED order as the shopper learnt of it.
func (r *run) confirm(order *fulfilmentv1.Order) {
	now := time.Now()
	r.confirmed.Add(1)
	t := r.track(order.GetId())
	t.mu.Lock()
	defer t.mu.Unlock()
	r.countUnits(t, order)
	t.receivedAt, t.confirmedAt = now, confirmedTime(order, now)
	r.completeTicket(t)
}

// lookUpLater has the after-run lookup (settleUnanswered) learn the fate of a checkout whose
// order the shopper has not seen confirmed: its units are counted when its ticket reaches the
// terminal, or else when the lookup finds it confirmed.
func (r *run) lookUpLater(cartID, who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.counted[cartID] { // else its ticket has come already
		r.unanswered[cartID] = who
	}
}

// countUnits counts a confirmed order's units towards the oversold check, once. t.mu is held.
func (r *run) countUnits(t *tracked, order *fulfilmentv1.Order) {
	if t.unitsIn {
		return
	}
	t.unitsIn = true
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range order.GetLines() {
		if l.GetState() != fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE {
			r.units[stockKey{order.GetStoreId(), l.GetSku()}] += int64(l.GetQuantity())
		}
	}
	r.counted[order.GetCartId()] = true
	delete(r.unanswered, order.GetCartId())
}

// ticketArrived records a NEW_ORDER ticket of this run reaching its store's terminal: the order
// was confirmed, and its units are counted if the shopper has not seen it confirmed (its
// checkout's answer lost). It reports whether the terminal should now take the order in hand
// (false for a duplicate).
func (r *run) ticketArrived(order *fulfilmentv1.Order, at, raised time.Time) bool {
	t := r.track(order.GetId())
	t.mu.Lock()
	defer t.mu.Unlock()
	r.countUnits(t, order)
	if t.ticketAt.IsZero() {
		t.ticketAt, t.raisedAt = at, raised
		r.completeTicket(t)
	}
	act := !t.acted
	t.acted = true
	return act
}

// ticketFailed notes that the terminal's action on order's ticket failed: the ticket, sent
// again by the feed, is acted on again.
func (r *run) ticketFailed(order *fulfilmentv1.Order) {
	t := r.track(order.GetId())
	t.mu.Lock()
	defer t.mu.Unlock()
	t.acted = false
}

// completeTicket measures confirmed -> ticket once both halves are known. t.mu is held.
func (r *run) completeTicket(t *tracked) {
	if t.receivedAt.IsZero() || t.ticketAt.IsZero() {
		return
	}
	r.toTicket.Record(t.ticketAt.Sub(t.confirmedAt))
	if !t.raisedAt.IsZero() {
		r.toRaised.Record(t.raisedAt.Sub(t.confirmedAt))
		r.raisedToTerminal.Record(t.ticketAt.Sub(t.raisedAt))
	}
	r.withTicket.Add(1)
	if r.inWindow(t.receivedAt) && r.inWindow(t.ticketAt) {
		r.withTicketInWindow.Add(1)
		latest(&r.lastTicket, t.receivedAt)
		latest(&r.lastTicket, t.ticketAt)
	}
}

func (r *run) track(orderID string) *tracked {
	t, _ := r.orders.LoadOrStore(orderID, &tracked{})
	return t.(*tracked)
}

// settleUnanswered learns the fate of the checkouts left without an answer (or answered PENDING
// with no later word) and without a ticket: each was made by a customer of its own, so the order, if any, is the only one the
// customer's ListOrders shows. A confirmed one has its units counted; one that cannot be
// learnt (the call fails, or it is still PENDING after a while) is counted unknown. It runs on
// a context of its own, bounded, as the run's may have ended.
func (r *run) settleUnanswered(ctx context.Context) {
	r.mu.Lock()
	left := maps.Clone(r.unanswered)
	r.mu.Unlock()
	if len(left) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	// Its calls are not the run's: they are left out of its call times.
	app := shopper.New(r.cfg.HTTPClient, r.cfg.Endpoints.GatewayURL, "")
	for cartID, who := range left {
		if !r.settle(ctx, app, cartID, who) {
			r.mu.Lock()
			r.unknown++
			r.mu.Unlock()
		}
	}
}

// settleTimeout bounds settleUnanswered.
const settleTimeout = 10 * time.Second

// settle learns the fate of one unanswered checkout; false when it could not.
func (r *run) settle(ctx context.Context, app *shopper.App, cartID, who string) bool {
	ctx = shopper.WithToken(ctx, r.token(who))
	for {
		res, err := app.Orders.ListOrders(ctx, connect.NewRequest(&fulfilmentv1.ListOrdersRequest{}))
		if err != nil {
			return false
		}
		pending := false
		for _, o := range res.Msg.GetOrders() {
			switch {
			case o.GetCartId() != cartID:
			case o.GetState() == fulfilmentv1.OrderState_ORDER_STATE_PENDING:
				pending = true
			case wasConfirmed(o):
				t := r.track(o.GetId())
				t.mu.Lock()
				r.countUnits(t, o)
				t.mu.Unlock()
			}
		}
		if !pending {
			return true
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
}

// wasConfirmed reports whether an order was confirmed at some time: its units were sold.
func wasConfirmed(o *fulfilmentv1.Order) bool {
	if confirmedOrLater(o.GetState()) {
		return true
	}
	for _, tr := range o.GetHistory() {
		if tr.GetToState() == fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
			return true
		}
	}
	return false
}

// ours says whether an order was placed by this run (its customer ids carry the run's prefix).
func (r *run) ours(order *fulfilmentv1.Order) bool {
	return strings.HasPrefix(order.GetCustomerId(), r.prefix)
}

// confirmedTime is when the order became CONFIRMED, per its history; fallback if it says not.
func confirmedTime(order *fulfilmentv1.Order, fallback time.Time) time.Time {
	for _, tr := range order.GetHistory() {
		if tr.GetToState() == fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED && tr.GetTime() != nil {
			return tr.GetTime().AsTime()
		}
	}
	return fallback
}

func (r *run) reject(order *fulfilmentv1.Order) {
	r.rejected.Add(1)
	// Grouped by what was short, not by the reason's words (they name stores and distances).
	var skus []string
	for _, s := range order.GetShortages() {
		skus = append(skus, s.GetSku())
	}
	why := "short of " + strings.Join(skus, ", ")
	if len(skus) == 0 {
		why, _, _ = strings.Cut(order.GetReason(), ";")
	}
	r.mu.Lock()
	r.rejects[why]++
	r.mu.Unlock()
}

func (r *run) failState(order *fulfilmentv1.Order) {
	r.failed.Add(1)
	r.mu.Lock()
	r.errors["order ended "+strings.TrimPrefix(order.GetState().String(), "ORDER_STATE_")]++
	r.mu.Unlock()
}

// orderFail counts a call of an order (on ctx) that failed, unless the run's interrupt cut the
// order off.
func (r *run) orderFail(ctx context.Context, rpc string, err error) {
	if !r.cutOff(ctx) {
		r.fail(rpc, err)
	}
}

// cutOff reports whether an order (on ctx) was cut off by the run's interrupt, and counts it
// if so: it is not an error of the system.
func (r *run) cutOff(ctx context.Context) bool {
	if ctx.Err() == nil || r.runCtx.Err() == nil {
		return false
	}
	r.interrupted.Add(1)
	return true
}

// fail counts an RPC that failed, by RPC and code.
func (r *run) fail(rpc string, err error) {
	r.failed.Add(1)
	r.mu.Lock()
	r.errors[rpc+" "+connect.CodeOf(err).String()]++
	r.mu.Unlock()
}
