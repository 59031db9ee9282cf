// Package journey plays one shopper's whole order against a running Handoff and tells it step
// by step: find the nearest store that has everything, fill a cart, check out, watch the order
// live, and, as a terminal of that store, accept it, mark it ready and hand it over against the
// shopper's pickup code. The shopper speaks gRPC-web to the gateway; the terminal speaks
// gRPC-web to the pos-adapter.
package journey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	"github.com/handoff-dev/handoff/mobile-mock/terminal"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// Item is a SKU and how many of it the shopper wants.
type Item struct {
	SKU      string
	Quantity int32
}

// ParseItems reads "LATTE-16:2,CROISSANT" (quantity 1 when omitted). A SKU named more than
// once is one item of the quantities added up.
func ParseItems(s string) ([]Item, error) {
	var items []Item
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sku, qty, found := strings.Cut(part, ":")
		it := Item{SKU: strings.TrimSpace(sku), Quantity: 1}
		if it.SKU == "" {
			return nil, fmt.Errorf("item %q: no SKU", part)
		}
		if found {
			// Atoi reads the whole field: Sscanf("%d") took "2x" for 2.
			n, err := strconv.Atoi(strings.TrimSpace(qty))
			if err != nil || n < 1 || n > maxQuantity {
				return nil, fmt.Errorf("item %q: quantity must be a whole number 1-%d", part, maxQuantity)
			}
			it.Quantity = int32(n)
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, errors.New("no items: want e.g. LATTE-16:2,CROISSANT")
	}
	items = mergeItems(items)
	for _, it := range items {
		if it.Quantity > maxQuantity {
			return nil, fmt.Errorf("%s: %d in all, more than the %d a cart line holds", it.SKU, it.Quantity, maxQuantity)
		}
	}
	return items, nil
}

// maxQuantity is the most of one SKU a cart line holds.
const maxQuantity = 99

// mergeItems makes each SKU one item, its quantities added up, in the order SKUs first come.
// The catalog answers a SKU asked twice once, and the cart adds a line's second AddLine to the
// first: items repeating a SKU would be told with the wrong quantities.
func mergeItems(items []Item) []Item {
	var merged []Item
	at := map[string]int{}
	for _, it := range items {
		if i, ok := at[it.SKU]; ok {
			merged[i].Quantity += it.Quantity
			continue
		}
		at[it.SKU] = len(merged)
		merged = append(merged, it)
	}
	return merged
}

// Config is one journey.
type Config struct {
	Endpoints  system.Endpoints
	HTTPClient *http.Client
	// Near is where the shopper stands.
	Near *commonv1.LatLng
	// RadiusMeters bounds the store search; 0 means the locator's default (10 km).
	RadiusMeters float64
	// Items go into the cart.
	Items []Item
	// Customer is the shopper's id (token subject); empty picks a fresh one.
	Customer string
	// Out receives the story.
	Out io.Writer
	// Wait bounds how long the order may take from checkout to a final state; 0 means 2
	// minutes.
	Wait time.Duration
}

// Run plays the journey. It returns the final order, and an error unless the order was
// COLLECTED.
func Run(ctx context.Context, cfg Config) (*fulfilmentv1.Order, error) {
	if cfg.Customer == "" {
		cfg.Customer = "demo-" + uuid.NewString()[:8]
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = shopper.HTTPClient(16)
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 2 * time.Minute
	}
	p := &printer{out: cfg.Out, start: time.Now()}
	j := &journey{cfg: cfg, p: p}
	return j.run(ctx)
}

type journey struct {
	cfg   Config
	p     *printer
	app   *shopper.App
	store *inventoryv1.Store
	term  *terminal.Terminal
	feed  feedState
}

// feedState is how the terminal's ticket feed fares. Follow retries a failing feed quietly;
// this keeps its last error, so that an order left CONFIRMED for want of the feed says so.
type feedState struct {
	mu       sync.Mutex
	lastErr  error
	since    bool // no ticket has come since lastErr
	reported bool
}

// broke records a failure of the feed and reports whether it is the first.
func (f *feedState) broke(err error) (first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	first = !f.reported
	f.lastErr, f.since, f.reported = err, true, true
	return first
}

// got records a ticket received: the feed works. (A stream asked for is no sign of it: its
// failure shows only when it is read.)
func (f *feedState) got() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since = false
}

// why says what the feed may have to do with an order still waiting; "" when nothing.
func (f *feedState) why() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since {
		return fmt.Sprintf("; no ticket has come since the store's ticket feed last failed: %v", f.lastErr)
	}
	return ""
}

func (j *journey) run(ctx context.Context) (*fulfilmentv1.Order, error) {
	cfg := j.cfg
	customerToken, err := cfg.Endpoints.Token(auth.Principal{Subject: cfg.Customer, Role: auth.RoleCustomer})
	if err != nil {
		return nil, err
	}
	adminToken, err := cfg.Endpoints.Token(auth.Principal{Subject: "mobile-mock-demo", Role: auth.RoleAdmin})
	if err != nil {
		return nil, err
	}
	j.app = shopper.New(cfg.HTTPClient, cfg.Endpoints.GatewayURL, customerToken)
	j.p.say("shopper", "%s at %.4f,%.4f; gateway %s (gRPC-web)", cfg.Customer, cfg.Near.GetLatitude(), cfg.Near.GetLongitude(), cfg.Endpoints.GatewayURL)

	// 1. What the shopper wants, as the catalog lists it. Each variant's quantity is looked up
	// by its SKU, not its position: the items are merged (a SKU named twice is one line of both
	// quantities), and the catalog answers each SKU once.
	cfg.Items = mergeItems(cfg.Items)
	j.cfg.Items = cfg.Items
	skus := make([]string, len(cfg.Items))
	wanted := make(map[string]int32, len(cfg.Items))
	for i, it := range cfg.Items {
		skus[i] = it.SKU
		wanted[it.SKU] = it.Quantity
	}
	vres, err := j.app.Catalog.BatchGetVariants(ctx, connect.NewRequest(&catalogv1.BatchGetVariantsRequest{Skus: skus}))
	if err != nil {
		return nil, fmt.Errorf("look up %s in the catalog: %w", strings.Join(skus, ", "), err)
	}
	for _, v := range vres.Msg.GetVariants() {
		j.p.say("catalog", "%-10s %s, %s  %s × %d", v.GetSku(), v.GetProductName(), v.GetName(), shopper.Money(v.GetPrice()), wanted[v.GetSku()])
	}

	// 2. The nearest open store that has all of it.
	lines := make([]*inventoryv1.StockLine, len(cfg.Items))
	for i, it := range cfg.Items {
		lines[i] = &inventoryv1.StockLine{Sku: it.SKU, Quantity: it.Quantity}
	}
	fres, err := j.app.Locator.FindStores(ctx, connect.NewRequest(&inventoryv1.FindStoresRequest{
		Location: cfg.Near, RadiusMeters: cfg.RadiusMeters, Lines: lines, MaxResults: 3, OnlyFulfillable: true,
	}))
	if err != nil {
		return nil, fmt.Errorf("find stores: %w", err)
	}
	if len(fres.Msg.GetStores()) == 0 {
		return nil, errors.New("no open store near the shopper has everything in stock now (try -near elsewhere, or other -items)")
	}
	for i, m := range fres.Msg.GetStores() {
		mark := "  "
		if i == 0 {
			mark = "→ "
		}
		j.p.say("locator", "%s%s (%s)  %.2f km  %s", mark, m.GetStore().GetName(), m.GetStore().GetId(), m.GetDistanceMeters()/1000, availability(m))
	}
	match := fres.Msg.GetStores()[0]
	j.store = match.GetStore()

	// 3. A terminal of that store, following the store's feed before the order exists.
	admin := terminal.NewAdmin(cfg.HTTPClient, cfg.Endpoints.POSURL, adminToken)
	if j.term, err = admin.Register(ctx, j.store.GetId(), "mobile-mock demo counter"); err != nil {
		return nil, err
	}
	// The terminal's credential is of no use once the demo ends: revoked then, on a context of
	// its own (ctx may have ended: Ctrl-C), so the store's list keeps no live terminal of it.
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := admin.Revoke(rctx, j.term.ID); err != nil {
			j.p.say("store", "%v", err)
		}
	}()
	j.p.say("store", "terminal %s registered at %s; following its ticket feed on %s", j.term.ID, j.store.GetId(), cfg.Endpoints.POSURL)
	followCtx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	tickets := make(chan *posv1.Ticket, 1024)
	followErr := make(chan error, 1)
	go func() {
		followErr <- j.term.Follow(followCtx, nil, func(err error) {
			if j.feed.broke(err) {
				j.p.say("store", "ticket feed failing (%v); retrying quietly", err)
			}
		}, func(t *posv1.Ticket) {
			j.feed.got()
			select {
			case tickets <- t:
			case <-followCtx.Done():
			}
		})
	}()

	// 4. The cart.
	cres, err := j.app.Cart.CreateCart(ctx, connect.NewRequest(&cartv1.CreateCartRequest{}))
	if err != nil {
		return nil, fmt.Errorf("create a cart: %w", err)
	}
	cart := cres.Msg.GetCart()
	for _, it := range cfg.Items {
		ares, err := j.app.Cart.AddLine(ctx, connect.NewRequest(&cartv1.AddLineRequest{CartId: cart.GetId(), Sku: it.SKU, Quantity: it.Quantity}))
		if err != nil {
			return nil, fmt.Errorf("add %s to the cart: %w", it.SKU, err)
		}
		cart = ares.Msg.GetCart()
	}
	sres, err := j.app.Cart.SetPickup(ctx, connect.NewRequest(&cartv1.SetPickupRequest{
		CartId: cart.GetId(), Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: j.store.GetId()}},
	}))
	if err != nil {
		return nil, fmt.Errorf("choose %s for pickup: %w", j.store.GetId(), err)
	}
	cart = sres.Msg.GetCart()
	j.p.say("cart", "%s: %d line(s), subtotal %s, pickup at %s", cart.GetId(), len(cart.GetLines()), shopper.Money(cart.GetSubtotal()), cart.GetPickup().GetStoreName())

	// 5. Checkout.
	key := "demo-" + uuid.NewString()
	checkoutStart := time.Now()
	kres, err := j.app.Cart.Checkout(ctx, connect.NewRequest(&cartv1.CheckoutRequest{
		CartId: cart.GetId(), IdempotencyKey: key, PickupName: "Demo Shopper",
		ExpectedSubtotal: cart.GetSubtotal(), // the order charges what the shopper was shown, or is refused
	}))
	if err != nil {
		return nil, fmt.Errorf("check out: %w", err)
	}
	order := kres.Msg.GetOrder()
	j.p.say("checkout", "order %s %s in %s; total %s", order.GetId(), stateName(order.GetState()), time.Since(checkoutStart).Round(time.Millisecond), shopper.Money(order.GetTotal()))
	if order.GetState() == fulfilmentv1.OrderState_ORDER_STATE_REJECTED {
		return order, fmt.Errorf("order %s was REJECTED: %s", order.GetId(), order.GetReason())
	}
	if order.GetPickupCode() != "" {
		j.p.say("checkout", "pickup code %s at %s, ready by %s", order.GetPickupCode(), order.GetStoreName(), j.storeTime(order.GetReadyByTime().AsTime()))
	}

	return j.follow(ctx, order, tickets, followErr)
}

// follow watches the order as the shopper while the terminal works it, until it is final.
func (j *journey) follow(ctx context.Context, order *fulfilmentv1.Order, tickets <-chan *posv1.Ticket, followErr <-chan error) (*fulfilmentv1.Order, error) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	updates := make(chan *fulfilmentv1.WatchOrderResponse)
	watchErr := make(chan error)
	// A watch that breaks is opened again, as an app does, until the journey ends (its Wait,
	// at most): the services end their streams on purpose when draining (Unavailable, to be
	// called again), and a proxy or the network may cut one; the stream opens with the order
	// as it is now. Each break is told to the journey, which says so.
	go func() {
		pause := minWatchPause
		for {
			stream, err := j.app.Orders.WatchOrder(watchCtx, connect.NewRequest(&fulfilmentv1.WatchOrderRequest{OrderId: order.GetId()}))
			if err == nil {
				for stream.Receive() {
					select {
					case updates <- stream.Msg():
						pause = minWatchPause
					case <-watchCtx.Done():
						_ = stream.Close()
						return
					}
				}
				if err = stream.Err(); err == nil {
					err = errors.New("the stream ended")
				}
				_ = stream.Close()
			}
			select {
			case watchErr <- err:
			case <-watchCtx.Done():
				return
			}
			if !shopper.WatchAgain(err) {
				return
			}
			select {
			case <-time.After(pause):
			case <-watchCtx.Done():
				return
			}
			pause = min(2*pause, maxWatchPause)
		}
	}()

	code := order.GetPickupCode()
	handedOver := false
	// collected is the order as HandOver answered it COLLECTED: final, whatever the watch
	// says or fails to say after.
	var collected *fulfilmentv1.Order
	var watchFailure error             // the watch's last break, told if the order does not end in time
	var handOverAfter <-chan time.Time // set once the shopper has checked in
	handOver := func(why string) error {
		if handedOver {
			return nil
		}
		handedOver = true
		j.p.say("store", "shopper shows code %s (%s); handing over", code, why)
		o, err := j.term.HandOver(ctx, order.GetId(), code)
		if err != nil {
			return fmt.Errorf("hand over order %s: %w", order.GetId(), err)
		}
		j.p.say("store", "HandOver → %s", stateName(o.GetState()))
		if o.GetState() == fulfilmentv1.OrderState_ORDER_STATE_COLLECTED {
			collected = o
		}
		return nil
	}
	deadline := time.After(j.cfg.Wait)
	// The feed is at least once: a ticket not yet acknowledged when a stream breaks comes again
	// on the next. Acted on twice, a NEW_ORDER would be accepted again once READY, and fail.
	handled := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return order, ctx.Err()
		case <-deadline:
			why := j.feed.why()
			if watchFailure != nil {
				why += fmt.Sprintf(" (the shopper's watch last broke: %v)", watchFailure)
			}
			return order, fmt.Errorf("order %s still %s after %s%s", order.GetId(), stateName(order.GetState()), j.cfg.Wait, why)
		case err := <-followErr:
			return order, fmt.Errorf("terminal: %w", err)
		case err := <-watchErr:
			if collected != nil {
				j.p.say("done", "order %s COLLECTED at %s as HandOver answered (the shopper's watch broke before telling it: %v), %s after the journey began",
					order.GetId(), collected.GetStoreName(), err, time.Since(j.p.start).Round(time.Millisecond))
				return collected, nil
			}
			if !shopper.WatchAgain(err) {
				return order, fmt.Errorf("watch order %s: %w before a final state (last: %s)", order.GetId(), err, stateName(order.GetState()))
			}
			watchFailure = err
			j.p.say("watch", "the stream broke (%v) with the order %s; opening it again", err, stateName(order.GetState()))
		case <-handOverAfter:
			handOverAfter = nil
			if err := handOver("no check-in ticket within 5s"); err != nil {
				return order, err
			}
		case t := <-tickets:
			if t.GetOrderId() != order.GetId() {
				continue // another shopper's order at this store
			}
			hint := ""
			if h := t.GetPickupCodeHint(); h != "" {
				hint = " (bag hint …" + h + ")"
			}
			if handled[t.GetTicketId()] {
				j.p.say("store", "ticket #%d %s again (sent again after the feed reopened): a duplicate, dropped", t.GetSequence(), ticketKindName(t.GetKind()))
				continue
			}
			handled[t.GetTicketId()] = true
			j.p.say("store", "ticket #%d %s%s", t.GetSequence(), ticketKindName(t.GetKind()), hint)
			switch t.GetKind() {
			case posv1.TicketKind_TICKET_KIND_NEW_ORDER:
				o, err := j.term.Accept(ctx, order.GetId())
				if err != nil {
					return order, fmt.Errorf("accept order %s: %w", order.GetId(), err)
				}
				j.p.say("store", "AcceptOrder → %s", stateName(o.GetState()))
				o, err = j.term.MarkReady(ctx, order.GetId())
				if err != nil {
					return order, fmt.Errorf("mark order %s ready: %w", order.GetId(), err)
				}
				j.p.say("store", "MarkReady → %s", stateName(o.GetState()))
			case posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN:
				handOverAfter = nil
				if err := handOver("checked in"); err != nil {
					return order, err
				}
			}
			// Acknowledged once handled, as a till does: a ticket whose action failed is not
			// marked done.
			if err := j.term.Ack(ctx, t.GetTicketId()); err != nil {
				return order, fmt.Errorf("acknowledge ticket %s: %w", t.GetTicketId(), err)
			}
		case u := <-updates:
			if u.GetOrder().GetVersion() < order.GetVersion() {
				continue // older than what is known (a watch opened again may be behind it)
			}
			order = u.GetOrder()
			if tr := u.GetTransition(); tr != nil {
				j.p.say("watch", "%s → %s  at %s by %s%s", stateName(tr.GetFromState()), stateName(tr.GetToState()),
					tr.GetTime().AsTime().Local().Format("15:04:05.000"), actorName(tr.GetActor()), reason(tr.GetReason()))
			} else {
				j.p.say("watch", "%s (as the stream opened)", stateName(order.GetState()))
			}
			switch order.GetState() {
			case fulfilmentv1.OrderState_ORDER_STATE_READY:
				if code == "" {
					code = order.GetPickupCode()
				}
				if handedOver || handOverAfter != nil {
					continue
				}
				res, err := j.app.Orders.CheckIn(ctx, connect.NewRequest(&fulfilmentv1.CheckInRequest{OrderId: order.GetId(), Bay: "counter"}))
				if err != nil {
					j.p.say("shopper", "check-in failed (%v); walking up to the counter anyway", err)
					if err := handOver("no check-in"); err != nil {
						return order, err
					}
					continue
				}
				j.p.say("shopper", "arrived: checked in at the %s", res.Msg.GetOrder().GetCheckIn().GetBay())
				handOverAfter = time.After(5 * time.Second)
			case fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED:
				if code == "" && order.GetPickupCode() != "" {
					code = order.GetPickupCode()
					j.p.say("shopper", "pickup code %s", code)
				}
			case fulfilmentv1.OrderState_ORDER_STATE_COLLECTED:
				j.p.say("done", "order %s COLLECTED at %s, %s after the journey began", order.GetId(), order.GetStoreName(), time.Since(j.p.start).Round(time.Millisecond))
				return order, nil
			case fulfilmentv1.OrderState_ORDER_STATE_REJECTED, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, fulfilmentv1.OrderState_ORDER_STATE_EXPIRED:
				return order, fmt.Errorf("order %s ended %s: %s", order.GetId(), stateName(order.GetState()), order.GetReason())
			}
		}
	}
}

// minWatchPause and maxWatchPause bound the wait before a broken watch is opened again,
// doubling while it keeps breaking without a message.
const minWatchPause, maxWatchPause = 200 * time.Millisecond, 3 * time.Second

func (j *journey) storeTime(t time.Time) string {
	return storeClock(t, j.store.GetTimeZone(), time.Local)
}

// storeClock gives t on the store's clock, which is what its staff and shoppers go by, and
// also on this machine's clock (local) where the two differ: every other line of the demo is
// stamped with the machine's, and "ready by 14:25 EST" beside lines stamped 19:05 reads as
// five hours away.
func storeClock(t time.Time, zone string, local *time.Location) string {
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "" {
		return t.In(local).Format("15:04 MST")
	}
	atStore, here := t.In(loc), t.In(local)
	_, storeOffset := atStore.Zone()
	_, hereOffset := here.Zone()
	if storeOffset == hereOffset {
		return atStore.Format("15:04 MST")
	}
	return fmt.Sprintf("%s, the store's time (%s here)", atStore.Format("15:04 MST"), here.Format("15:04 MST"))
}

func availability(m *inventoryv1.StoreMatch) string {
	var parts []string
	for _, l := range m.GetLines() {
		parts = append(parts, fmt.Sprintf("%s %d/%d", l.GetSku(), l.GetAvailable(), l.GetRequested()))
	}
	return "available/wanted: " + strings.Join(parts, ", ")
}

func stateName(s fulfilmentv1.OrderState) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATE_")
}

func ticketKindName(k posv1.TicketKind) string {
	return strings.TrimPrefix(k.String(), "TICKET_KIND_")
}

func actorName(a *commonv1.Actor) string {
	kind := strings.ToLower(strings.TrimPrefix(a.GetKind().String(), "ACTOR_KIND_"))
	if a.GetId() == "" {
		return kind
	}
	return kind + " " + a.GetId()
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

// printer writes one timestamped line per step; the shopper and the terminal share it.
type printer struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
}

func (p *printer) say(who, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	fmt.Fprintf(p.out, "%s  +%6.3fs  %-8s  %s\n", now.Format("15:04:05.000"), now.Sub(p.start).Seconds(), who, fmt.Sprintf(format, args...))
}
