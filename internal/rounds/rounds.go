// Package rounds decides when a polling worker (a dispatcher claiming due rows, say) starts
// its next round. Every reason for a round is a time from which it is wanted — a wake-up, the
// earliest pending row, a retry, a safety poll — and a round that starts at or after that time
// satisfies it; rounds are at least Gap apart, and a failed round backs off.
package rounds

import (
	"sync"
	"time"
)

// LastWrite bounds a round's last write once its worker is told to stop: the round's outcomes
// are recorded even then, so work done is not done again, but within the time a stop gives the
// outbox relays' last flush (stack.MaxShutdown counts that, not more).
const LastWrite = 3 * time.Second

// Schedule is one worker's schedule. The zero value with Gap set is ready; set Kick to start
// with a round.
type Schedule struct {
	Gap  time.Duration // least time between round starts
	Kick time.Time     // wanted now: a wake-up, or a slot freed while due rows waited
	Poll time.Time     // look anyway (a safety net for lost wake-ups)
	// More: the last round filled every free slot, so a freed slot wants another.
	More bool

	last        time.Time // start of the last successful round
	failedUntil time.Time // backoff after a failed round
	backoff     time.Duration
	due         time.Time // the earliest pending row, as the last round saw it
	retry       time.Time // the earliest retry recorded here since
}

// Next returns when the next round should start, and whether one is wanted at all; extra are
// further times from which one is wanted.
func (s *Schedule) Next(extra ...time.Time) (time.Time, bool) {
	var at time.Time
	want := func(t time.Time) {
		if !t.IsZero() && t.After(s.last) && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	for _, t := range extra {
		want(t)
	}
	want(s.Kick)
	want(s.due)
	want(s.Poll)
	want(s.retry)
	if at.IsZero() {
		return at, false
	}
	return later(at, s.last.Add(s.Gap), s.failedUntil), true
}

// Done records a successful round that started at start and answered at end. pending says
// rows are still waiting, the earliest due nextDue after end.
func (s *Schedule) Done(start, end time.Time, pending bool, nextDue time.Duration, full bool) {
	s.last, s.More, s.due, s.backoff = start, full, time.Time{}, 0
	if pending {
		// Not after start: a row that is due already (nextDue ≤ 0) was locked by another
		// worker's claim, and the next round looks once more.
		s.due = later(end.Add(nextDue), start.Add(time.Nanosecond))
	}
}

// Failed records a failed round and returns how long the next waits: doubling from 100ms up
// to 10s until a round succeeds.
func (s *Schedule) Failed(now time.Time) time.Duration {
	s.backoff = min(max(2*s.backoff, 100*time.Millisecond), 10*time.Second)
	s.failedUntil = now.Add(s.backoff)
	return s.backoff
}

// FreedSlot records that a slot came free: a round is wanted now if the last one left due rows
// for want of slots.
func (s *Schedule) FreedSlot(now time.Time) {
	if s.More {
		s.More, s.Kick = false, now
	}
}

// RetryAt adds a retry recorded here (zero: none).
func (s *Schedule) RetryAt(t time.Time) {
	if !t.IsZero() && (!s.retry.After(s.last) || t.Before(s.retry)) {
		s.retry = t
	}
}

func later(t time.Time, others ...time.Time) time.Time {
	for _, o := range others {
		if o.After(t) {
			t = o
		}
	}
	return t
}

// Retries carries retry times from the goroutine that records outcomes to the worker's loop:
// Note keeps the earliest and wakes the loop, which waits on C and passes Take to
// Schedule.RetryAt. The zero value is not ready; use NewRetries.
type Retries struct {
	c        chan struct{}
	mu       sync.Mutex
	earliest time.Time // earliest retry noted and not yet taken
}

// NewRetries returns an empty Retries.
func NewRetries() *Retries { return &Retries{c: make(chan struct{}, 1)} }

// Note records a retry wanted from t and wakes the loop without blocking.
func (r *Retries) Note(t time.Time) {
	r.mu.Lock()
	if r.earliest.IsZero() || t.Before(r.earliest) {
		r.earliest = t
	}
	r.mu.Unlock()
	select {
	case r.c <- struct{}{}:
	default: // one pending wake is enough
	}
}

// C is ready when a retry was noted since the last Take.
func (r *Retries) C() <-chan struct{} { return r.c }

// Take returns the earliest retry noted since the last Take (zero: none).
func (r *Retries) Take() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.earliest
	r.earliest = time.Time{}
	return t
}
