package load

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Result is what a run measured. Rates count only what happened within the window.
type Result struct {
	Started  time.Time `json:"started"`
	Shoppers int       `json:"shoppers"`
	// MaxInFlight is how many orders one shopper could have open at once: it starts the next
	// checkout once an order is CONFIRMED, while the pickup goes on.
	MaxInFlight int `json:"max_in_flight_per_shopper"`
	// Basket is whether each cart was sent whole in one CreateCart, rather than made one
	// change at a time.
	Basket bool `json:"basket"`
	// Mode is "spread" (menu orders over the chain) or "hot-sku".
	Mode    string `json:"mode"`
	HotSKU  string `json:"hot_sku,omitempty"`
	Gateway string `json:"gateway"`
	POS     string `json:"pos_adapter"`
	Stores  int    `json:"stores_with_terminals"`
	// StoresAccepting is how many of them took orders at the start (their state and opening
	// hours): concurrent orders at fewer stores share more work, so runs compare only at equal
	// counts.
	StoresAccepting int `json:"stores_accepting"`
	// Interrupted is whether the run was cut short (Ctrl-C): WindowSeconds ends then, and
	// InterruptedOrders were cut off in flight (not errors).
	Interrupted       bool   `json:"interrupted"`
	InterruptedOrders uint64 `json:"interrupted_orders"`
	// OrdersAsked is the checkouts asked for (-orders); 0 for a run of a duration.
	OrdersAsked int `json:"orders_asked,omitempty"`
	// GaveUp, when set, says why a run asked for a number of checkouts stopped before making
	// them all (Checkouts were made).
	GaveUp string `json:"gave_up,omitempty"`
	// WindowSeconds is the measuring window of a run of a duration: the duration. A run of a
	// number of orders lasts until its last order has ended (pickups included), which this is
	// then; its rates are each over a window of their own, below. Either ends at an interrupt.
	WindowSeconds float64 `json:"window_seconds"`
	// The windows orders/s, collected/s and checkouts/s are over: WindowSeconds in a run of a
	// duration; in a run of a number of orders, from the start to the last event the rate
	// counts: the last ticket received at a terminal (of a checkout seen CONFIRMED), the last
	// order collected, the last checkout answered.
	OrdersWindowSeconds    float64 `json:"orders_window_seconds"`
	CollectedWindowSeconds float64 `json:"collected_window_seconds"`
	CheckoutsWindowSeconds float64 `json:"checkouts_window_seconds"`
	// Host is the machine the load ran on: what else ran there skews every figure.
	Host Host `json:"host"`

	Checkouts        uint64 `json:"checkouts"`
	Confirmed        uint64 `json:"confirmed"`
	Rejected         uint64 `json:"rejected"`
	Failed           uint64 `json:"failed"`
	OrdersWithTicket uint64 `json:"orders_with_ticket"`
	// OrdersInWindow are those of OrdersWithTicket whose ticket came within the window:
	// OrdersPerSecond is OrdersInWindow over OrdersWindowSeconds.
	OrdersInWindow uint64 `json:"orders_in_window"`
	Collected      uint64 `json:"collected"`
	// CollectedInWindow and CheckoutsInWindow are the counts CollectedPerSecond and
	// CheckoutsPerSecond are of: orders seen COLLECTED, and checkouts answered, within their
	// windows.
	CollectedInWindow  uint64  `json:"collected_in_window"`
	CheckoutsInWindow  uint64  `json:"checkouts_in_window"`
	OrdersPerSecond    float64 `json:"orders_per_second"`
	CollectedPerSecond float64 `json:"collected_per_second"`
	CheckoutsPerSecond float64 `json:"checkouts_per_second"`

	// CPUPerOrder is the run's CPU time over its orders that reached a terminal.
	CPUPerOrder CPUPerOrder `json:"cpu_per_order"`

	CheckoutLatency   Stats `json:"checkout_latency"`
	ConfirmedToTicket Stats `json:"confirmed_to_ticket_latency"`
	// The legs of confirmed -> ticket: until the pos-adapter raised the ticket (events, consumer,
	// outbox), and from then to the terminal (the live feed).
	ConfirmedToRaised Stats `json:"confirmed_to_ticket_raised_latency"`
	RaisedToTerminal  Stats `json:"ticket_raised_to_terminal_latency"`
	OrderToCollected  Stats `json:"checkout_to_collected_latency"`
	// Calls are the latencies of each RPC the shoppers and terminals made (successful calls).
	Calls map[string]Stats `json:"calls"`

	// Errors counts failed calls by RPC and code, and orders that ended badly.
	Errors map[string]uint64 `json:"errors"`
	// Rejections counts REJECTED orders by reason (not errors: stock ran out).
	Rejections map[string]uint64 `json:"rejections"`

	// ConfirmedUnits is the units of every order of the run that was confirmed, counted when
	// its shopper saw it confirmed or its ticket reached the terminal, or found after the run.
	ConfirmedUnits int64 `json:"confirmed_units"`
	// ConfirmedUnanswered is how many of those orders the shopper never saw confirmed: its
	// checkout got no answer (lost, timed out), yet the order was made. Their units are in the
	// oversold check; the orders are not in orders/s.
	ConfirmedUnanswered uint64 `json:"confirmed_unanswered"`
	// UnknownCheckouts got no answer (or only PENDING), no ticket, and could not be looked up after the run: an
	// order may exist whose units are not counted, so the run cannot be shown sound.
	UnknownCheckouts int `json:"unknown_checkouts"`
	// OversoldUnits is the units confirmed beyond what stores had available when the run began
	// (must be 0). It assumes nobody else orders from those stores meanwhile.
	OversoldUnits int64          `json:"oversold_units"`
	Oversold      []OversoldLine `json:"oversold,omitempty"`
	// StoresSnapshotted is how many stores' availability was taken at the start: every store
	// an order could land at (within the pickup radius of the shoppers' points), not only the
	// 50 nearest the centre that get a terminal before the clock.
	StoresSnapshotted int `json:"stores_snapshotted"`
	// SnapshotNote, when set, says why stores an order could land at may be missing from them.
	SnapshotNote string `json:"snapshot_note,omitempty"`
	// UncheckedUnits were confirmed at stores whose availability was not taken at the start
	// (UncheckedStores): created since, or missed as SnapshotNote says.
	UncheckedUnits  int64      `json:"unchecked_units"`
	UncheckedStores []string   `json:"unchecked_stores,omitempty"`
	Invariants      Invariants `json:"invariants"`

	Histograms struct {
		Checkout          []Bucket `json:"checkout"`
		ConfirmedToTicket []Bucket `json:"confirmed_to_ticket"`
	} `json:"histograms"`

	checkout, toTicket *Histogram
}

// Host describes the load generator's machine.
type Host struct {
	// CPUs is the machine's, whose time MachineCPUSeconds is (where it is known), even when this
	// process may run on fewer.
	CPUs int `json:"cpus"`
	// LoadAverage is the 1-minute load average at the start and at the end (Linux; 0 elsewhere).
	LoadAverageStart float64 `json:"load_average_start"`
	LoadAverageEnd   float64 `json:"load_average_end"`
	// The CPU time used from the first shopper's start until the last order ended
	// (CPUWindowSeconds of wall time): by the whole machine (Linux; 0 elsewhere), and by this
	// process (with -spawn, all of Handoff but Postgres, and the load generator). StolenCPUSeconds
	// is the time the hypervisor ran other machines on the machine's CPUs while it had work for
	// them: not part of MachineCPUSeconds, but a sign of how much the machine was shared.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds"`
	ProcessCPUSeconds float64 `json:"process_cpu_seconds"`
	StolenCPUSeconds  float64 `json:"stolen_cpu_seconds"`
	CPUWindowSeconds  float64 `json:"cpu_window_seconds"`
}

// CPUPerOrder is the CPU time spent for each order that reached a terminal: what a whole
// order's life costs, to compare builds on one machine whatever its speed.
type CPUPerOrder struct {
	MachineMS float64 `json:"machine_ms"`
	ProcessMS float64 `json:"process_ms"`
}

// fillCPUPerOrder divides the run's CPU time by its orders.
func (res *Result) fillCPUPerOrder() {
	if res.OrdersWithTicket == 0 {
		return
	}
	n := float64(res.OrdersWithTicket)
	res.CPUPerOrder = CPUPerOrder{MachineMS: res.Host.MachineCPUSeconds * 1000 / n, ProcessMS: res.Host.ProcessCPUSeconds * 1000 / n}
}

// cpuLine is the summary's line for CPUPerOrder, empty where the machine's figure is unknown.
func cpuLine(res *Result) string {
	if res.CPUPerOrder.MachineMS == 0 || res.Host.CPUWindowSeconds == 0 || res.Host.CPUs == 0 {
		return ""
	}
	capacity := res.Host.CPUWindowSeconds * float64(res.Host.CPUs)
	line := fmt.Sprintf("  CPU per order     %8.2f ms of the machine's (%.0f%% of its %d CPUs busy", res.CPUPerOrder.MachineMS, 100*res.Host.MachineCPUSeconds/capacity, res.Host.CPUs)
	if stolen := 100 * res.Host.StolenCPUSeconds / capacity; stolen >= 0.5 {
		line += fmt.Sprintf(", %.0f%% more taken by the hypervisor", stolen)
	}
	line += ")"
	if res.CPUPerOrder.ProcessMS > 0 {
		line += fmt.Sprintf(", %.2f ms of it in this process", res.CPUPerOrder.ProcessMS)
	}
	return line + "\n"
}

// loadAverage is the 1-minute load average, or 0 where /proc/loadavg does not exist.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	_, _ = fmt.Sscanf(string(b), "%f", &v)
	return v
}

// OversoldLine is a store and SKU of which more was confirmed than was available.
type OversoldLine struct {
	Store     string `json:"store"`
	SKU       string `json:"sku"`
	Available int64  `json:"available_at_start"`
	Confirmed int64  `json:"confirmed"`
}

// Invariants is inventory's own check after the run (InventoryAdminService.CheckInvariants).
type Invariants struct {
	Checked       bool     `json:"checked"`
	OK            bool     `json:"ok"`
	LevelsChecked int64    `json:"levels_checked"`
	Violations    []string `json:"violations,omitempty"`
	// Note says why it was not checked.
	Note string `json:"note,omitempty"`
}

func (r *run) result(ctx context.Context) *Result {
	window := r.endTime().Sub(r.start).Seconds()
	res := &Result{
		Started:         r.start,
		Shoppers:        r.cfg.Shoppers,
		MaxInFlight:     r.cfg.MaxInFlight,
		Basket:          r.cfg.Basket,
		Mode:            "spread",
		HotSKU:          r.cfg.HotSKU,
		Gateway:         r.cfg.Endpoints.GatewayURL,
		POS:             r.cfg.Endpoints.POSURL,
		Stores:          len(r.fleet.stores),
		StoresAccepting: r.accepting,
		OrdersAsked:     r.cfg.Orders,
		Interrupted:     r.interruptedAt.Load() != 0,
		WindowSeconds:   window,
		Host: Host{CPUs: r.cpuStart.cpus, LoadAverageStart: r.loadAvgStart, LoadAverageEnd: loadAverage(),
			MachineCPUSeconds: (r.cpuEnd.machine - r.cpuStart.machine).Seconds(),
			ProcessCPUSeconds: (r.cpuEnd.process - r.cpuStart.process).Seconds(),
			StolenCPUSeconds:  (r.cpuEnd.stolen - r.cpuStart.stolen).Seconds(),
			CPUWindowSeconds:  r.cpuWindow.Seconds()},
		Checkouts:         r.checkouts.Load(),
		Confirmed:         r.confirmed.Load(),
		Rejected:          r.rejected.Load(),
		Failed:            r.failed.Load(),
		OrdersWithTicket:  r.withTicket.Load(),
		Collected:         r.collected.Load(),
		CheckoutLatency:   r.checkout.Stats(),
		ConfirmedToTicket: r.toTicket.Stats(),
		ConfirmedToRaised: r.toRaised.Stats(),
		RaisedToTerminal:  r.raisedToTerminal.Stats(),
		OrderToCollected:  r.lifecycle.Stats(),
		Calls:             r.calls.stats(),
		checkout:          &r.checkout,
		toTicket:          &r.toTicket,
	}
	if res.Host.CPUs == 0 { // no /proc/stat: no machine figures either
		res.Host.CPUs = runtime.NumCPU()
	}
	if r.cfg.HotSKU != "" {
		res.Mode = "hot-sku"
	}
	res.InterruptedOrders = r.interrupted.Load()
	if r.gaveUp.Load() {
		res.GaveUp = fmt.Sprintf("no checkout could be made for %s (every order failed before it)", r.cfg.GiveUpAfter)
	}
	res.OrdersWindowSeconds, res.CollectedWindowSeconds, res.CheckoutsWindowSeconds = window, window, window
	if r.cfg.Orders > 0 {
		res.OrdersWindowSeconds = r.until(&r.lastTicket)
		res.CollectedWindowSeconds = r.until(&r.lastCollected)
		res.CheckoutsWindowSeconds = r.until(&r.lastAnswered)
	}
	res.OrdersInWindow = r.withTicketInWindow.Load()
	res.OrdersPerSecond = rate(res.OrdersInWindow, res.OrdersWindowSeconds)
	res.CollectedInWindow, res.CheckoutsInWindow = r.collectedInWindow.Load(), r.answeredInWindow.Load()
	res.CollectedPerSecond = rate(res.CollectedInWindow, res.CollectedWindowSeconds)
	res.CheckoutsPerSecond = rate(res.CheckoutsInWindow, res.CheckoutsWindowSeconds)
	res.Histograms.Checkout = r.checkout.Buckets()
	res.Histograms.ConfirmedToTicket = r.toTicket.Buckets()
	res.fillCPUPerOrder()

	r.orders.Range(func(_, v any) bool {
		t := v.(*tracked)
		t.mu.Lock()
		if t.unitsIn && t.receivedAt.IsZero() {
			res.ConfirmedUnanswered++
		}
		t.mu.Unlock()
		return true
	})
	r.mu.Lock()
	res.Errors = maps.Clone(r.errors)
	res.Rejections = maps.Clone(r.rejects)
	res.UnknownCheckouts = r.unknown
	res.StoresSnapshotted, res.SnapshotNote = len(r.snapshot), r.snapshotNote
	for k, n := range r.units {
		res.ConfirmedUnits += n
		if !r.snapshot[k.store] {
			res.UncheckedUnits += n
			if !slices.Contains(res.UncheckedStores, k.store) {
				res.UncheckedStores = append(res.UncheckedStores, k.store)
			}
			continue
		}
		if avail := r.initial[k]; n > avail {
			res.OversoldUnits += n - avail
			res.Oversold = append(res.Oversold, OversoldLine{Store: k.store, SKU: k.sku, Available: avail, Confirmed: n})
		}
	}
	r.mu.Unlock()
	slices.Sort(res.UncheckedStores)
	res.Invariants = r.checkInvariants(ctx)
	return res
}

// until is the seconds from the run's start to last (Unix nanoseconds), 0 if it never was.
func (r *run) until(last *atomic.Int64) float64 {
	if n := last.Load(); n != 0 {
		return time.Unix(0, n).Sub(r.start).Seconds()
	}
	return 0
}

// rate is n over seconds; 0 over none.
func rate[N uint64 | int64](n N, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(n) / seconds
}

// checkInvariants asks inventory (its gRPC API, with an admin token) whether every stock level
// still holds: 0 <= reserved <= on hand, reserved = the sum of open holds.
func (r *run) checkInvariants(ctx context.Context) Invariants {
	// Its own context: the run's has ended if the run was interrupted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	admin, ctx, closeConn, err := r.inventoryAdmin(ctx)
	if err != nil {
		return Invariants{Note: err.Error()}
	}
	defer closeConn()
	res, err := admin.CheckInvariants(ctx, &inventoryv1.CheckInvariantsRequest{})
	if err != nil {
		return Invariants{Note: fmt.Sprintf("CheckInvariants at %s: %v", r.cfg.Endpoints.InventoryAddr, err)}
	}
	inv := Invariants{Checked: true, OK: res.GetOk(), LevelsChecked: res.GetLevelsChecked()}
	for _, v := range res.GetViolations() {
		inv.Violations = append(inv.Violations, fmt.Sprintf("%s %s: %s (%s)", v.GetStoreId(), v.GetSku(), v.GetRule(), v.GetDetail()))
	}
	return inv
}

// Sound reports whether the run showed that Handoff kept its promises: nothing oversold, every
// confirmed unit counted and checked against a store's availability, and inventory's invariants
// checked and holding. A run whose checks could not be made shows nothing.
func (res *Result) Sound() bool { return res.Unsound() == "" }

// Unsound says why the run is not sound, each cause by name; "" when it is.
func (res *Result) Unsound() string {
	var why []string
	if res.OversoldUnits > 0 {
		why = append(why, fmt.Sprintf("%d units were oversold: confirmed beyond what their stores had available at the start", res.OversoldUnits))
	}
	if res.UncheckedUnits > 0 {
		cause := "created since the run began, or beyond the area searched"
		if res.SnapshotNote != "" {
			cause = res.SnapshotNote
		}
		why = append(why, fmt.Sprintf("%d confirmed units could not be checked for overselling: they were sold at %s, whose stock was not taken at the start (%s)",
			res.UncheckedUnits, storeList(res.UncheckedStores), cause))
	}
	if res.UnknownCheckouts > 0 {
		why = append(why, fmt.Sprintf("%d checkouts got no answer, no ticket, and could not be looked up: their orders' units may be missing from the oversold check", res.UnknownCheckouts))
	}
	switch inv := res.Invariants; {
	case !inv.Checked:
		why = append(why, "inventory's invariants could not be checked: "+cmp.Or(inv.Note, "no reason given"))
	case !inv.OK:
		why = append(why, fmt.Sprintf("inventory's invariants do not hold: %d violations", len(inv.Violations)))
	}
	return strings.Join(why, "; ")
}

// storeList names stores for a message: a few by id, the rest by number.
func storeList(ids []string) string {
	const named = 5
	switch {
	case len(ids) == 0:
		return "stores"
	case len(ids) == 1:
		return "store " + ids[0]
	case len(ids) <= named:
		return fmt.Sprintf("%d stores (%s)", len(ids), strings.Join(ids, ", "))
	}
	return fmt.Sprintf("%d stores (%s and %d more)", len(ids), strings.Join(ids[:named], ", "), len(ids)-named)
}

// Measured reports whether the run measured what it is for; Unmeasured says why not.
func (res *Result) Measured() bool { return res.Unmeasured() == "" }

// Unmeasured says why the run measured nothing, whatever else it shows; "" when it measured
// something. A run measured nothing when no checkout could be made at all (every cart refused:
// an edge down, a rate limit), when every checkout failed (no order confirmed or rejected), or
// when orders were confirmed but the ticket of none reached a terminal (the ticket feed down):
// its orders/s is then 0 for want of the feed, not a figure of the system. A run of a duration
// that counted no error and measured nothing had a window shorter than an order's way through
// the system: it says so, rather than point at errors there are none of.
func (res *Result) Unmeasured() string {
	short := res.OrdersAsked == 0 && res.Failed == 0 && len(res.Errors) == 0
	const longer = "no error was counted: the window is shorter than an order takes; try a longer -duration"
	switch {
	case res.Checkouts == 0 && short:
		return fmt.Sprintf("the %.3gs window ended before any checkout was made (%s)", res.WindowSeconds, longer)
	case res.Checkouts == 0:
		return "no checkout could be made: every order failed before it (see the errors)"
	case res.Confirmed+res.Rejected == 0 && short:
		return fmt.Sprintf("none of the %d checkouts had placed an order when the %.3gs window ended (%s)", res.Checkouts, res.WindowSeconds, longer)
	case res.Confirmed+res.Rejected == 0:
		return fmt.Sprintf("none of the %d checkouts placed an order (see the errors)", res.Checkouts)
	case res.Confirmed > 0 && res.OrdersWithTicket == 0:
		return fmt.Sprintf("%d orders were confirmed, but the ticket of none reached a terminal (see the errors: StreamTickets is the ticket feed)", res.Confirmed)
	case res.Confirmed > 0 && res.WindowSeconds > 0 && res.OrdersPerSecond == 0 && short:
		return fmt.Sprintf("%d orders were confirmed, but the %.3gs window ended before the ticket of any reached a terminal (%d after it; %s)", res.Confirmed, res.WindowSeconds, res.OrdersWithTicket, longer)
	case res.Confirmed > 0 && res.WindowSeconds > 0 && res.OrdersPerSecond == 0:
		// Tickets came only after the window (a feed down for all of it): orders/s is 0 for
		// want of the feed as surely as when none came at all.
		return fmt.Sprintf("%d orders were confirmed, but the ticket of none reached a terminal within the %.1fs window (%d after it; see the errors: StreamTickets is the ticket feed)", res.Confirmed, res.WindowSeconds, res.OrdersWithTicket)
	}
	return ""
}

// WriteJSON writes the result to path.
func (res *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// PrintSummary writes the summary for people.
func (res *Result) PrintSummary(w io.Writer) {
	what := "menu orders spread over the chain"
	if res.HotSKU != "" {
		what = "every order one " + res.HotSKU
	}
	length := fmt.Sprintf("%.1fs", res.WindowSeconds)
	if res.OrdersAsked > 0 {
		length = fmt.Sprintf("%d checkouts asked, %.1fs to the last order's end", res.OrdersAsked, res.WindowSeconds)
	}
	fmt.Fprintf(w, "Handoff load: %d shoppers, %s, %s; %d stores with a terminal, %d of them taking orders\n", res.Shoppers, length, what, res.Stores, res.StoresAccepting)
	fmt.Fprintf(w, "  shoppers → gateway %s (gRPC-web); terminals → pos-adapter %s (gRPC-web)\n", res.Gateway, res.POS)
	cart := "made one change at a time (CreateCart, AddLine per line, SetPickup)"
	if res.Basket {
		cart = "sent whole in one CreateCart"
	}
	if res.MaxInFlight > 0 {
		fmt.Fprintf(w, "  model: a shopper checks out again once its order is CONFIRMED; the pickup runs on beside it, ≤ %d open orders per shopper; each cart %s\n", res.MaxInFlight, cart)
	}
	switch {
	case res.Interrupted:
		fmt.Fprintf(w, "  INTERRUPTED after %.1fs: the window ends there; %d orders cut off in flight (not counted as errors)\n", res.WindowSeconds, res.InterruptedOrders)
	case res.InterruptedOrders > 0:
		fmt.Fprintf(w, "  interrupted after the window: %d orders cut off while they finished (not counted as errors)\n", res.InterruptedOrders)
	}
	if res.GaveUp != "" {
		fmt.Fprintf(w, "  GAVE UP: %d of the %d checkouts asked were made: %s\n", res.Checkouts, res.OrdersAsked, res.GaveUp)
	}
	fmt.Fprintf(w, "  host: %d CPUs, load average %.1f at the start, %.1f at the end\n", res.Host.CPUs, res.Host.LoadAverageStart, res.Host.LoadAverageEnd)
	over := func(seconds float64, last string) string {
		if res.OrdersAsked == 0 {
			return ""
		}
		return fmt.Sprintf(", over the %.2fs from the start to the last %s", seconds, last)
	}
	// Each rate gives the count it is of (within its window) beside the run's whole count: the
	// orders finished after the window are in the second only.
	fmt.Fprintf(w, "  orders/s          %8.1f   checkouts CONFIRMED with the ticket at a terminal (%d in the window, %d in all%s)\n", res.OrdersPerSecond, res.OrdersInWindow, res.OrdersWithTicket, over(res.OrdersWindowSeconds, "ticket"))
	fmt.Fprintf(w, "  collected/s       %8.1f   full lifecycle to COLLECTED (%d in the window, %d in all%s)\n", res.CollectedPerSecond, res.CollectedInWindow, res.Collected, over(res.CollectedWindowSeconds, "collected"))
	fmt.Fprintf(w, "  checkouts         %8d   %d confirmed, %d rejected (no stock), %d failed calls or orders\n", res.Checkouts, res.Confirmed, res.Rejected, res.Failed)
	fmt.Fprint(w, cpuLine(res))
	fmt.Fprintf(w, "  checkout latency             %s\n", latencies(res.CheckoutLatency))
	fmt.Fprintf(w, "  confirmed→ticket latency     %s\n", latencies(res.ConfirmedToTicket))
	if res.ConfirmedToRaised.Count > 0 {
		fmt.Fprintf(w, "    of which confirmed→raised  p50 %s  p99 %s; raised→terminal p50 %s  p99 %s\n",
			fmtMS(res.ConfirmedToRaised.P50MS), fmtMS(res.ConfirmedToRaised.P99MS), fmtMS(res.RaisedToTerminal.P50MS), fmtMS(res.RaisedToTerminal.P99MS))
	}
	fmt.Fprintf(w, "  checkout→collected latency   %s\n", latencies(res.OrderToCollected))
	var calls []string
	for _, name := range rpcOrder(res.Calls) {
		s := res.Calls[name]
		calls = append(calls, fmt.Sprintf("%s %s/%s", name, fmtMS(s.P50MS), fmtMS(s.P99MS)))
	}
	if len(calls) > 0 {
		fmt.Fprintf(w, "  calls p50/p99     %s\n", strings.Join(calls, " · "))
	}
	fmt.Fprintf(w, "  errors            %s\n", counts(res.Errors))
	if len(res.Rejections) > 0 {
		fmt.Fprintf(w, "  rejections        %s\n", counts(res.Rejections))
	}
	fmt.Fprintf(w, "  oversold units    %8d   confirmed beyond each store's availability at the start (of %d units confirmed", res.OversoldUnits, res.ConfirmedUnits)
	if res.ConfirmedUnanswered > 0 {
		fmt.Fprintf(w, ", with %d orders whose checkout got no answer", res.ConfirmedUnanswered)
	}
	fmt.Fprintf(w, "; the stock of %d stores taken", res.StoresSnapshotted)
	if res.UncheckedUnits > 0 {
		fmt.Fprintf(w, "; %d units NOT CHECKED, at %s whose stock was not taken", res.UncheckedUnits, storeList(res.UncheckedStores))
	}
	fmt.Fprintln(w, ")")
	if res.SnapshotNote != "" {
		fmt.Fprintf(w, "  stores missed?    %s\n", res.SnapshotNote)
	}
	if res.UnknownCheckouts > 0 {
		fmt.Fprintf(w, "  NOT CHECKED       %d checkouts got no answer, no ticket, and could not be looked up: their orders' units may be missing\n", res.UnknownCheckouts)
	}
	for _, o := range res.Oversold {
		fmt.Fprintf(w, "    %s %s: %d confirmed, %d were available\n", o.Store, o.SKU, o.Confirmed, o.Available)
	}
	switch inv := res.Invariants; {
	case !inv.Checked:
		fmt.Fprintf(w, "  inventory check   not run: %s\n", inv.Note)
	case inv.OK:
		fmt.Fprintf(w, "  inventory check   OK: %d stock levels, reserved = open holds, 0 ≤ reserved ≤ on hand\n", inv.LevelsChecked)
	default:
		fmt.Fprintf(w, "  inventory check   FAILED: %d violations\n", len(inv.Violations))
		for _, v := range inv.Violations {
			fmt.Fprintf(w, "    %s\n", v)
		}
	}
}

func latencies(s Stats) string {
	if s.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s  (n=%d)", fmtMS(s.P50MS), fmtMS(s.P95MS), fmtMS(s.P99MS), fmtMS(s.MaxMS), s.Count)
}

func fmtMS(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.1fms", v)
}

func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(m[b], m[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
