package load

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// A run is sound only when it showed it: nothing oversold, every confirmed unit checked
// against a store's availability, and inventory's invariants checked and holding. A check
// that could not be made (a wrong -inventory address) shows nothing.
func TestARunIsSoundOnlyWhenItsChecksWereMadeAndHeld(t *testing.T) {
	ok := Invariants{Checked: true, OK: true}
	for name, c := range map[string]struct {
		res  Result
		want bool
	}{
		"all checked and holding":   {Result{Invariants: ok}, true},
		"units oversold":            {Result{Invariants: ok, OversoldUnits: 1}, false},
		"units not checked":         {Result{Invariants: ok, UncheckedUnits: 3}, false},
		"checkouts of unknown fate": {Result{Invariants: ok, UnknownCheckouts: 1}, false},
		"invariants broken":         {Result{Invariants: Invariants{Checked: true}}, false},
		"invariants not checkable":  {Result{Invariants: Invariants{Note: "inventory's gRPC address not given"}}, false},
	} {
		if got := c.res.Sound(); got != c.want {
			t.Errorf("%s: Sound() = %v, want %v", name, got, c.want)
		}
	}
}

// A run that is not sound says why, each cause by name: units sold at a store whose stock was
// not taken are not "oversold", and the message names the stores and why they were missed.
func TestAnUnsoundRunNamesItsCause(t *testing.T) {
	ok := Invariants{Checked: true, OK: true}
	for name, c := range map[string]struct {
		res  Result
		want []string
		not  []string
	}{
		"units not checked": {Result{Invariants: ok, UncheckedUnits: 3, UncheckedStores: []string{"north-51"}},
			[]string{"3 confirmed units could not be checked", "store north-51", "not taken at the start", "created since the run began"}, []string{"oversold:", "invariants"}},
		"stores missed": {Result{Invariants: ok, UncheckedUnits: 2, UncheckedStores: []string{"a", "b", "c", "d", "e", "f"}, SnapshotNote: "more than 50 stores stand within 50 m of each other"},
			[]string{"6 stores (a, b, c, d, e and 1 more)", "more than 50 stores stand within 50 m of each other"}, []string{"created since"}},
		"units oversold":   {Result{Invariants: ok, OversoldUnits: 2}, []string{"2 units were oversold"}, []string{"could not be checked"}},
		"unknown":          {Result{Invariants: ok, UnknownCheckouts: 1}, []string{"1 checkouts got no answer"}, []string{"oversold:"}},
		"invariants off":   {Result{Invariants: Invariants{Checked: true, Violations: []string{"x"}}}, []string{"invariants do not hold: 1 violations"}, nil},
		"invariants unrun": {Result{Invariants: Invariants{Note: "inventory's gRPC address not given (-inventory)"}}, []string{"could not be checked: inventory's gRPC address not given"}, nil},
	} {
		why := c.res.Unsound()
		for _, w := range c.want {
			if !strings.Contains(why, w) {
				t.Errorf("%s: %q does not say %q", name, why, w)
			}
		}
		for _, w := range c.not {
			if strings.Contains(why, w) {
				t.Errorf("%s: %q says %q", name, why, w)
			}
		}
	}
	if why := (&Result{Invariants: ok}).Unsound(); why != "" {
		t.Errorf("a sound run: %q", why)
	}
}

// An order's units count as sold from the first state at or past CONFIRMED a shopper sees,
// which a watch may show instead of CONFIRMED itself.
func TestAnOrderIsConfirmedFromAnyStateAtOrPastConfirmation(t *testing.T) {
	for s, want := range map[fulfilmentv1.OrderState]bool{
		fulfilmentv1.OrderState_ORDER_STATE_PENDING: false, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED: true,
		fulfilmentv1.OrderState_ORDER_STATE_PREPARING: true, fulfilmentv1.OrderState_ORDER_STATE_READY: true,
		fulfilmentv1.OrderState_ORDER_STATE_COLLECTED: true, fulfilmentv1.OrderState_ORDER_STATE_REJECTED: false,
		fulfilmentv1.OrderState_ORDER_STATE_CANCELLED: false, fulfilmentv1.OrderState_ORDER_STATE_EXPIRED: false,
	} {
		if got := confirmedOrLater(s); got != want {
			t.Errorf("confirmedOrLater(%v) = %v, want %v", s, got, want)
		}
	}
	// The cart asks for a retry with the same key after these: the order may exist.
	for code, want := range map[connect.Code]bool{
		connect.CodeUnavailable: true, connect.CodeDeadlineExceeded: true, connect.CodeAborted: true,
		connect.CodeInvalidArgument: false, connect.CodeFailedPrecondition: false, connect.CodeResourceExhausted: false,
	} {
		if got := retryCheckout(code); got != want {
			t.Errorf("retryCheckout(%v) = %v, want %v", code, got, want)
		}
	}
}

// A run measured nothing, and says why, when no checkout could be made at all, when no
// checkout placed an order, or when orders were confirmed but not one's ticket reached a
// terminal (orders/s is then 0 for want of the feed). Before, a run with no checkout at all
// and one whose tickets never came both counted as measured.
func TestARunMeasuredNothingWithoutCheckoutsOrdersOrTickets(t *testing.T) {
	for name, c := range map[string]struct {
		res  Result
		want string // in Unmeasured; "" for measured
	}{
		"no checkout at all":          {Result{Failed: 3, Errors: map[string]uint64{"CreateCart unavailable": 3}}, "no checkout could be made"},
		"no checkout placed an order": {Result{Checkouts: 4, Failed: 4}, "none of the 4 checkouts placed an order"},
		"no ticket reached a terminal": {Result{Checkouts: 4, Confirmed: 3, Rejected: 1},
			"3 orders were confirmed, but the ticket of none reached a terminal"},
		"orders with their tickets": {Result{Checkouts: 4, Confirmed: 3, Rejected: 1, OrdersWithTicket: 2}, ""},
		"every order rejected":      {Result{Checkouts: 4, Rejected: 4}, ""},
	} {
		got := c.res.Unmeasured()
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: Unmeasured() = %q, want %q", name, got, c.want)
		}
		if c.res.Measured() != (c.want == "") {
			t.Errorf("%s: Measured() = %v", name, c.res.Measured())
		}
	}
}

// A run of a duration that counted no error yet measured nothing had a window shorter than an
// order's way through the system (-duration 1ms): it says so and suggests a longer one. It
// blamed errors there were none of: "every order failed before it (see the errors)", or the
// ticket feed.
func TestARunWhoseWindowWasTooShortSaysSo(t *testing.T) {
	for name, c := range map[string]struct {
		res  Result
		want string
	}{
		"no checkout in the window":   {Result{WindowSeconds: 0.001}, "the 0.001s window ended before any checkout was made"},
		"no order placed in it":       {Result{WindowSeconds: 0.001, Checkouts: 2}, "none of the 2 checkouts had placed an order when the 0.001s window ended"},
		"no ticket within the window": {Result{WindowSeconds: 0.001, Checkouts: 2, Confirmed: 2, OrdersWithTicket: 2}, "the 0.001s window ended before the ticket of any reached a terminal (2 after it"},
	} {
		got := c.res.Unmeasured()
		if !strings.Contains(got, c.want) || !strings.Contains(got, "try a longer -duration") || strings.Contains(got, "see the errors") {
			t.Errorf("%s: Unmeasured() = %q, want %q, a longer -duration suggested and no word of errors", name, got, c.want)
		}
	}
	// With errors counted, or in a run of a number of orders (no window to lengthen), the
	// errors are still pointed at.
	for _, res := range []Result{
		{WindowSeconds: 0.001, Failed: 1, Errors: map[string]uint64{"CreateCart unavailable": 1}},
		{OrdersAsked: 2, WindowSeconds: 0.001},
	} {
		if got := res.Unmeasured(); !strings.Contains(got, "see the errors") {
			t.Errorf("%+v: Unmeasured() = %q, want the errors pointed at", res, got)
		}
	}
}
