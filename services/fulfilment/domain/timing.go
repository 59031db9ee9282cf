package domain

import "time"

// ReadyBy estimates when an order confirmed at now will be ready:
//
//	ready_by = now + prep × (1 + min(ahead, queueCap))
//
// where prep is the store's typical preparation time and ahead the number of the store's
// orders still waiting or being prepared (CONFIRMED or PREPARING) when this one arrives. It
// assumes staff work through the queue one order at a time, which overestimates for a busy
// store with several baristas; the cap keeps a burst of orders from promising a time hours away
// (past queueCap orders the estimate says more about the queue than about this order).
//
// The time is the store's working time: openAfter(now, d) is when d of the store's open hours
// from now has passed (nil: plain time, the hours unknown), so an order queued up to closing is
// promised for after the store opens again, never for while it is shut.
func ReadyBy(now time.Time, prep time.Duration, ahead, queueCap int, openAfter func(from time.Time, d time.Duration) time.Time) time.Time {
	ahead = max(0, min(ahead, queueCap))
	d := prep * time.Duration(1+ahead)
	if openAfter == nil {
		return now.Add(d)
	}
	return openAfter(now, d)
}

// HoldDeadline is the deadline an open order's holds at inventory should have at now. For a
// READY order it is the end of its pickup window; for an order not ready yet, the end of the
// window it would get if it were ready by its estimate (or now, when it is late), and never
// before the end of the one its abandon time counts (abandonAt less AbandonGrace: a window
// counted in the store's open hours, see AbandonAt). Grace is added either way, so that
// fulfilment's own expiry always acts first and inventory's sweeper only ever catches holds
// that fulfilment has lost track of.
func HoldDeadline(s State, now, readyBy, pickupDeadline, abandonAt time.Time, window, grace time.Duration) time.Time {
	if s == Ready && !pickupDeadline.IsZero() {
		return pickupDeadline.Add(grace)
	}
	start := readyBy
	if start.Before(now) {
		start = now
	}
	end := start.Add(window)
	if !abandonAt.IsZero() {
		if e := abandonAt.Add(-AbandonGrace); e.After(end) {
			end = e
		}
	}
	return end.Add(grace)
}

// AbandonGrace is how long past the end of the pickup window it would have had an order may
// stay not ready before it expires.
const AbandonGrace = 15 * time.Minute

// AbandonAt is when a CONFIRMED or PREPARING order ready by readyBy (its estimate) expires if
// still not READY: the end of the pickup window it would have had, plus AbandonGrace. Its holds
// are kept extended while it is open; without this an order its store never finishes would
// hold its stock for ever. An order staff accepted after its estimate (accepted, else zero)
// counts from its acceptance instead: the estimate caps the queue it counts, so a busy store
// may start an order late, and one being prepared must not expire under staff's hands. Zero
// when there is no estimate.
//
// windowEnd(start, window) is when a pickup window opened at start ends: the store's, which
// counts its open hours only, so that an order due ready just before closing does not expire
// overnight while the store is shut. nil counts plain time (the store's hours unknown).
func AbandonAt(readyBy, accepted time.Time, window time.Duration, windowEnd func(start time.Time, window time.Duration) time.Time) time.Time {
	if readyBy.IsZero() {
		return time.Time{}
	}
	from := readyBy
	if accepted.After(from) {
		from = accepted
	}
	if windowEnd == nil {
		return from.Add(window + AbandonGrace)
	}
	return windowEnd(from, window).Add(AbandonGrace)
}

// Timers are the moments at which an open order needs the timer loop. A zero time is unset.
type Timers struct {
	// NotAcceptedAt: a CONFIRMED order still not accepted then is escalated (once).
	NotAcceptedAt time.Time
	// AbandonAt: a CONFIRMED or PREPARING order still not READY then expires (see AbandonAt).
	AbandonAt time.Time
	// ExpiringSoonAt: a READY order still waiting then is reminded of (once).
	ExpiringSoonAt time.Time
	// PickupDeadline: a READY order still waiting then expires.
	PickupDeadline time.Time
}

// Next returns the earliest timer that matters in state s, or zero when none does.
func (t Timers) Next(s State) time.Time {
	var next time.Time
	consider := func(at time.Time) {
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	switch s {
	case Confirmed:
		consider(t.NotAcceptedAt)
		consider(t.AbandonAt)
	case Preparing:
		consider(t.AbandonAt)
	case Ready:
		consider(t.ExpiringSoonAt)
		consider(t.PickupDeadline)
	}
	return next
}

// Due returns the timer action due at now for an order in state s, if any. Expiry wins over the
// reminder and the escalation: once the window is over there is nothing left to remind of.
func (t Timers) Due(s State, now time.Time) (Action, bool) {
	due := func(at time.Time) bool { return !at.IsZero() && !now.Before(at) }
	switch s {
	case Ready:
		if due(t.PickupDeadline) {
			return Expire, true
		}
		if due(t.ExpiringSoonAt) {
			return RemindExpiringSoon, true
		}
	case Confirmed:
		if due(t.AbandonAt) {
			return Expire, true
		}
		if due(t.NotAcceptedAt) {
			return EscalateNotAccepted, true
		}
	case Preparing:
		if due(t.AbandonAt) {
			return Expire, true
		}
	}
	return 0, false
}

// Fired clears the one-shot timer behind a, once a has been applied.
func (t *Timers) Fired(a Action) {
	switch a {
	case RemindExpiringSoon:
		t.ExpiringSoonAt = time.Time{}
	case EscalateNotAccepted, Accept:
		t.NotAcceptedAt = time.Time{}
	}
}

// OnReady sets the timers of an order that became READY: its pickup deadline, and its
// "expiring soon" reminder at remindAt (zero for none).
func (t *Timers) OnReady(deadline, remindAt time.Time) {
	t.PickupDeadline = deadline
	t.ExpiringSoonAt = remindAt
}
