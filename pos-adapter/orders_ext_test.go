package posadapter_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/testenv"
	posadapter "github.com/handoff-dev/handoff/pos-adapter"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
)

func req[T any](m *T) *connect.Request[T] { return connect.NewRequest(m) }

func TestStaffDriveAConfirmedOrderToTheShoppersHands(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "drv-1", map[string]int32{"LATTE-16": 10, "MUFFIN": 5})
	_, cred := e.register("Counter", "drv-1")
	term := e.terminal(overGRPCWeb, cred)
	f := e.openFeed(term, "drv-1")
	ctx := context.Background()

	first := s.placeOrder(t, "drv-1", "k1", map[string]int32{"LATTE-16": 2, "MUFFIN": 1})
	second := s.placeOrder(t, "drv-1", "k2", map[string]int32{"LATTE-16": 1})
	tickets := f.take(2, 10*time.Second)
	for i, o := range []*fulfilmentv1.Order{first, second} {
		tk := tickets[i]
		if tk.GetKind() != posv1.TicketKind_TICKET_KIND_NEW_ORDER || tk.GetOrderId() != o.GetId() {
			t.Fatalf("ticket %d is %v for %s; want NEW_ORDER for %s", i, tk.GetKind(), tk.GetOrderId(), o.GetId())
		}
		if tk.GetOrder().GetPickupCode() != "" || tk.GetOrder().GetPickupName() != "Sam" || len(tk.GetOrder().GetLines()) == 0 ||
			tk.GetOrder().GetReadyByTime() == nil || tk.GetOrder().GetCustomerNote() != "oat milk please" {
			t.Fatalf("ticket order %v; want lines, name, ready-by and note, never the pickup code", tk.GetOrder())
		}
	}

	board, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "drv-1"}))
	if err != nil {
		t.Fatalf("ListStoreOrders: %v", err)
	}
	if got := board.Msg.GetOrders(); len(got) != 2 || got[0].GetId() != first.GetId() || got[1].GetId() != second.GetId() {
		t.Fatalf("board %v; want both orders, oldest first", got)
	}

	acc, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "drv-1", OrderId: first.GetId()}))
	if err != nil || acc.Msg.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_PREPARING {
		t.Fatalf("AcceptOrder = %v, %v; want PREPARING", acc, err)
	}
	var muffin string
	for _, l := range first.GetLines() {
		if l.GetSku() == "MUFFIN" {
			muffin = l.GetLineId()
		}
	}
	if _, err := term.MarkLineUnavailable(ctx, req(&posv1.MarkLineUnavailableRequest{StoreId: "drv-1", OrderId: first.GetId(), LineId: muffin, Reason: "sold out"})); err != nil {
		t.Fatalf("MarkLineUnavailable: %v", err)
	}
	if tk := f.take(1, 5*time.Second)[0]; tk.GetKind() != posv1.TicketKind_TICKET_KIND_LINE_UNAVAILABLE || !strings.Contains(tk.GetMessage(), "sold out") {
		t.Fatalf("got %v %q; want a line-unavailable ticket with the reason", tk.GetKind(), tk.GetMessage())
	}
	if _, err := term.MarkReady(ctx, req(&posv1.MarkReadyRequest{StoreId: "drv-1", OrderId: first.GetId()})); err != nil {
		t.Fatalf("MarkReady: %v", err)
	}

	_, err = term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "drv-1", OrderId: first.GetId(), PickupCode: wrongCode(s.ful.PickupCode(first.GetId()))}))
	if codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "pickup code") {
		t.Fatalf("wrong pickup code: %v; want it refused", err)
	}
	before := s.onHand(t, "drv-1", "LATTE-16")
	done, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "drv-1", OrderId: first.GetId(), PickupCode: s.ful.PickupCode(first.GetId())}))
	if err != nil || done.Msg.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_COLLECTED {
		t.Fatalf("HandOver = %v, %v; want COLLECTED", done, err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := s.onHand(t, "drv-1", "LATTE-16"); got != before-2 {
			return errorf("on hand of LATTE-16 is %d, want %d once the sale is committed", got, before-2)
		}
		return nil
	})

	_, err = term.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "drv-1", OrderId: second.GetId(), Reason: "machine broken"}))
	if err != nil {
		t.Fatalf("CancelOrder: %v", err)
	}
	if tk := f.take(1, 5*time.Second)[0]; tk.GetKind() != posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED || tk.GetOrderId() != second.GetId() {
		t.Fatalf("got %v for %s; want the cancellation of %s", tk.GetKind(), tk.GetOrderId(), second.GetId())
	}
	board, err = term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "drv-1"}))
	if err != nil || len(board.Msg.GetOrders()) != 0 {
		t.Fatalf("board after hand-over and cancel = %v, %v; want it empty", board, err)
	}
	// A member of staff signed in with their own token (forwarded as it is) sees the history.
	staff := e.terminal(overGRPC, e.token(auth.Principal{Subject: "barista-7", Role: auth.RoleStaff, Stores: []string{"drv-1"}}))
	hist, err := staff.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "drv-1",
		States: []fulfilmentv1.OrderState{fulfilmentv1.OrderState_ORDER_STATE_COLLECTED, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED}}))
	if err != nil || len(hist.Msg.GetOrders()) != 2 {
		t.Fatalf("staff token: closed orders = %v, %v; want both", hist, err)
	}
}

func TestFiveWrongPickupCodesLockHandOverAndAlertTheStore(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "lock-1", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "lock-1")
	_, cred2 := e.register("Drive-through", "lock-1")
	term := e.terminal(overGRPC, cred)
	other := e.openFeed(e.terminal(overGRPCWeb, cred2), "lock-1")
	ctx := context.Background()
	o := s.placeOrder(t, "lock-1", "k1", map[string]int32{"LATTE-16": 1})
	for _, step := range []func() error{
		func() error {
			_, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "lock-1", OrderId: o.GetId()}))
			return err
		},
		func() error {
			_, err := term.MarkReady(ctx, req(&posv1.MarkReadyRequest{StoreId: "lock-1", OrderId: o.GetId()}))
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	other.take(1, 5*time.Second) // the new order

	code := s.ful.PickupCode(o.GetId())
	for i := 1; i <= 5; i++ {
		_, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "lock-1", OrderId: o.GetId(), PickupCode: wrongCode(code)}))
		if err == nil {
			t.Fatalf("wrong code %d accepted", i)
		}
		if i == 5 && codeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("5th wrong code: %v; want ResourceExhausted (locked)", err)
		}
	}
	alert := other.take(1, 5*time.Second)[0]
	if alert.GetKind() != posv1.TicketKind_TICKET_KIND_PICKUP_LOCKED || alert.GetOrderId() != o.GetId() {
		t.Fatalf("got %v for %s; want a PICKUP_LOCKED alert for %s on every terminal", alert.GetKind(), alert.GetOrderId(), o.GetId())
	}
	_, err := term.HandOver(ctx, req(&posv1.HandOverRequest{StoreId: "lock-1", OrderId: o.GetId(), PickupCode: code}))
	if codeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("right code while locked: %v; want ResourceExhausted saying it is locked", err)
	}
}

func TestStoreACredentialCannotTouchStoreBOrders(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "own-a", map[string]int32{"LATTE-16": 10})
	s.addStore(t, "own-b", map[string]int32{"LATTE-16": 10})
	_, credA := e.register("A", "own-a")
	_, credB := e.register("B", "own-b")
	ctx := context.Background()
	orderB := s.placeOrder(t, "own-b", "kb", map[string]int32{"LATTE-16": 1})
	for _, p := range protocols {
		a := e.terminal(p, credA)
		_, err := a.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "own-b", OrderId: orderB.GetId()}))
		if codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "store_id") {
			t.Fatalf("%s: accept B's order naming B: %v; want PermissionDenied naming store_id", p.name, err)
		}
		_, err = a.CancelOrder(ctx, req(&posv1.CancelOrderRequest{StoreId: "own-b", OrderId: orderB.GetId(), Reason: "x"}))
		if codeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("%s: cancel B's order: %v; want PermissionDenied", p.name, err)
		}
		// Naming its own store does not help: fulfilment checks the order's store again.
		_, err = a.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "own-a", OrderId: orderB.GetId()}))
		if codeOf(err) != connect.CodeNotFound {
			t.Fatalf("%s: accept B's order naming A: %v; want NotFound", p.name, err)
		}
	}
	board, err := e.terminal(overGRPC, credB).ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "own-b"}))
	if err != nil || len(board.Msg.GetOrders()) != 1 || board.Msg.GetOrders()[0].GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatalf("B's board = %v, %v; want its order untouched (CONFIRMED)", board, err)
	}
}

func TestStaffPauseAndResumeMobileOrders(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "pause-1", map[string]int32{"LATTE-16": 10})
	s.addStore(t, "pause-2", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "pause-1")
	term := e.terminal(overGRPC, cred)
	ctx := context.Background()

	res, err := term.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "pause-1", Reason: "Espresso machine down"}))
	if err != nil || res.Msg.GetStore().GetState() != inventoryv1.StoreState_STORE_STATE_PAUSED {
		t.Fatalf("PauseStore = %v, %v; want PAUSED", res, err)
	}
	near := &commonv1.LatLng{Latitude: 47.61, Longitude: -122.34}
	found, err := s.locator.FindStores(ctx, &inventoryv1.FindStoresRequest{Location: near, RadiusMeters: 5000})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range found.GetStores() {
		if m.GetStore().GetId() == "pause-1" {
			t.Fatalf("the locator still offers paused store pause-1")
		}
	}
	o, err := s.cart(ctx, &fulfilmentv1.PlaceOrderRequest{IdempotencyKey: "kp", CustomerId: "c", CartId: "c", StoreId: "pause-1",
		Lines: []*fulfilmentv1.PlaceOrderLine{{LineId: "l1", Sku: "LATTE-16", ProductName: "Latte", Quantity: 1,
			UnitPrice: &commonv1.Money{AmountMinor: 450, CurrencyCode: "USD"}}}})
	if err == nil && o.GetState() == fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		t.Fatal("checkout to a paused store was confirmed")
	}
	if msg := o.GetReason() + errText(err); !strings.Contains(msg, "Espresso machine down") {
		t.Fatalf("checkout to a paused store: order %v, err %v; want the reason given", o, err)
	}

	_, err = term.PauseStore(ctx, req(&posv1.PauseStoreRequest{StoreId: "pause-2"}))
	if codeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("pausing another store: %v; want PermissionDenied", err)
	}

	res2, err := term.ResumeStore(ctx, req(&posv1.ResumeStoreRequest{StoreId: "pause-1"}))
	if err != nil || res2.Msg.GetStore().GetState() != inventoryv1.StoreState_STORE_STATE_OPEN {
		t.Fatalf("ResumeStore = %v, %v; want OPEN", res2, err)
	}
	s.placeOrder(t, "pause-1", "kp2", map[string]int32{"LATTE-16": 1})

	// A store an operator closed is not staff's to reopen.
	if _, err := s.invAdmin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "pause-1", State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "refit"}); err != nil {
		t.Fatal(err)
	}
	_, err = term.ResumeStore(ctx, req(&posv1.ResumeStoreRequest{StoreId: "pause-1"}))
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("resuming a CLOSED store: %v; want FailedPrecondition", err)
	}
}

// afterGetStore runs hook once, right after the adapter's first GetStore is answered.
type afterGetStore struct {
	grpc.ClientConnInterface
	once sync.Once
	hook func()
}

func (c *afterGetStore) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	if strings.HasSuffix(method, "/GetStore") && c.hook != nil {
		c.once.Do(c.hook)
	}
	return err
}

// An operator closing a paused store while staff resume it: the store stays CLOSED, even when
// the close lands between the adapter's look at the store and its change.
func TestStaffResumeRacingAnOperatorsCloseLeavesTheStoreClosed(t *testing.T) {
	var s services
	wrap := &afterGetStore{}
	e := newEnv(t, withServices(&s), withConfig(func(c *posadapter.Config) {
		wrap.ClientConnInterface = c.Inventory
		c.Inventory = wrap
	}))
	s.addStore(t, "close-1", map[string]int32{"LATTE-16": 10})
	ctx := context.Background()
	if _, err := s.invAdmin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "close-1", State: inventoryv1.StoreState_STORE_STATE_PAUSED, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	wrap.hook = func() {
		if _, err := s.invAdmin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "close-1", State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "refit"}); err != nil {
			t.Error(err)
		}
	}
	_, cred := e.register("Counter", "close-1")
	_, err := e.terminal(overGRPC, cred).ResumeStore(ctx, req(&posv1.ResumeStoreRequest{StoreId: "close-1"}))
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("resuming a store closed meanwhile: %v; want FailedPrecondition", err)
	}
	st, err := s.locator.GetStore(ctx, &inventoryv1.GetStoreRequest{StoreId: "close-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStore().GetState(); got != inventoryv1.StoreState_STORE_STATE_CLOSED {
		t.Fatalf("the operator-closed store is %v after staff resumed it; want CLOSED", got)
	}
}

// wrongCode is a pickup code that is not code.
func wrongCode(code string) string {
	if strings.HasPrefix(code, "0") {
		return "1" + code[1:]
	}
	return "0" + code[1:]
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// The tickets raised by fulfilment's timers and by the shopper, from the real services: an
// order not accepted in time is escalated, the shopper's check-in reaches the counter, a ready
// order is reminded of before its window ends and, uncollected, expires. Each once, in order.
func TestTimerAndShopperTicketsComeOnceEachFromTheRealServices(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s, func(c *fulfilment.Config) {
		c.NotAcceptedAfter = 300 * time.Millisecond
		c.ExpiringSoonBefore = time.Hour - 500*time.Millisecond // the store's window is an hour
	}))
	s.addStore(t, "tmr-1", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "tmr-1")
	term := e.terminal(overGRPC, cred)
	f := e.openFeed(term, "tmr-1")
	ctx := context.Background()
	o := s.placeOrder(t, "tmr-1", "k-timers", map[string]int32{"LATTE-16": 1})

	next := func(kind posv1.TicketKind) {
		t.Helper()
		tk := f.take(1, 10*time.Second)[0]
		if tk.GetKind() != kind || tk.GetOrderId() != o.GetId() {
			t.Fatalf("got %v for %s; want %v for %s", tk.GetKind(), tk.GetOrderId(), kind, o.GetId())
		}
	}
	next(posv1.TicketKind_TICKET_KIND_NEW_ORDER)
	next(posv1.TicketKind_TICKET_KIND_ESCALATION)
	if _, err := s.ful.CheckIn(ctx, o.GetCustomerId(), &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_CUSTOMER, Id: o.GetCustomerId()}, o.GetId(), "bay 2"); err != nil {
		t.Fatalf("CheckIn: %v", err)
	}
	next(posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN)
	if _, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "tmr-1", OrderId: o.GetId()})); err != nil {
		t.Fatalf("AcceptOrder: %v", err)
	}
	if _, err := term.MarkReady(ctx, req(&posv1.MarkReadyRequest{StoreId: "tmr-1", OrderId: o.GetId()})); err != nil {
		t.Fatalf("MarkReady: %v", err)
	}
	next(posv1.TicketKind_TICKET_KIND_EXPIRY_REMINDER)
	// The pickup window ends now.
	if _, err := s.fulPool.Exec(ctx, `UPDATE orders SET pickup_deadline = now(), timer_at = now() WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	next(posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED)
	f.quiet(500 * time.Millisecond)
	e.waitTickets("tmr-1", 5)
}

// forgedPosition has the shape of the page positions of ListTerminals and of fulfilment's
// ListStoreOrders, for forging tokens: their hash binds a token to its call but has no key.
type forgedPosition struct {
	Time int64  `json:"t"`
	ID   string `json:"i"`
}

// A forged page token whose time Postgres cannot hold is refused naming page_token, by
// ListTerminals and by a terminal's ListStoreOrders (whose token fulfilment reads), instead of
// failing as Internal in the query ("timestamp out of range").
func TestForgedPageTokenTimesAreRefused(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "forge-1", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "forge-1")
	term := e.terminal(overGRPCWeb, cred)
	ctx := context.Background()
	for _, us := range []int64{math.MinInt64, math.MaxInt64, -300000000000000000} {
		terminals := &posv1.ListTerminalsRequest{StoreId: "forge-1"}
		terminals.PageToken = pagetoken.Encode(terminals, forgedPosition{Time: us, ID: "x"})
		if _, err := e.admin().ListTerminals(ctx, req(terminals)); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("ListTerminals with a token at %d µs: %v; want InvalidArgument naming page_token", us, err)
		}
		// The terminal's request becomes fulfilment's, whose fingerprint the token carries.
		board := &fulfilmentv1.ListStoreOrdersRequest{StoreId: "forge-1"}
		tok := pagetoken.Encode(board, forgedPosition{Time: us, ID: "x"})
		if _, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "forge-1", PageToken: tok})); codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("ListStoreOrders with a token at %d µs: %v; want InvalidArgument naming page_token", us, err)
		}
	}
}

// An operator closing a store and asking for its open orders to be cancelled: each order is
// cancelled with the closing's reason, and the store's terminal gets a cancellation ticket for
// each, as if staff had cancelled them.
func TestClosingAStoreWithCancellationSendsItsTerminalsTheCancellations(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "shut-1", map[string]int32{"LATTE-16": 10})
	_, cred := e.register("Counter", "shut-1")
	term := e.terminal(overGRPCWeb, cred)
	f := e.openFeed(term, "shut-1")
	ctx := context.Background()

	first := s.placeOrder(t, "shut-1", "k1", map[string]int32{"LATTE-16": 2})
	second := s.placeOrder(t, "shut-1", "k2", map[string]int32{"LATTE-16": 1})
	f.take(2, 10*time.Second)
	if _, err := term.AcceptOrder(ctx, req(&posv1.AcceptOrderRequest{StoreId: "shut-1", OrderId: second.GetId()})); err != nil {
		t.Fatal(err)
	}
	res, err := s.invAdmin.SetStoreState(ctx, &inventoryv1.SetStoreStateRequest{StoreId: "shut-1",
		State: inventoryv1.StoreState_STORE_STATE_CLOSED, Reason: "burst pipe", CancelOpenOrders: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.GetOrdersHoldingStock(); n != 2 {
		t.Errorf("closing answered %d orders holding stock; want the 2 about to be cancelled", n)
	}
	got := map[string]bool{}
	for _, tk := range f.take(2, 10*time.Second) {
		if tk.GetKind() != posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED || !strings.Contains(tk.GetMessage(), "burst pipe") {
			t.Errorf("ticket %v %q; want a cancellation with the closing's reason", tk.GetKind(), tk.GetMessage())
		}
		got[tk.GetOrderId()] = true
	}
	if !got[first.GetId()] || !got[second.GetId()] {
		t.Fatalf("cancellation tickets for %v; want both orders", got)
	}
	board, err := term.ListStoreOrders(ctx, req(&posv1.ListStoreOrdersRequest{StoreId: "shut-1"}))
	if err != nil || len(board.Msg.GetOrders()) != 0 {
		t.Fatalf("board after the closing = %v, %v; want it empty", board, err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		av, err := s.locator.GetAvailability(ctx, &inventoryv1.GetAvailabilityRequest{StoreId: "shut-1", Skus: []string{"LATTE-16"}})
		if err != nil {
			return err
		}
		if got := av.GetAvailability()[0].GetAvailable(); got != 10 {
			return errorf("%d LATTE-16 available, want 10: the orders' holds released", got)
		}
		return nil
	})
}
