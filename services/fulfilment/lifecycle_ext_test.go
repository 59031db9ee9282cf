package fulfilment_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pagetoken"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

const (
	preparing = fulfilmentv1.OrderState_ORDER_STATE_PREPARING
	ready     = fulfilmentv1.OrderState_ORDER_STATE_READY
	collected = fulfilmentv1.OrderState_ORDER_STATE_COLLECTED
	cancelled = fulfilmentv1.OrderState_ORDER_STATE_CANCELLED
	expired   = fulfilmentv1.OrderState_ORDER_STATE_EXPIRED
)

// placeAt places a one-line confirmed order of customer at store s1.
func (e *env) placeAt(store, customer, key, sku string, qty int32) *fulfilmentv1.Order {
	e.t.Helper()
	return e.mustPlace(checkout(customer, key, store, line{sku, qty}), confirmed)
}

func (e *env) accept(store, id string) *fulfilmentv1.Order {
	e.t.Helper()
	res, err := e.store.AcceptOrder(e.asStaff(store), &fulfilmentv1.AcceptOrderRequest{StoreId: store, OrderId: id})
	if err != nil {
		e.t.Fatalf("accept %s: %v", id, err)
	}
	return res.GetOrder()
}

func (e *env) markReady(store, id string) *fulfilmentv1.Order {
	e.t.Helper()
	res, err := e.store.MarkReady(e.asStaff(store), &fulfilmentv1.MarkReadyRequest{StoreId: store, OrderId: id})
	if err != nil {
		e.t.Fatalf("mark %s ready: %v", id, err)
	}
	return res.GetOrder()
}

func (e *env) handOver(store, id, code string) (*fulfilmentv1.Order, error) {
	res, err := e.store.HandOver(e.asStaff(store), &fulfilmentv1.HandOverRequest{StoreId: store, OrderId: id, PickupCode: code})
	return res.GetOrder(), err
}

// otherCode is a pickup code that is not code: each digit moved on by one.
func otherCode(code string) string {
	b := []byte(code)
	for i, c := range b {
		b[i] = '0' + (c-'0'+1)%10
	}
	return string(b)
}

// codeOf is the pickup code the shopper sees in their app.
func (e *env) codeOf(customer, id string) string {
	e.t.Helper()
	res, err := e.orders.GetOrder(e.asCustomer(customer), &fulfilmentv1.GetOrderRequest{OrderId: id})
	if err != nil {
		e.t.Fatalf("get %s: %v", id, err)
	}
	return res.GetOrder().GetPickupCode()
}

func TestOrderLifeFromConfirmedToCollectedCommitsTheHolds(t *testing.T) {
	e := newEnv(t, envOptions{config: withSenders(notify.ChannelEmail)})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	e.setStock("s1", "MUFFIN", 10)
	o := e.mustPlace(checkout("alice", "k", "s1", line{"LATTE-16", 2}, line{"MUFFIN", 1}), confirmed)
	if o.GetTotal().GetAmountMinor() != 3*450 {
		t.Fatalf("total %d, want %d", o.GetTotal().GetAmountMinor(), 3*450)
	}
	// The extension recorded with the confirmation moves the short placement deadline to the
	// order's pickup horizon (ready-by + pickup window + grace) at once, not near its end.
	e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour))

	if got := e.accept("s1", o.GetId()); got.GetState() != preparing || got.GetPickupCode() != "" {
		t.Fatalf("accepted order is %s with code %q, want PREPARING and no code for staff", got.GetState(), got.GetPickupCode())
	}
	res, err := e.store.MarkLineUnavailable(e.asStaff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o.GetId(), LineId: "l2", Reason: "sold out"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOrder().GetTotal().GetAmountMinor() != 2*450 || res.GetOrder().GetLines()[1].GetState() != fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE {
		t.Fatalf("after dropping the muffin: total %d, line state %s", res.GetOrder().GetTotal().GetAmountMinor(), res.GetOrder().GetLines()[1].GetState())
	}
	e.waitHolds(o.GetId(), map[string]int{"open": 1, "released": 1})
	_, err = e.store.MarkLineUnavailable(e.asStaff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o.GetId(), LineId: "l1"})
	wantCode(t, "dropping the last line", err, codes.FailedPrecondition, "cancel the order instead")

	r := e.markReady("s1", o.GetId())
	if r.GetState() != ready || r.GetPickupDeadline() == nil {
		t.Fatalf("ready order: %s, deadline %v", r.GetState(), r.GetPickupDeadline())
	}
	done, err := e.handOver("s1", o.GetId(), e.codeOf("alice", o.GetId()))
	if err != nil {
		t.Fatalf("hand over with the right code: %v", err)
	}
	if done.GetState() != collected {
		t.Fatalf("handed-over order is %s", done.GetState())
	}
	e.waitHolds(o.GetId(), map[string]int{"committed": 1, "released": 1})
	if got := e.available("s1", "LATTE-16"); got != 8 {
		t.Fatalf("LATTE-16 available %d after selling 2 of 10, want 8", got)
	}
	if got := e.available("s1", "MUFFIN"); got != 10 {
		t.Fatalf("MUFFIN available %d after its line was dropped, want 10", got)
	}
	e.checkInvariants()

	e.waitEvents(o.GetId(), "confirmed", "preparing", "line_unavailable", "ready", "collected")
	// Event ids are derived from order and history sequence; events carry no pickup code.
	e.events.mu.Lock()
	for _, ev := range e.events.events {
		if ev.ev.GetOrder().GetId() != o.GetId() {
			continue
		}
		if want := outbox.DeterministicID("order", o.GetId(), fmt.Sprint(ev.ev.GetOrder().GetVersion())); ev.msgID != want {
			t.Errorf("event %s has id %s, want %s", ev.subject, ev.msgID, want)
		}
		if ev.ev.GetOrder().GetPickupCode() != "" {
			t.Errorf("event %s carries the pickup code", ev.subject)
		}
	}
	e.events.mu.Unlock()

	got, err := e.orders.GetOrder(e.asCustomer("alice"), &fulfilmentv1.GetOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var path []string
	for _, h := range got.GetOrder().GetHistory() {
		path = append(path, fmt.Sprintf("%s:%s", h.GetToState(), h.GetActor().GetKind()))
	}
	want := []string{"ORDER_STATE_PENDING:ACTOR_KIND_SYSTEM", "ORDER_STATE_CONFIRMED:ACTOR_KIND_SYSTEM", "ORDER_STATE_PREPARING:ACTOR_KIND_STAFF",
		"ORDER_STATE_PREPARING:ACTOR_KIND_STAFF", "ORDER_STATE_READY:ACTOR_KIND_STAFF", "ORDER_STATE_COLLECTED:ACTOR_KIND_STAFF"}
	if !slices.Equal(path, want) {
		t.Fatalf("history %v, want %v", path, want)
	}
	if h := got.GetOrder().GetHistory()[3]; h.GetLineId() != "l2" || h.GetReason() != "sold out" || h.GetActor().GetId() != "barista-1" {
		t.Fatalf("line-unavailable entry %v, want line l2, reason and the barista", h)
	}
	if got.GetOrder().GetPickupCode() != "" {
		t.Fatal("a collected order still shows its pickup code")
	}

	var kinds []string
	rows, err := e.pool.Query(e.ctx, `SELECT kind FROM notifications WHERE order_id = $1 AND channel = 'email' ORDER BY create_time, kind`, o.GetId())
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		kinds = append(kinds, k)
	}
	rows.Close()
	for _, k := range []string{"order.confirmed", "order.line_unavailable", "order.ready", "order.collected"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("no %s email queued for the shopper (queued: %v)", k, kinds)
		}
	}
}

// A notification is written only for the channels this deployment has a sender for: with
// none, an order's whole life writes no notification at all.
func TestNotificationsAreWrittenOnlyForChannelsWithASender(t *testing.T) {
	for _, c := range []struct {
		name    string
		senders []string
		want    []string // channels written for the confirmation
	}{
		{"none", nil, nil},
		{"email only", []string{notify.ChannelEmail}, []string{notify.ChannelEmail}},
		{"both", []string{notify.ChannelWebhook, notify.ChannelEmail}, []string{notify.ChannelEmail, notify.ChannelWebhook}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{config: withSenders(c.senders...)})
			e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
			e.setStock("s1", "LATTE-16", 10)
			o := e.mustPlace(checkout("alice", "k", "s1", line{"LATTE-16", 1}), confirmed)
			rows, err := e.pool.Query(e.ctx, `SELECT channel FROM notifications WHERE order_id = $1 AND kind = 'order.confirmed' ORDER BY channel`, o.GetId())
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("confirmation written for channels %v; want %v", got, c.want)
			}
		})
	}
}

func TestIllegalTransitionsAreRefusedWithAMessageAndLeaveTheOrderUnchanged(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)

	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	_, err := e.store.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o.GetId()})
	wantCode(t, "CONFIRMED → READY", err, codes.FailedPrecondition, "ORDER_STATE_CONFIRMED", "accept it first")
	e.accept("s1", o.GetId())
	_, err = e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId()})
	wantCode(t, "shopper cancels while PREPARING", err, codes.FailedPrecondition, "ORDER_STATE_PREPARING", "ask the store")
	e.markReady("s1", o.GetId())

	_, err = e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()})
	wantCode(t, "READY → PREPARING", err, codes.FailedPrecondition, "ORDER_STATE_READY", "accept")
	_, err = e.handOver("s1", o.GetId(), otherCode(e.codeOf("alice", o.GetId())))
	wantCode(t, "wrong pickup code", err, codes.PermissionDenied, "wrong pickup code")
	if s := e.stateOf(o.GetId()); s != ready {
		t.Fatalf("after refusals the order is %s, want READY", s)
	}

	code := e.codeOf("alice", o.GetId())
	if _, err := e.handOver("s1", o.GetId(), code); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: o.GetId(), Reason: "oops"})
	wantCode(t, "COLLECTED → CANCELLED by staff", err, codes.FailedPrecondition, "ORDER_STATE_COLLECTED")
	_, err = e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: o.GetId()})
	wantCode(t, "COLLECTED → CANCELLED by the shopper", err, codes.FailedPrecondition, "ORDER_STATE_COLLECTED")
	// The right code again is a retry, answered with the collected order (see
	// TestARetriedHandOverGetsTheCollectedOrder); any other is refused.
	_, err = e.handOver("s1", o.GetId(), otherCode(code))
	wantCode(t, "COLLECTED → COLLECTED", err, codes.FailedPrecondition, "ORDER_STATE_COLLECTED")
	if s := e.stateOf(o.GetId()); s != collected {
		t.Fatalf("after refusals the order is %s, want COLLECTED", s)
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "collected")
	e.waitHolds(o.GetId(), map[string]int{"committed": 1})
	e.checkInvariants()
}

// A change whose answer was lost (a deadline, a dropped connection: it committed all the same)
// is retried by the same caller: the retry gets the order the change made, as a retried
// hand-over does, not a refusal that reads like a failure. Anyone else is still refused.
func TestARetriedChangeGetsTheOrderItMade(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	first := e.accept("s1", o.GetId())
	again, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: o.GetId()})
	if err != nil || again.GetOrder().GetVersion() != first.GetVersion() || again.GetOrder().GetState() != fulfilmentv1.OrderState_ORDER_STATE_PREPARING {
		t.Fatalf("the accept retried: %v, %v; want the accepted order at version %d", again.GetOrder(), err, first.GetVersion())
	}
	ready := e.markReady("s1", o.GetId())
	if again, err := e.store.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: o.GetId()}); err != nil || again.GetOrder().GetVersion() != ready.GetVersion() {
		t.Fatalf("mark ready retried: %v, %v; want the ready order at version %d", again.GetOrder(), err, ready.GetVersion())
	}

	c := e.placeAt("s1", "bob", "k2", "LATTE-16", 1)
	req := &fulfilmentv1.CancelOrderRequest{OrderId: c.GetId(), Reason: "changed my mind"}
	cancelled, err := e.orders.CancelOrder(e.asCustomer("bob"), req)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.orders.CancelOrder(e.asCustomer("bob"), req); err != nil || again.GetOrder().GetVersion() != cancelled.GetOrder().GetVersion() {
		t.Fatalf("the shopper's cancel retried: %v, %v; want the cancelled order at version %d", again.GetOrder(), err, cancelled.GetOrder().GetVersion())
	}
	// Staff did not cancel it: their cancel is refused, as before.
	_, err = e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: c.GetId(), Reason: "out of milk"})
	wantCode(t, "staff cancel of an order the shopper cancelled", err, codes.FailedPrecondition, "ORDER_STATE_CANCELLED")
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready")
	e.waitEvents(c.GetId(), "confirmed", "cancelled")

	// A line dropped, retried: the same; another member of staff's repeat is refused.
	e.setStock("s1", "CROISSANT", 5)
	two := e.mustPlace(checkout("cy", "k3", "s1", line{"LATTE-16", 1}, line{"CROISSANT", 1}), confirmed)
	drop := &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: two.GetId(), LineId: "l2"}
	dropped, err := e.store.MarkLineUnavailable(e.asStaff("s1"), drop)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.store.MarkLineUnavailable(e.asStaff("s1"), drop); err != nil || again.GetOrder().GetVersion() != dropped.GetOrder().GetVersion() {
		t.Fatalf("the line dropped, retried: %v, %v; want the order at version %d", again.GetOrder(), err, dropped.GetOrder().GetVersion())
	}
	other := metadata.AppendToOutgoingContext(e.ctx, fulfilment.MetadataStaffStores, "s1", fulfilment.MetadataActor, "staff:barista-2")
	_, err = e.store.MarkLineUnavailable(other, drop)
	wantCode(t, "another's repeat of a line dropped", err, codes.FailedPrecondition, "already marked unavailable")
	e.waitEvents(two.GetId(), "confirmed", "line_unavailable")
	e.waitHolds(two.GetId(), map[string]int{"open": 1, "released": 1})
	e.checkInvariants()
}

// A pickup code that could never be one (blank, spaces and dashes only, not six digits) is
// refused naming the field, and not counted against the order's tries: a slip at the counter
// must not bring the shopper nearer a lock-out. The right code typed with a space and a dash
// hands the order over.
func TestAPickupCodeThatCouldNeverBeOneIsRefusedUncounted(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	for _, bad := range []string{"   ", "- -", "12345", "1234567", "12345a", "１２３４５６"} {
		_, err := e.handOver("s1", o.GetId(), bad)
		wantCode(t, fmt.Sprintf("pickup code %q", bad), err, codes.InvalidArgument, "pickup_code")
	}
	var wrong int
	if err := e.pool.QueryRow(e.ctx, `SELECT wrong_codes FROM orders WHERE id = $1`, o.GetId()).Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("wrong codes counted after codes that could never be one: %d, %v; want 0", wrong, err)
	}
	code := e.codeOf("alice", o.GetId())
	if got, err := e.handOver("s1", o.GetId(), code[:3]+" "+code[3:4]+"-"+code[4:]); err != nil || got.GetState() != fulfilmentv1.OrderState_ORDER_STATE_COLLECTED {
		t.Fatalf("the right code with a space and a dash: %v, %v", got, err)
	}
}

// A check-in or a line dropped for an order whose time is up, the timer loop not there yet,
// expires it instead, as accepting or handing over does: the shopper is not told they are
// checked in, nor the store ticketed, for an order about to expire, and no dropped line gives
// it a new lease of life.
func TestCheckingInOrDroppingALineOfAnOverdueOrderExpiresItInstead(t *testing.T) {
	e := newEnv(t, envOptions{noLoops: true})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	e.setStock("s1", "MUFFIN", 10)
	ready := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	e.accept("s1", ready.GetId())
	e.markReady("s1", ready.GetId())
	preparing := e.mustPlace(checkout("amy", "k2", "s1", line{"LATTE-16", 1}, line{"MUFFIN", 1}), confirmed)
	e.accept("s1", preparing.GetId())
	// One checked in already: checking in again at the same bay changes nothing, unless its
	// time is up.
	arrived := e.placeAt("s1", "amy", "k3", "LATTE-16", 1)
	e.accept("s1", arrived.GetId())
	e.markReady("s1", arrived.GetId())
	if _, err := e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: arrived.GetId(), Bay: "B1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now() - interval '1 minute', expiring_soon_at = NULL WHERE id = ANY($1)`,
		[]string{ready.GetId(), arrived.GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err := e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: arrived.GetId(), Bay: "B1"})
	wantCode(t, "a check-in again at the same bay past the pickup deadline", err, codes.FailedPrecondition, "pickup window")
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '3 hours', accept_time = now() - interval '3 hours',
		abandon_at = now() - interval '1 minute' WHERE id = $1`, preparing.GetId()); err != nil {
		t.Fatal(err)
	}
	_, err = e.orders.CheckIn(e.asCustomer("amy"), &fulfilmentv1.CheckInRequest{OrderId: ready.GetId(), Bay: "B3"})
	wantCode(t, "check-in past the pickup deadline", err, codes.FailedPrecondition, "pickup window")
	_, err = e.store.MarkLineUnavailable(e.asStaff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: preparing.GetId(), LineId: "l2"})
	wantCode(t, "a line dropped past the time to make it ready", err, codes.FailedPrecondition, "not made ready")
	for _, id := range []string{ready.GetId(), preparing.GetId(), arrived.GetId()} {
		if s := e.stateOf(id); s != expired {
			t.Errorf("order %s is %s; want EXPIRED", id, s)
		}
	}
	e.waitEvents(ready.GetId(), "confirmed", "preparing", "ready", "expired")
	e.waitEvents(arrived.GetId(), "confirmed", "preparing", "ready", "checked_in", "expired")
	e.waitEvents(preparing.GetId(), "confirmed", "preparing", "expired")
}

// A terminal whose hand-over answer was lost retries it: it gets the collected order, as the
// first call did, and nothing is done twice. Another code for the collected order is still
// refused.
func TestARetriedHandOverGetsTheCollectedOrder(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	code := e.codeOf("alice", o.GetId())
	first, err := e.handOver("s1", o.GetId(), code)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.handOver("s1", o.GetId(), code)
	if err != nil || again.GetState() != fulfilmentv1.OrderState_ORDER_STATE_COLLECTED || again.GetVersion() != first.GetVersion() {
		t.Fatalf("the retried hand-over: %v, %v; want the collected order at version %d", again, err, first.GetVersion())
	}
	wrong := "000000"
	if wrong == code {
		wrong = "111111"
	}
	_, err = e.handOver("s1", o.GetId(), wrong)
	wantCode(t, "another code for the collected order", err, codes.FailedPrecondition)
	e.waitHolds(o.GetId(), map[string]int{"committed": 1})
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "collected")
	if got := e.available("s1", "LATTE-16"); got != 9 {
		t.Fatalf("available %d after one sale of 10, want 9", got)
	}
}

// Each round of wrong codes locks hand-over, the second time for twice as long as the first.
func TestWrongPickupCodesLockHandOverForAWhile(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.PickupMaxWrong, c.PickupLockout = 5, 2*time.Second }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	right := e.codeOf("alice", o.GetId())
	wrong := "000000"
	if wrong == right {
		wrong = "111111"
	}
	for i := 1; i <= 4; i++ {
		_, err := e.handOver("s1", o.GetId(), wrong)
		wantCode(t, fmt.Sprintf("wrong code %d", i), err, codes.PermissionDenied, fmt.Sprintf("%d more and hand-over locks", 5-i))
	}
	_, err := e.handOver("s1", o.GetId(), wrong)
	wantCode(t, "fifth wrong code", err, codes.ResourceExhausted, "locked")
	_, err = e.handOver("s1", o.GetId(), right)
	wantCode(t, "right code while locked", err, codes.ResourceExhausted, "locked")
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("locked hand-over gives no retry delay: %v", status.Convert(err).Details())
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "pickup_locked")

	// Five wrong codes more, once the lock is over, lock it for twice as long.
	time.Sleep(retry.GetRetryDelay().AsDuration())
	for i := 1; i <= 4; i++ {
		_, err := e.handOver("s1", o.GetId(), wrong)
		if status.Code(err) == codes.ResourceExhausted { // the lock's last moments
			time.Sleep(100 * time.Millisecond)
			i--
			continue
		}
		wantCode(t, fmt.Sprintf("wrong code %d after the lock", i), err, codes.PermissionDenied, fmt.Sprintf("%d more and hand-over locks for 4s", 5-i))
	}
	_, err = e.handOver("s1", o.GetId(), wrong)
	wantCode(t, "tenth wrong code", err, codes.ResourceExhausted, "locked for 4s")
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "pickup_locked", "pickup_locked")
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		_, err := e.handOver("s1", o.GetId(), right)
		return err
	})
	if s := e.stateOf(o.GetId()); s != collected {
		t.Fatalf("after the lock the right code left the order %s", s)
	}
}

func TestCancelledOrdersGiveTheirStockBack(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)

	byShopper := e.placeAt("s1", "alice", "k1", "LATTE-16", 3)
	res, err := e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: byShopper.GetId(), Reason: "changed my mind"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOrder().GetState() != cancelled || res.GetOrder().GetReason() != "changed my mind" || res.GetOrder().GetPickupCode() != "" {
		t.Fatalf("cancelled order: %s reason %q code %q", res.GetOrder().GetState(), res.GetOrder().GetReason(), res.GetOrder().GetPickupCode())
	}
	e.waitHolds(byShopper.GetId(), map[string]int{"released": 1})

	byStaff := e.placeAt("s1", "bob", "k1", "LATTE-16", 2)
	e.accept("s1", byStaff.GetId())
	e.markReady("s1", byStaff.GetId())
	_, err = e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: byStaff.GetId()})
	wantCode(t, "staff cancel without a reason", err, codes.InvalidArgument, "reason")
	if _, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: byStaff.GetId(), Reason: "spilled"}); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(byStaff.GetId(), map[string]int{"released": 1})
	if got := e.available("s1", "LATTE-16"); got != 10 {
		t.Fatalf("available %d after both orders were cancelled, want all 10 back", got)
	}
	e.waitEvents(byShopper.GetId(), "confirmed", "cancelled")
	e.waitEvents(byStaff.GetId(), "confirmed", "preparing", "ready", "cancelled")
	e.checkInvariants()
}

// noonZone is an Etc zone where it is about noon now, so that times an hour or two either side
// stay on today's date there.
func noonZone(t testing.TB) (string, *time.Location) {
	t.Helper()
	zone := hours.ZoneWhereItIs(12, time.Now())
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return zone, loc
}

// A pickup window counts the store's open hours only: an order made ready half an hour before
// closing has the rest of its hour once the store opens again, not while it is shut, and its
// stock stays held until then. The store is put in a zone where it is about noon now, closing
// 30 minutes from now and opening at 09:00 tomorrow.
func TestAPickupWindowPausesWhileTheStoreIsShut(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.ExpiringSoonBefore = time.Hour - 300*time.Millisecond // the reminder falls due 300ms after READY
	}})
	zone, loc := noonZone(t)
	local := time.Now().In(loc)
	closes := local.Add(30 * time.Minute).Truncate(time.Minute)
	tomorrow := local.AddDate(0, 0, 1)
	opens := time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day(), 9, 0, 0, 0, loc)
	if _, err := e.inv.CreateStore(e.ctx, &inventoryv1.Store{
		Id: "s1", Name: "Store s1", TimeZone: zone,
		Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33},
		OpeningHours: openAllDay(),
		HoursExceptions: []*inventoryv1.HoursException{
			{Date: local.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
			{Date: tomorrow.Format(time.DateOnly), OpenTime: "09:00", CloseTime: "17:00"},
		},
		PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	e.setStock("s1", "LATTE-16", 2)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 2)
	e.accept("s1", o.GetId())
	r := e.markReady("s1", o.GetId())
	readyAt := r.GetUpdateTime().AsTime()
	want := opens.Add(time.Hour - closes.Sub(readyAt))
	if got := r.GetPickupDeadline().AsTime(); got.Sub(want).Abs() > time.Second {
		t.Fatalf("ready at %s, the store closing at %s and opening at %s: pickup deadline %s, want %s (the hour's rest once open again)",
			readyAt.In(loc).Format(time.RFC3339), closes.Format(time.RFC3339), opens.Format(time.RFC3339),
			got.In(loc).Format(time.RFC3339), want.Format(time.RFC3339))
	}
	// The stock is held to the new deadline, not released overnight.
	var holdUntil time.Time
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := e.invPool.QueryRow(e.ctx, `SELECT max(expire_time) FROM holds WHERE order_id = $1 AND state = 'open'`, o.GetId()).Scan(&holdUntil); err != nil {
			return err
		}
		if holdUntil.Before(want) {
			return fmt.Errorf("the order's stock is held until %s, before its pickup deadline %s", holdUntil.In(loc).Format(time.RFC3339), want.Format(time.RFC3339))
		}
		return nil
	})
	// The reminder, today, gives the deadline with its day: tomorrow.
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "expiring_soon")
	got, err := e.orders.GetOrder(e.asCustomer("alice"), &fulfilmentv1.GetOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	h := got.GetOrder().GetHistory()
	if reason, day := h[len(h)-1].GetReason(), r.GetPickupDeadline().AsTime().In(loc).Format("Mon 2 Jan 15:04"); !strings.Contains(reason, day) {
		t.Errorf("the reminder says %q; want the deadline with its day, %s", reason, day)
	}
}

func TestReadyOrderLeftPastItsPickupWindowExpiresAndItsStockIsAvailableAgain(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 4)
	e.accept("s1", o.GetId())
	r := e.markReady("s1", o.GetId())
	if got := time.Until(r.GetPickupDeadline().AsTime()).Round(time.Minute); got != time.Hour {
		t.Fatalf("pickup deadline in %s, want the store's window of 1h", got)
	}
	if e.available("s1", "LATTE-16") != 0 {
		t.Fatal("stock available while the order waits")
	}
	// An hour passes: the deadline (and so the timer) is now in the past. The smallest window
	// a store may have is a minute, too long to wait for here.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now() - interval '1 second', timer_at = now() - interval '1 second' WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != expired {
			return fmt.Errorf("order is %s, want EXPIRED", s)
		}
		return nil
	})
	e.waitHolds(o.GetId(), map[string]int{"released": 1})
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d after expiry, want 4", got)
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "expired")
	e.checkInvariants()
	// Another shopper can have it now.
	e.placeAt("s1", "bob", "k1", "LATTE-16", 4)
}

// A READY order past its pickup deadline is not handed over while the timer loop is behind (a
// backlog after an outage, during which inventory may have swept its holds): it expires there
// and then, and its stock is not sold.
func TestHandOverPastThePickupDeadlineExpiresTheOrderInstead(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	// The deadline passed twenty minutes ago, and the timer loop has not got to it.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now() - interval '20 minutes',
		expiring_soon_at = NULL, timer_at = now() + interval '1 hour' WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	_, err := e.handOver("s1", o.GetId(), e.codeOf("amy", o.GetId()))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "pickup window") {
		t.Fatalf("hand-over past the deadline: %v; want FailedPrecondition saying the pickup window ended", err)
	}
	if s := e.stateOf(o.GetId()); s != expired {
		t.Fatalf("order is %s after the refused hand-over; want EXPIRED", s)
	}
	e.waitHolds(o.GetId(), map[string]int{"released": 1})
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d after expiry, want 4", got)
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "ready", "expired")
	e.checkInvariants()
}

// An order not made ready in time is not accepted or made ready while the timer loop is behind
// either: staff would give it a new lease of life on holds inventory may have swept. It
// expires there and then, and its stock is given back.
func TestAcceptingOrReadyingAnOverdueOrderExpiresItInstead(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	for _, tc := range []struct {
		name     string
		accepted bool
		act      func(id string) error
		events   []string
	}{
		{"accept", false, func(id string) error {
			_, err := e.store.AcceptOrder(e.asStaff("s1"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: id})
			return err
		}, []string{"confirmed", "expired"}},
		{"mark ready", true, func(id string) error {
			_, err := e.store.MarkReady(e.asStaff("s1"), &fulfilmentv1.MarkReadyRequest{StoreId: "s1", OrderId: id})
			return err
		}, []string{"confirmed", "preparing", "expired"}},
	} {
		o := e.placeAt("s1", "amy", "k-"+tc.name, "LATTE-16", 1)
		if tc.accepted {
			e.accept("s1", o.GetId())
		}
		// Due two hours ago, accepted (if at all) two hours ago: with the hour's pickup window
		// and the grace after it, it should have expired 45 minutes ago, and the timer loop
		// has not got to it.
		if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '2 hours',
			accept_time = CASE WHEN accept_time IS NULL THEN NULL ELSE now() - interval '2 hours' END,
			abandon_at = now() - interval '45 minutes',
			not_accepted_at = NULL, timer_at = now() + interval '1 hour' WHERE id = $1`, o.GetId()); err != nil {
			t.Fatal(err)
		}
		err := tc.act(o.GetId())
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not made ready") {
			t.Fatalf("%s of an overdue order: %v; want FailedPrecondition saying it was not made ready", tc.name, err)
		}
		if s := e.stateOf(o.GetId()); s != expired {
			t.Fatalf("order is %s after the refused %s; want EXPIRED", s, tc.name)
		}
		e.waitHolds(o.GetId(), map[string]int{"released": 1})
		e.waitEvents(o.GetId(), tc.events...)
	}
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d after both orders expired, want 4", got)
	}
	e.checkInvariants()
}

// An order cancelled while inventory is away is CANCELLED at once; its holds are released once
// inventory is back, exactly once, by the effect retried meanwhile.
func TestCancelWhileInventoryIsAwayReleasesTheHoldsOnceItIsBack(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	e.waitNoEffects() // the confirmation's extension has reached inventory
	if err := e.invRPC.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: o.GetId(), Reason: "machine down"}); err != nil {
		t.Fatalf("cancel while inventory is away: %v", err)
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var attempts int
		if err := e.pool.QueryRow(e.ctx, `SELECT coalesce(max(attempts), 0) FROM order_effects WHERE order_id = $1`, o.GetId()).Scan(&attempts); err != nil {
			return err
		}
		if attempts == 0 {
			return errors.New("the release has not been tried yet")
		}
		return nil
	})
	if h := e.holds(o.GetId()); h["open"] != 1 {
		t.Fatalf("holds while inventory is away: %v; want the one still open", h)
	}
	e.serveInventory()
	e.waitHolds(o.GetId(), map[string]int{"released": 1})
	e.waitNoEffects()
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d after the release, want 4", got)
	}
	e.checkInvariants()
}

// A cancel by staff, a hand-over and the expiry of one READY order racing: exactly one of them
// ends it, and its holds end the one way that matches, all sold or all released.
func TestCancelHandOverAndExpiryRacingEndAnOrderOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	outcomes := map[fulfilmentv1.OrderState]int{}
	for i := range 5 {
		o := e.placeAt("s1", "amy", fmt.Sprintf("k%d", i), "LATTE-16", 2)
		e.accept("s1", o.GetId())
		e.markReady("s1", o.GetId())
		code := e.codeOf("amy", o.GetId())
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			_, _ = e.store.CancelOrder(e.asStaff("s1"), &fulfilmentv1.StoreOrderServiceCancelOrderRequest{StoreId: "s1", OrderId: o.GetId(), Reason: "race"})
		})
		wg.Go(func() {
			<-start
			_, _ = e.handOver("s1", o.GetId(), code)
		})
		wg.Go(func() {
			<-start
			_, _ = e.pool.Exec(e.ctx, `UPDATE orders SET pickup_deadline = now(), timer_at = now() WHERE id = $1 AND state = 4`, o.GetId())
		})
		close(start)
		wg.Wait()
		var final fulfilmentv1.OrderState
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			switch final = e.stateOf(o.GetId()); final {
			case collected, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, expired:
				return nil
			}
			return fmt.Errorf("order is %s, want it ended", final)
		})
		if final == collected {
			e.waitHolds(o.GetId(), map[string]int{"committed": 1})
		} else {
			e.waitHolds(o.GetId(), map[string]int{"released": 1})
		}
		e.waitNoEffects()
		var ends int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_state IN (5, 7, 8)`, o.GetId()).Scan(&ends); err != nil {
			t.Fatal(err)
		}
		if ends != 1 {
			t.Fatalf("order %s ended %d times in its history; want once", o.GetId(), ends)
		}
		outcomes[final]++
	}
	t.Logf("outcomes: %v", outcomes)
	e.checkInvariants()
}

// An order its store never gets ready (accepted, then forgotten) expires at the end of the
// pickup window it would have had, plus the grace, and gives its stock back: its holds are
// otherwise extended for as long as it is open, for ever.
func TestAnOrderNeverMadeReadyExpiresAndGivesItsStockBack(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	forgotten := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	e.accept("s1", forgotten.GetId())
	waiting := e.placeAt("s1", "bob", "k1", "LATTE-16", 1)
	e.waitNoEffects()
	// Both were due ready long ago, and the accepted one was accepted long ago too (so their
	// time ran out 45 minutes ago); the timer loop will see them at once.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '2 hours', timer_at = now(),
		accept_time = CASE WHEN accept_time IS NULL THEN NULL ELSE now() - interval '2 hours' END,
		abandon_at = now() - interval '45 minutes' WHERE id = ANY ($1)`,
		[]string{forgotten.GetId(), waiting.GetId()}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*fulfilmentv1.Order{forgotten, waiting} {
		testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if s := e.stateOf(o.GetId()); s != expired {
				return fmt.Errorf("order %s is %s, want EXPIRED", o.GetId(), s)
			}
			return nil
		})
		e.waitHolds(o.GetId(), map[string]int{"released": 1})
	}
	e.waitEvents(forgotten.GetId(), "confirmed", "preparing", "expired")
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d after the expiries, want 4", got)
	}
	e.checkInvariants()
}

// An order a busy store accepts after its estimate has passed (the estimate counts at most
// ReadyByQueueCap orders ahead) is being prepared: it gets its time to be made ready from the
// acceptance and does not expire under staff's hands.
func TestAnOrderAcceptedLateHasItsTimeFromTheAcceptance(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "amy", "k1", "LATTE-16", 1)
	e.waitNoEffects()
	// Its estimate passed 74 minutes ago: a minute short of its abandon time when accepted.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '74 minutes',
		abandon_at = now() + interval '1 minute' WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	e.accept("s1", o.GetId())
	// An hour later (the order's times moved back an hour), 15 minutes short of the end of the
	// time it has from its acceptance, the timer loop looks at it again.
	e.letTimePass(o.GetId(), time.Hour, 10*time.Minute)
	if s := e.stateOf(o.GetId()); s != preparing {
		t.Fatalf("an order accepted late is %s; want PREPARING (it expired under staff's hands)", s)
	}
	e.markReady("s1", o.GetId())
	e.checkInvariants()
}

// letTimePass makes d pass for an order not ready yet (its ready-by, acceptance and abandon
// times moved d back) and waits until the timer loop has looked at it: it ended, or its next
// timer is more than next away.
func (e *env) letTimePass(orderID string, d, next time.Duration) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = ready_by - $2::bigint * interval '1 microsecond',
		accept_time = accept_time - $2::bigint * interval '1 microsecond', abandon_at = abandon_at - $2::bigint * interval '1 microsecond',
		timer_at = now() WHERE id = $1`, orderID, d.Microseconds()); err != nil {
		e.t.Fatal(err)
	}
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		var looked bool
		if err := e.pool.QueryRow(e.ctx, `SELECT timer_at IS NULL OR timer_at > now() + $2::bigint * interval '1 microsecond' FROM orders WHERE id = $1`,
			orderID, next.Microseconds()).Scan(&looked); err != nil {
			return err
		}
		if !looked {
			return errors.New("the timer loop has not looked at the order yet")
		}
		return nil
	})
}

// A shopper whose order is queued behind others at a store closing soon is never promised it
// for while the store is shut: the estimate counts the store's open hours, as the pickup
// window does. The store closes in about 10 minutes and opens at 09:00 tomorrow; with 5
// minutes' prep, the third order in the queue is due 15 minutes of open time from now.
func TestAnOrderQueuedUpToClosingIsPromisedForAfterTheStoreOpens(t *testing.T) {
	e := newEnv(t, envOptions{})
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 10)
	for i := range 3 {
		o := e.placeAt("s1", "alice", fmt.Sprintf("k%d", i), "LATTE-16", 1)
		rb := o.GetReadyByTime().AsTime()
		if rb.After(closes) && rb.Before(opens) {
			t.Errorf("order %d: promised ready by %s, while the store is shut (it closes at %s and opens at %s)",
				i+1, rb.In(loc).Format(time.RFC3339), closes.Format(time.RFC3339), opens.Format(time.RFC3339))
		}
		if i == 2 && !rb.After(opens) {
			t.Errorf("the third order is promised ready by %s; want after the store opens at %s", rb.In(loc).Format(time.RFC3339), opens.Format(time.RFC3339))
		}
	}
}

// The not-accepted escalation of an order placed just before closing counts the store's open
// hours too: it reaches the store after it opens again, not at night while nobody is there.
func TestTheNotAcceptedEscalationCountsTheStoresOpenHours(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.NotAcceptedAfter = 15 * time.Minute }})
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	var at time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT not_accepted_at FROM orders WHERE id = $1`, o.GetId()).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if !at.After(opens) || at.After(opens.Add(15*time.Minute)) {
		t.Errorf("the escalation is due at %s; want within the 15 minutes after the store opens at %s (it closes at %s)",
			at.In(loc).Format(time.RFC3339), opens.Format(time.RFC3339), closes.Format(time.RFC3339))
	}
}

// addStoreClosingSoon creates store s1 (5 minutes' prep, an hour's pickup window) in a zone
// where it is about noon now, closing in about 10 minutes and opening at 09:00 tomorrow, and
// gives the zone, today's closing and tomorrow's opening.
func (e *env) addStoreClosingSoon() (loc *time.Location, closes, opens time.Time) {
	e.t.Helper()
	zone, loc := noonZone(e.t)
	local := time.Now().In(loc)
	closes = local.Add(10 * time.Minute).Truncate(time.Minute)
	tomorrow := local.AddDate(0, 0, 1)
	opens = time.Date(tomorrow.Year(), tomorrow.Month(), tomorrow.Day(), 9, 0, 0, 0, loc)
	if _, err := e.inv.CreateStore(e.ctx, &inventoryv1.Store{
		Id: "s1", Name: "Store s1", TimeZone: zone,
		Address:      &inventoryv1.Address{Line1: "1 Test St", City: "Seattle", CountryCode: "US"},
		Location:     &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33},
		OpeningHours: openAllDay(),
		HoursExceptions: []*inventoryv1.HoursException{
			{Date: local.Format(time.DateOnly), OpenTime: "00:00", CloseTime: closes.Format("15:04")},
			{Date: tomorrow.Format(time.DateOnly), OpenTime: "09:00", CloseTime: "17:00"},
		},
		PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
	}); err != nil {
		e.t.Fatal(err)
	}
	return loc, closes, opens
}

// An order not made ready has the pickup window it would have had counted in the store's open
// hours too, as a ready one has its own: one due ready 5 minutes before closing, accepted, and
// still not ready when the store shuts does not expire overnight with its stock released (and
// staff refused when they mark it ready in the morning), but 15 minutes after the rest of its
// hour the next day. The store is put where it is about noon now, closing in about 10 minutes
// and opening at 09:00 tomorrow; the night is then made to pass by moving the order's times
// (estimate, acceptance, abandon time) 90 minutes back, when in plain time its hour and the
// grace would have ended 10 minutes ago.
func TestAnOrderDueReadyJustBeforeClosingDoesNotExpireOvernight(t *testing.T) {
	e := newEnv(t, envOptions{})
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 2)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	readyBy := o.GetReadyByTime().AsTime()
	if left := closes.Sub(readyBy); left <= 0 || left > 5*time.Minute {
		t.Fatalf("the order is due ready at %s, the store closing at %s; want it due at most 5 minutes before",
			readyBy.In(loc).Format(time.TimeOnly), closes.Format(time.TimeOnly))
	}
	want := opens.Add(time.Hour - closes.Sub(readyBy) + domain.AbandonGrace) // about 10:10
	var abandonAt time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT abandon_at FROM orders WHERE id = $1`, o.GetId()).Scan(&abandonAt); err != nil {
		t.Fatal(err)
	}
	if abandonAt.Sub(want).Abs() > time.Second {
		t.Fatalf("due ready at %s, the store closing at %s and opening at %s: the order expires at %s if not made ready; want %s (the hour's rest once open again, and the grace)",
			readyBy.In(loc).Format(time.RFC3339), closes.Format(time.RFC3339), opens.Format(time.RFC3339),
			abandonAt.In(loc).Format(time.RFC3339), want.Format(time.RFC3339))
	}
	// Its stock is held until then, not released overnight.
	e.waitHoldsExpireAfter(o.GetId(), want.Add(-time.Second))

	e.letTimePass(o.GetId(), 90*time.Minute, time.Minute)
	if s := e.stateOf(o.GetId()); s != preparing {
		t.Fatalf("an order due ready 5 minutes before its store closed is %s overnight; want PREPARING until 15 minutes past the end of the window it would have had, the next morning", s)
	}
	// Staff making it ready in the morning can.
	e.markReady("s1", o.GetId())
	e.checkInvariants()
}

func TestTimersPublishNotAcceptedAndExpiringSoonOnce(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) {
		c.NotAcceptedAfter = 300 * time.Millisecond
		c.ExpiringSoonBefore = time.Hour - 300*time.Millisecond // the reminder falls due 300ms after READY
	}})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	if o.GetStoreTimeZone() != "America/Los_Angeles" {
		t.Errorf("order's store time zone %q; want its store's, America/Los_Angeles", o.GetStoreTimeZone())
	}
	e.waitEvents(o.GetId(), "confirmed", "not_accepted")
	e.accept("s1", o.GetId())
	r := e.markReady("s1", o.GetId())
	e.waitEvents(o.GetId(), "confirmed", "not_accepted", "preparing", "ready", "expiring_soon")
	time.Sleep(300 * time.Millisecond) // several timer rounds: nothing more may fire
	e.waitEvents(o.GetId(), "confirmed", "not_accepted", "preparing", "ready", "expiring_soon")
	if s := e.stateOf(o.GetId()); s != ready {
		t.Fatalf("order is %s after its reminders, want READY", s)
	}
	// The reminder gives the pickup deadline on the store's clock, where the shopper will be.
	got, err := e.orders.GetOrder(e.asCustomer("alice"), &fulfilmentv1.GetOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	la, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		t.Fatal(err)
	}
	h := got.GetOrder().GetHistory()
	want := r.GetPickupDeadline().AsTime().In(la).Format("15:04 MST")
	if reason := h[len(h)-1].GetReason(); !strings.Contains(reason, want) {
		t.Errorf("the reminder says %q; want the deadline on the store's clock, %s", reason, want)
	}
}

func TestCheckInIsRecordedOnceAndToldToTheStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	for range 2 {
		res, err := e.orders.CheckIn(e.asCustomer("alice"), &fulfilmentv1.CheckInRequest{OrderId: o.GetId(), Bay: "bay 3"})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetOrder().GetCheckIn().GetBay() != "bay 3" {
			t.Fatalf("check-in %v, want bay 3", res.GetOrder().GetCheckIn())
		}
	}
	e.waitEvents(o.GetId(), "confirmed", "checked_in")
	_, err := e.orders.CheckIn(e.asCustomer("alice"), &fulfilmentv1.CheckInRequest{OrderId: o.GetId(), Bay: "a bay name much longer than thirty-two characters"})
	wantCode(t, "long bay", err, codes.InvalidArgument, "bay")
}

// Each check-in puts a ticket on every terminal of the store, so an order's are capped: the
// first and 4 changes of bay. One beyond is refused naming bay, writing and publishing nothing;
// a repeat at the bay already given is still a quiet success.
func TestCheckInsOfAnOrderAreCapped(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	checkIn := func(bay string) (*fulfilmentv1.CheckInResponse, error) {
		return e.orders.CheckIn(e.asCustomer("alice"), &fulfilmentv1.CheckInRequest{OrderId: o.GetId(), Bay: bay})
	}
	bays := []string{"bay 1", "bay 2", "bay 1", "bay 2", "bay 1"}
	for _, bay := range bays {
		if _, err := checkIn(bay); err != nil {
			t.Fatalf("check-in at %s: %v", bay, err)
		}
	}
	e.waitEvents(o.GetId(), "confirmed", "checked_in", "checked_in", "checked_in", "checked_in", "checked_in")
	e.waitSettled(6)
	before := e.snapshot()
	_, err := checkIn("bay 2")
	wantCode(t, "a sixth check-in", err, codes.FailedPrecondition, "bay", "5 times")
	res, err := checkIn("bay 1")
	if err != nil || res.GetOrder().GetCheckIn().GetBay() != "bay 1" {
		t.Fatalf("a repeat at the bay given: %v, %v; want the order at bay 1", res.GetOrder().GetCheckIn(), err)
	}
	time.Sleep(50 * time.Millisecond) // an event wrongly written would be on its way
	if after := e.snapshot(); after != before {
		t.Fatalf("a check-in beyond the cap or at the same bay changed something:\nbefore %s\nafter  %s", before, after)
	}
}

func TestShoppersAndStaffSeeOnlyTheirOwnOrders(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.addStore("s2", 47.62, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	alices := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)

	_, err := e.orders.GetOrder(e.asCustomer("mallory"), &fulfilmentv1.GetOrderRequest{OrderId: alices.GetId()})
	wantCode(t, "reading another's order", err, codes.NotFound, alices.GetId())
	_, err = e.orders.CancelOrder(e.asCustomer("mallory"), &fulfilmentv1.CancelOrderRequest{OrderId: alices.GetId()})
	wantCode(t, "cancelling another's order", err, codes.NotFound, alices.GetId())
	_, err = e.orders.CheckIn(e.asCustomer("mallory"), &fulfilmentv1.CheckInRequest{OrderId: alices.GetId()})
	wantCode(t, "checking in another's order", err, codes.NotFound)
	stream, err := e.orders.WatchOrder(e.asCustomer("mallory"), &fulfilmentv1.WatchOrderRequest{OrderId: alices.GetId()})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "watching another's order", err, codes.NotFound)
	list, err := e.orders.ListOrders(e.asCustomer("mallory"), &fulfilmentv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 0 {
		t.Fatalf("mallory lists %d orders (%v), want none", len(list.GetOrders()), err)
	}
	_, err = e.orders.GetOrder(e.ctx, &fulfilmentv1.GetOrderRequest{OrderId: alices.GetId()})
	wantCode(t, "no shopper at all", err, codes.Unauthenticated)
	if s := e.stateOf(alices.GetId()); s != confirmed {
		t.Fatalf("alice's order is %s after mallory's attempts", s)
	}

	// Staff of s2 cannot see s1's board, nor act on s1's orders through s2.
	_, err = e.store.ListStoreOrders(e.asStaff("s2"), &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1"})
	wantCode(t, "another store's board", err, codes.PermissionDenied, "s1")
	_, err = e.store.AcceptOrder(e.asStaff("s2"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s2", OrderId: alices.GetId()})
	wantCode(t, "another store's order", err, codes.NotFound, alices.GetId())
	_, err = e.store.AcceptOrder(e.asCustomer("alice"), &fulfilmentv1.AcceptOrderRequest{StoreId: "s1", OrderId: alices.GetId()})
	wantCode(t, "a shopper using the staff API", err, codes.Unauthenticated)

	board, err := e.store.ListStoreOrders(e.asStaff("s1", "s2"), &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(board.GetOrders()) != 1 || board.GetOrders()[0].GetId() != alices.GetId() || board.GetOrders()[0].GetPickupCode() != "" {
		t.Fatalf("s1's board %v, want alice's order without its pickup code", board.GetOrders())
	}
}

func TestListOrdersPagesNewestFirst(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "TEA", 100)
	var ids []string
	for i := range 5 {
		ids = append(ids, e.placeAt("s1", "alice", fmt.Sprint("k", i), "TEA", 1).GetId())
	}
	e.placeAt("s1", "bob", "k0", "TEA", 1)
	if _, err := e.orders.CancelOrder(e.asCustomer("alice"), &fulfilmentv1.CancelOrderRequest{OrderId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	var got []string
	token := ""
	for page := 0; ; page++ {
		res, err := e.orders.ListOrders(e.asCustomer("alice"), &fulfilmentv1.ListOrdersRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.GetOrders() {
			got = append(got, o.GetId())
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("pages gave %v, want alice's orders newest first %v", got, want)
	}
	res, err := e.orders.ListOrders(e.asCustomer("alice"), &fulfilmentv1.ListOrdersRequest{States: []fulfilmentv1.OrderState{cancelled}})
	if err != nil || len(res.GetOrders()) != 1 || res.GetOrders()[0].GetId() != ids[1] {
		t.Fatalf("cancelled filter gave %v (%v), want only %s", res.GetOrders(), err, ids[1])
	}
	_, err = e.orders.ListOrders(e.asCustomer("alice"), &fulfilmentv1.ListOrdersRequest{PageToken: "garbage!"})
	wantCode(t, "bad page token", err, codes.InvalidArgument, "page_token")
}

// holdDeadlines returns the earliest deadline of the order's holds and how many are open.
func (e *env) holdDeadlines(orderID string) (time.Time, int) {
	e.t.Helper()
	var earliest time.Time
	var open int
	if err := e.invPool.QueryRow(e.ctx, `SELECT min(expire_time), count(*) FILTER (WHERE state = 'open') FROM holds WHERE order_id = $1`, orderID).Scan(&earliest, &open); err != nil {
		e.t.Fatal(err)
	}
	return earliest, open
}

// waitHoldsExpireAfter waits until every hold of the order is open until after want.
func (e *env) waitHoldsExpireAfter(orderID string, want time.Time) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		at, open := e.holdDeadlines(orderID)
		if open == 0 || at.Before(want) {
			return fmt.Errorf("order %s: %d open holds, earliest deadline %s, want all open until after %s", orderID, open, at.Format(time.TimeOnly), want.Format(time.TimeOnly))
		}
		return nil
	})
}

// The reviewer's case against extending only near the deadline: the holds are extended to the
// pickup horizon right after confirmation, so an outage between fulfilment and inventory at
// any later point (shorter than that horizon) costs the order nothing. The extensions of many
// confirmations go to inventory together, a share of one change_holds request each.
func TestHoldsAreExtendedAtConfirmationInBatches(t *testing.T) {
	// Effects rounds a second apart (the default), so confirmations gather between them.
	e := newEnv(t, envOptions{config: func(c *fulfilment.Config) { c.SweepInterval = time.Second }})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 100)
	spy := e.spyHoldChanges()
	const n = 20
	orders := make([]*fulfilmentv1.Order, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			orders[i] = e.mustPlace(checkout(fmt.Sprintf("shopper-%d", i), "k", "s1", line{"LATTE-16", 1}), confirmed)
		})
	}
	wg.Wait()
	for _, o := range orders {
		// ready-by (5m) + pickup window (1h) + grace (15m), well past the placement's 10m.
		e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour))
	}
	e.waitNoEffects()
	extends := spy.takeExtends()
	total := 0
	for _, x := range extends {
		total += x
	}
	if total != n || len(extends) > 3 {
		t.Fatalf("%d extensions in %d requests %v, want %d in a few requests", total, len(extends), extends, n)
	}
	t.Logf("%d confirmations' extensions went to inventory in %d requests %v", n, len(extends), extends)
	e.checkInvariants()
}

func TestHoldsFollowAnOrderReadyLateOrOpenLong(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	late := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	long := e.placeAt("s1", "bob", "k1", "LATTE-16", 1)
	for _, o := range []*fulfilmentv1.Order{late, long} {
		e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour))
		e.accept("s1", o.GetId())
	}

	// Ready 30 minutes after its estimate: its pickup window starts now, and ends half an hour
	// after the holds' deadline set at confirmation. (The estimate is moved back instead of
	// waiting; inventory and fulfilment agree on the holds' deadline.)
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = ready_by - interval '30 minutes', hold_deadline = hold_deadline - interval '30 minutes' WHERE id = $1`, late.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = expire_time - interval '30 minutes' WHERE order_id = $1`, late.GetId()); err != nil {
		t.Fatal(err)
	}
	r := e.markReady("s1", late.GetId())
	e.waitHoldsExpireAfter(late.GetId(), r.GetPickupDeadline().AsTime())

	// Time passes and the staff are slow: the other order's holds are 30s from their end,
	// well inside the refresh margin; the timer loop extends them.
	if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = now() + interval '30 seconds' WHERE order_id = $1`, long.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET hold_deadline = now() + interval '30 seconds', timer_at = now() WHERE id = $1`, long.GetId()); err != nil {
		t.Fatal(err)
	}
	e.waitHoldsExpireAfter(long.GetId(), time.Now().Add(time.Hour))
	if s := e.stateOf(long.GetId()); s != preparing {
		t.Fatalf("order is %s after its holds were refreshed, want PREPARING", s)
	}
	if s := e.stateOf(late.GetId()); s != ready {
		t.Fatalf("order is %s after its holds were extended, want READY", s)
	}
	e.checkInvariants()
	// And the extended holds still end as the orders do.
	if _, err := e.handOver("s1", late.GetId(), late.GetPickupCode()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(late.GetId(), map[string]int{"committed": 1})
	e.checkInvariants()
}

// acceptedOrderWhoseHoldWasSwept places and accepts an order of one latte at s1 (4 in stock),
// whose hold then reaches its deadline during an outage and is ended by inventory's sweeper.
func acceptedOrderWhoseHoldWasSwept(t *testing.T) (*env, *fulfilmentv1.Order) {
	t.Helper()
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour)) // the confirmation's extension
	if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = now() - interval '1 second' WHERE order_id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"expired": 1})
	return e, o
}

// Inventory was out of reach for longer than the holds lived: its sweeper ended them, and
// another order may already hold those units. Fulfilment must not keep the order open as if
// its stock were held (staff would hand over units promised twice, and the hand-over would
// commit nothing): it cancels it, says why, and tells the store and the shopper.
func TestOrderWhoseHoldsLapsedIsCancelledNotKeptOpen(t *testing.T) {
	e, o := acceptedOrderWhoseHoldWasSwept(t)
	// Inventory is back; fulfilment's timer comes to extend the holds and finds none.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET hold_deadline = now() + interval '30 seconds', timer_at = now() WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	// Generous: on a loaded machine an inventory call may time out and be retried with backoff.
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != cancelled {
			return fmt.Errorf("order is %s after its holds lapsed, want CANCELLED", s)
		}
		return nil
	})
	res, err := e.orders.GetOrder(e.asCustomer("alice"), &fulfilmentv1.GetOrderRequest{OrderId: o.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.GetOrder().GetReason(), "released") {
		t.Fatalf("the shopper is not told why: reason %q", res.GetOrder().GetReason())
	}
	e.waitEvents(o.GetId(), "confirmed", "preparing", "cancelled")
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d, want all 4 (nothing held for a cancelled order)", got)
	}
	e.checkInvariants()
}

// An extension inventory refuses (its deadline passed while it waited behind a long outage) is
// dropped; the order must be looked at again at once, not keep the deadline it asked for and
// wait for its next timer (an hour away here) while its holds are gone: the timer loop records
// a fresh extension, which finds the holds swept, and the order is cancelled.
func TestARefusedExtensionHasTheOrderLookedAtAgainAtOnce(t *testing.T) {
	e, o := acceptedOrderWhoseHoldWasSwept(t)
	// Meanwhile an extension was recorded whose deadline has passed by the time it is sent:
	// inventory refuses it. The order took that deadline, and its next timer is an hour away.
	var deadline time.Time
	if err := e.pool.QueryRow(e.ctx, `UPDATE orders SET hold_deadline = now() - interval '1 second', timer_at = now() + interval '1 hour'
		WHERE id = $1 RETURNING hold_deadline`, o.GetId()).Scan(&deadline); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO order_effects (order_id, kind, deadline, want_holds) VALUES ($1, $2, $3, 1)`,
		o.GetId(), int16(domain.ExtendHolds), deadline); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if s := e.stateOf(o.GetId()); s != cancelled {
			return fmt.Errorf("order is %s after its extension was refused and its holds lapsed, want CANCELLED", s)
		}
		return nil
	})
	if got := e.available("s1", "LATTE-16"); got != 4 {
		t.Fatalf("available %d, want all 4 (nothing held for a cancelled order)", got)
	}
	e.checkInvariants()
}

// A two-line order's latte hold lapses during an outage; meanwhile staff mark the muffin
// unavailable, whose hold is still open (its release waits behind the extension). The
// extension finds one open hold for one active line, but it is the wrong line: the latte is
// held for nobody, and the order must be cancelled, not kept open to be handed over with
// nothing committed.
func TestAnOrderIsCancelledWhenAnActiveLineLapsedThoughAsManyHoldsAreOpen(t *testing.T) {
	e := newEnv(t, envOptions{})
	o := e.placeAndLapseFirstLine()
	e.waitEffectTried(o.GetId(), domain.ExtendHolds)
	if _, err := e.store.MarkLineUnavailable(e.asStaff("s1"), &fulfilmentv1.MarkLineUnavailableRequest{StoreId: "s1", OrderId: o.GetId(), LineId: "l2", Reason: "sold out"}); err != nil {
		t.Fatal(err)
	}
	e.invRPC = e.serveInventory()
	e.waitFirstLineLapsed(o.GetId())
	for _, sku := range []string{"LATTE-16", "MUFFIN"} {
		if got := e.available("s1", sku); got != 4 {
			t.Fatalf("%s available %d, want all 4", sku, got)
		}
	}
	e.checkInvariants()
}

// The holds a lapsed order still had are released as the cancellation's, and inventory's
// ledger says so.
func TestALapsedOrdersRemainingHoldsAreReleasedAsCancelled(t *testing.T) {
	e := newEnv(t, envOptions{})
	o := e.placeAndLapseFirstLine()
	e.invRPC = e.serveInventory()
	e.waitFirstLineLapsed(o.GetId())
	var reason string
	if err := e.invPool.QueryRow(e.ctx, `SELECT release_reason FROM holds WHERE order_id = $1 AND line_id = 'l2'`, o.GetId()).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if reason != "order_cancelled" {
		t.Fatalf("the muffin's hold was released for %q, want order_cancelled", reason)
	}
}

// placeAndLapseFirstLine places a latte-and-muffin order at s1, accepted, then cuts fulfilment
// off from inventory (e.invRPC stopped), lets inventory's sweeper end the latte's hold (l1),
// and makes the order's timer due to extend its holds.
func (e *env) placeAndLapseFirstLine() *fulfilmentv1.Order {
	e.t.Helper()
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 4)
	e.setStock("s1", "MUFFIN", 4)
	o := e.mustPlace(checkout("alice", "k1", "s1", line{"LATTE-16", 1}, line{"MUFFIN", 1}), confirmed)
	e.waitHoldsExpireAfter(o.GetId(), time.Now().Add(time.Hour))
	e.accept("s1", o.GetId())
	e.waitNoEffects()
	if err := e.invRPC.Stop(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.invPool.Exec(e.ctx, `UPDATE holds SET expire_time = now() - interval '1 second' WHERE order_id = $1 AND line_id = 'l1'`, o.GetId()); err != nil {
		e.t.Fatal(err)
	}
	e.waitHolds(o.GetId(), map[string]int{"expired": 1, "open": 1})
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET hold_deadline = now() + interval '30 seconds', timer_at = now() WHERE id = $1`, o.GetId()); err != nil {
		e.t.Fatal(err)
	}
	return o
}

// waitFirstLineLapsed waits for placeAndLapseFirstLine's order to be cancelled for its lapsed
// latte, with the muffin's hold released. Generous: on a loaded machine an inventory call may
// time out and be retried with backoff.
func (e *env) waitFirstLineLapsed(orderID string) {
	e.t.Helper()
	testenv.CheckFor(e.t, 30*time.Second, 10*time.Millisecond, func() error {
		if s := e.stateOf(orderID); s != cancelled {
			return fmt.Errorf("order is %s with its latte's hold lapsed, want CANCELLED", s)
		}
		return nil
	})
	e.waitHolds(orderID, map[string]int{"expired": 1, "released": 1})
}

// waitEffectTried waits until an effect of kind for the order has been tried at least once.
func (e *env) waitEffectTried(orderID string, kind domain.Effect) {
	e.t.Helper()
	testenv.CheckFor(e.t, 10*time.Second, 10*time.Millisecond, func() error {
		var attempts int
		if err := e.pool.QueryRow(e.ctx, `SELECT coalesce(max(attempts), 0) FROM order_effects WHERE order_id = $1 AND kind = $2`, orderID, int16(kind)).Scan(&attempts); err != nil {
			return err
		}
		if attempts == 0 {
			return errors.New("the effect has not been tried yet")
		}
		return nil
	})
}

// forgedListPosition has the shape of the order lists' page position, for forging tokens: its
// hash binds a token to its call but has no key, so anyone can make one.
type forgedListPosition struct {
	Time int64  `json:"t"`
	ID   string `json:"i"`
}

// A forged page token whose time Postgres cannot hold is refused naming page_token, not
// failed as Internal by the query ("timestamp out of range"); the first and last instants it
// can hold are taken.
func TestForgedPageTokenTimesAreRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	list := func(us int64) (error, error) {
		mine := &fulfilmentv1.ListOrdersRequest{}
		mine.PageToken = pagetoken.Encode(mine, forgedListPosition{Time: us, ID: "x"})
		_, errMine := e.orders.ListOrders(e.asCustomer("alice"), mine)
		board := &fulfilmentv1.ListStoreOrdersRequest{StoreId: "s1"}
		board.PageToken = pagetoken.Encode(board, forgedListPosition{Time: us, ID: "x"})
		_, errBoard := e.store.ListStoreOrders(e.asStaff("s1"), board)
		return errMine, errBoard
	}
	for _, us := range []int64{math.MinInt64, math.MaxInt64, -300000000000000000, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()} {
		errMine, errBoard := list(us)
		wantCode(t, fmt.Sprintf("ListOrders with a token at %d µs", us), errMine, codes.InvalidArgument, "page_token")
		wantCode(t, fmt.Sprintf("ListStoreOrders with a token at %d µs", us), errBoard, codes.InvalidArgument, "page_token")
	}
	for _, at := range []time.Time{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)} {
		if errMine, errBoard := list(at.UnixMicro()); errMine != nil || errBoard != nil {
			t.Errorf("a token at %s: ListOrders %v, ListStoreOrders %v; want both listed", at, errMine, errBoard)
		}
	}
}

// The confirmation alone gives an order due ready just before closing its abandon time in the
// store's open hours, and so does a late acceptance, each on its own (the test above accepts at
// once, which either would satisfy).
func TestTheConfirmationAndALateAcceptanceEachCountTheStoresOpenHours(t *testing.T) {
	e := newEnv(t, envOptions{})
	loc, closes, opens := e.addStoreClosingSoon()
	e.setStock("s1", "LATTE-16", 2)
	o := e.placeAt("s1", "alice", "k1", "LATTE-16", 1)
	readyBy := o.GetReadyByTime().AsTime()
	want := opens.Add(time.Hour - closes.Sub(readyBy) + domain.AbandonGrace)
	var abandonAt time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT abandon_at FROM orders WHERE id = $1`, o.GetId()).Scan(&abandonAt); err != nil {
		t.Fatal(err)
	}
	if abandonAt.Sub(want).Abs() > time.Second {
		t.Errorf("confirmed, not accepted: abandon_at %s, want %s", abandonAt.In(loc), want.In(loc))
	}
	// Accepted "after closing": move the estimate and the stored abandon time back so that the
	// acceptance (now) is after both; the abandon time should then be counted in open hours from now.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET ready_by = now() - interval '1 minute', abandon_at = now() + interval '1 minute' WHERE id = $1`, o.GetId()); err != nil {
		t.Fatal(err)
	}
	e.accept("s1", o.GetId())
	if err := e.pool.QueryRow(e.ctx, `SELECT abandon_at FROM orders WHERE id = $1`, o.GetId()).Scan(&abandonAt); err != nil {
		t.Fatal(err)
	}
	if !abandonAt.After(opens) {
		t.Errorf("accepted 10 minutes before closing: abandon_at %s; want after the store reopens at %s", abandonAt.In(loc), opens)
	}
}

// A "ready" email replayed after its order was collected is not sent, whatever notifications of
// the order are left: the dispatcher asks fulfilment's orders (OrderEnded). Here no end email
// is left to tell it (the shopper's end emails gone, as a retention would take them).
func TestAReadyEmailReplayedAfterCollectionIsSkippedFromTheOrdersOwnState(t *testing.T) {
	e := newEnv(t, envOptions{config: withSenders(notify.ChannelEmail)})
	e.addStore("s1", 47.61, -122.33, 5*time.Minute, time.Hour)
	e.setStock("s1", "LATTE-16", 10)
	o := e.placeAt("s1", "alice", "k-replay", "LATTE-16", 1)
	e.accept("s1", o.GetId())
	e.markReady("s1", o.GetId())
	if _, err := e.handOver("s1", o.GetId(), e.codeOf("alice", o.GetId())); err != nil {
		t.Fatal(err)
	}
	// Sent, or skipped if the collected email was already on its way when it came due.
	var readyID string
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		return e.pool.QueryRow(e.ctx, `SELECT id::text FROM notifications WHERE order_id = $1 AND channel = 'email'
			AND kind = $2 AND state IN ('sent', 'skipped')`, o.GetId(), notify.KindReady).Scan(&readyID)
	})
	// As ReplayNotification does, with the end emails gone.
	if _, err := e.pool.Exec(e.ctx, `DELETE FROM notifications WHERE order_id = $1 AND id <> $2`, o.GetId(), readyID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = now(), fail_time = NULL
		WHERE id = $1`, readyID); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var state, lastError string
		if err := e.pool.QueryRow(e.ctx, `SELECT state, last_error FROM notifications WHERE id = $1`, readyID).Scan(&state, &lastError); err != nil {
			return err
		}
		if state == "pending" {
			return fmt.Errorf("the replayed ready email is still pending")
		}
		if state != "skipped" || !strings.Contains(lastError, "collected") {
			t.Fatalf("the ready email of a collected order, replayed, is %s (%q); want skipped: the order was collected", state, lastError)
		}
		return nil
	})
}
