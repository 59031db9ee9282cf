// Package domain holds the rules of an order's life, with no I/O: which action may happen in
// which state and where it leads (the transition table), what each transition tells the world
// (event, notification) and asks of inventory (release, commit), the pickup code, the ready-by
// estimate and the order's timers. The fulfilment service applies these rules inside its
// transactions; everything here is a pure function of its arguments.
package domain

import (
	"fmt"
	"slices"
	"strings"

	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// State is where an order is; the API's enum, so no translation is needed at the ports.
type State = fulfilmentv1.OrderState

// The states, for short.
const (
	Pending   = fulfilmentv1.OrderState_ORDER_STATE_PENDING
	Confirmed = fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED
	Preparing = fulfilmentv1.OrderState_ORDER_STATE_PREPARING
	Ready     = fulfilmentv1.OrderState_ORDER_STATE_READY
	Collected = fulfilmentv1.OrderState_ORDER_STATE_COLLECTED
	Rejected  = fulfilmentv1.OrderState_ORDER_STATE_REJECTED
	Cancelled = fulfilmentv1.OrderState_ORDER_STATE_CANCELLED
	Expired   = fulfilmentv1.OrderState_ORDER_STATE_EXPIRED
)

// States lists every state an order can be in.
var States = []State{Pending, Confirmed, Preparing, Ready, Collected, Rejected, Cancelled, Expired}

// Final reports whether nothing can happen to an order in s any more.
func Final(s State) bool {
	return s == Collected || s == Rejected || s == Cancelled || s == Expired
}

// Open reports whether an order in s holds stock at a store (and so is on the store's board).
func Open(s State) bool { return s == Confirmed || s == Preparing || s == Ready }

// StateName is the lower-case name of s, as used in event subjects: "confirmed".
func StateName(s State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "ORDER_STATE_"))
}

// Action is something that happens to an order. Who may trigger it is checked at the ports;
// the table below says only when it may happen and what follows.
type Action int

// Actions.
const (
	// Confirm: inventory held every line (system, saga).
	Confirm Action = iota + 1
	// Reject: no store could fill the order, or it could not be reserved in time (system).
	Reject
	// Accept: staff start preparing.
	Accept
	// MarkLineUnavailable: staff drop one line.
	MarkLineUnavailable
	// MarkReady: staff finished; the pickup window starts.
	MarkReady
	// HandOver: staff handed it over against the pickup code.
	HandOver
	// CustomerCancel: the shopper cancels, before preparation starts.
	CustomerCancel
	// StaffCancel: staff cancel, any time before collection.
	StaffCancel
	// Expire: a READY order was not collected within the pickup window, or one not ready was
	// never made ready (timer; see AbandonAt).
	Expire
	// CheckIn: the shopper has arrived.
	CheckIn
	// RemindExpiringSoon: the pickup window ends soon (timer, once).
	RemindExpiringSoon
	// EscalateNotAccepted: still CONFIRMED a while after confirmation (timer, once).
	EscalateNotAccepted
	// LockPickup: too many wrong pickup codes; hand-over is locked for a while.
	LockPickup
	// LapseReservation: inventory no longer holds the order's stock (its holds ended while
	// inventory could not be reached to extend them); the order is cancelled rather than
	// promising units that may already be promised to someone else (system).
	LapseReservation
	// Reschedule: the store's opening hours changed, and the order's deadlines, counted in
	// them, move later (system; never earlier: the shopper keeps the time they were given).
	Reschedule
)

// Actions lists every action, for exhaustive tests and documentation.
var Actions = []Action{Confirm, Reject, Accept, MarkLineUnavailable, MarkReady, HandOver,
	CustomerCancel, StaffCancel, Expire, CheckIn, RemindExpiringSoon, EscalateNotAccepted, LockPickup, LapseReservation, Reschedule}

// Effect is what inventory must do once a transition has committed. Effects are recorded in
// the transition's transaction and carried out (retried until done) afterwards.
type Effect int

// Effects.
const (
	// NoEffect: the holds stay as they are.
	NoEffect Effect = iota
	// ReleaseAll gives back every open hold of the order.
	ReleaseAll
	// ReleaseLine gives back the hold of one line.
	ReleaseLine
	// CommitAll turns the order's open holds into a sale.
	CommitAll
	// ExtendHolds moves the deadline of the order's open holds (no transition asks for it: the
	// service keeps an open order's holds alive, see HoldDeadline).
	ExtendHolds
)

// Rule is one row of the transition table.
type Rule struct {
	// Verb names the action in refusals: "accept the order".
	Verb string
	// From lists the states the action is allowed in.
	From []State
	// To is the state after; zero means the state does not change.
	To State
	// Event is the last token of the event subject, handoff.fulfilment.order.<Event>.
	Event string
	// Notify is the customer notification kind, or "" for none.
	Notify string
	// Effect is what inventory must do afterwards.
	Effect Effect
	// Hint is added to a refusal to say what would work instead.
	Hint string
}

// table is the transition table: for each action, the states it may happen in and what follows.
// Anything not listed is refused.
var table = map[Action]Rule{
	Confirm: {Verb: "confirm the order", From: []State{Pending}, To: Confirmed,
		Event: "confirmed", Notify: "order.confirmed"},
	Reject: {Verb: "reject the order", From: []State{Pending}, To: Rejected,
		Event: "rejected", Notify: "order.rejected", Effect: ReleaseAll},
	Accept: {Verb: "accept the order", From: []State{Confirmed}, To: Preparing,
		Event: "preparing", Notify: "order.preparing"},
	MarkLineUnavailable: {Verb: "mark a line unavailable", From: []State{Confirmed, Preparing},
		Event: "line_unavailable", Notify: "order.line_unavailable", Effect: ReleaseLine,
		Hint: "lines can be dropped only before the order is ready"},
	MarkReady: {Verb: "mark the order ready", From: []State{Preparing}, To: Ready,
		Event: "ready", Notify: "order.ready", Hint: "accept it first"},
	HandOver: {Verb: "hand the order over", From: []State{Ready}, To: Collected,
		Event: "collected", Notify: "order.collected", Effect: CommitAll, Hint: "mark it ready first"},
	CustomerCancel: {Verb: "cancel the order", From: []State{Pending, Confirmed}, To: Cancelled,
		Event: "cancelled", Notify: "order.cancelled", Effect: ReleaseAll,
		Hint: "the store has started preparing it; ask the store"},
	StaffCancel: {Verb: "cancel the order", From: []State{Confirmed, Preparing, Ready}, To: Cancelled,
		Event: "cancelled", Notify: "order.cancelled", Effect: ReleaseAll},
	Expire: {Verb: "expire the order", From: []State{Confirmed, Preparing, Ready}, To: Expired,
		Event: "expired", Notify: "order.expired", Effect: ReleaseAll},
	CheckIn: {Verb: "check in", From: []State{Confirmed, Preparing, Ready},
		Event: "checked_in"},
	RemindExpiringSoon: {Verb: "remind of the pickup deadline", From: []State{Ready},
		Event: "expiring_soon", Notify: "order.expiring_soon"},
	EscalateNotAccepted: {Verb: "escalate an order not accepted", From: []State{Confirmed},
		Event: "not_accepted"},
	LockPickup: {Verb: "lock hand-over", From: []State{Ready},
		Event: "pickup_locked"},
	LapseReservation: {Verb: "cancel the order for a lapsed reservation", From: []State{Confirmed, Preparing, Ready},
		To: Cancelled, Event: "cancelled", Notify: "order.cancelled", Effect: ReleaseAll},
	Reschedule: {Verb: "move the order's deadlines", From: []State{Confirmed, Preparing, Ready},
		Event: "rescheduled"},
}

// RuleOf returns the table row of a. Every Action has one.
func RuleOf(a Action) Rule {
	r, ok := table[a]
	if !ok {
		panic(fmt.Sprintf("domain: action %d has no rule", a))
	}
	return r
}

// IllegalTransition refuses an action in a state the table does not allow it in.
type IllegalTransition struct {
	From   State
	Action Action
}

func (e *IllegalTransition) Error() string {
	r := RuleOf(e.Action)
	allowed := make([]string, len(r.From))
	for i, s := range r.From {
		allowed[i] = s.String()
	}
	msg := fmt.Sprintf("cannot %s: the order is %s; allowed only when %s", r.Verb, e.From, strings.Join(allowed, " or "))
	if r.Hint != "" && !Final(e.From) {
		msg += " (" + r.Hint + ")"
	}
	return msg
}

// Decide says whether a may happen to an order in from, and the state after it (from itself
// for actions that keep the state). The refusal is an *IllegalTransition.
func Decide(from State, a Action) (State, Rule, error) {
	r := RuleOf(a)
	if !slices.Contains(r.From, from) {
		return from, r, &IllegalTransition{From: from, Action: a}
	}
	if r.To == 0 {
		return from, r, nil
	}
	return r.To, r, nil
}
