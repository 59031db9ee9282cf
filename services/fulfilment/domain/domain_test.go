package domain_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// allowed is the transition table written out once more, by hand, from the issue: every
// (state, action) pair not listed here must be refused.
var allowed = map[domain.State]map[domain.Action]domain.State{
	domain.Pending: {
		domain.Confirm:        domain.Confirmed,
		domain.Reject:         domain.Rejected,
		domain.CustomerCancel: domain.Cancelled,
	},
	domain.Confirmed: {
		domain.Accept:              domain.Preparing,
		domain.MarkLineUnavailable: domain.Confirmed,
		domain.CustomerCancel:      domain.Cancelled,
		domain.StaffCancel:         domain.Cancelled,
		domain.CheckIn:             domain.Confirmed,
		domain.EscalateNotAccepted: domain.Confirmed,
		domain.LapseReservation:    domain.Cancelled,
		domain.Expire:              domain.Expired,
		domain.Reschedule:          domain.Confirmed,
	},
	domain.Preparing: {
		domain.MarkLineUnavailable: domain.Preparing,
		domain.MarkReady:           domain.Ready,
		domain.StaffCancel:         domain.Cancelled,
		domain.CheckIn:             domain.Preparing,
		domain.LapseReservation:    domain.Cancelled,
		domain.Expire:              domain.Expired,
		domain.Reschedule:          domain.Preparing,
	},
	domain.Ready: {
		domain.HandOver:           domain.Collected,
		domain.StaffCancel:        domain.Cancelled,
		domain.Expire:             domain.Expired,
		domain.CheckIn:            domain.Ready,
		domain.RemindExpiringSoon: domain.Ready,
		domain.LockPickup:         domain.Ready,
		domain.LapseReservation:   domain.Cancelled,
		domain.Reschedule:         domain.Ready,
	},
	// Final states allow nothing.
	domain.Collected: {},
	domain.Rejected:  {},
	domain.Cancelled: {},
	domain.Expired:   {},
}

func TestDecideFollowsTheTransitionTableForEveryStateAndAction(t *testing.T) {
	if len(allowed) != len(domain.States) {
		t.Fatalf("test table covers %d states, domain has %d", len(allowed), len(domain.States))
	}
	for _, from := range domain.States {
		for _, a := range domain.Actions {
			rule := domain.RuleOf(a)
			to, _, err := domain.Decide(from, a)
			want, ok := allowed[from][a]
			name := fmt.Sprintf("%s/%s", from, rule.Verb)
			switch {
			case ok && err != nil:
				t.Errorf("%s: refused (%v), want allowed → %s", name, err, want)
			case ok && to != want:
				t.Errorf("%s: → %s, want %s", name, to, want)
			case !ok && err == nil:
				t.Errorf("%s: allowed → %s, want refused", name, to)
			case !ok:
				var illegal *domain.IllegalTransition
				if !errors.As(err, &illegal) || illegal.From != from || illegal.Action != a {
					t.Errorf("%s: refusal %v is not an IllegalTransition for this pair", name, err)
				}
				if to != from {
					t.Errorf("%s: refused but returned state %s", name, to)
				}
				if !strings.Contains(err.Error(), from.String()) || !strings.Contains(err.Error(), rule.Verb) {
					t.Errorf("%s: message %q does not name the state and the action", name, err)
				}
			}
		}
	}
}

func TestEveryRuleHasAnEventAndReleasesOrCommitsWhenTheOrderEnds(t *testing.T) {
	for _, a := range domain.Actions {
		r := domain.RuleOf(a)
		if r.Event == "" || strings.ContainsAny(r.Event, ".*> ") {
			t.Errorf("%s: event %q is not a subject token", r.Verb, r.Event)
		}
		if r.To != 0 && r.Event != domain.StateName(r.To) {
			t.Errorf("%s: event %q, want the new state's name %q", r.Verb, r.Event, domain.StateName(r.To))
		}
		// Every way into a final state from a state that may hold stock must end the holds.
		if domain.Final(r.To) && r.Effect == domain.NoEffect {
			t.Errorf("%s: ends the order in %s but leaves its holds", r.Verb, r.To)
		}
		if r.Effect == domain.CommitAll && r.To != domain.Collected {
			t.Errorf("%s: commits holds without collecting the order", r.Verb)
		}
	}
}

func TestIllegalTransitionMessagesSayWhatIsAllowed(t *testing.T) {
	_, _, err := domain.Decide(domain.Ready, domain.Accept)
	if err == nil || !strings.Contains(err.Error(), "ORDER_STATE_CONFIRMED") {
		t.Fatalf("READY → accept: %v, want a refusal naming CONFIRMED", err)
	}
	_, _, err = domain.Decide(domain.Collected, domain.StaffCancel)
	if err == nil || !strings.Contains(err.Error(), "ORDER_STATE_COLLECTED") {
		t.Fatalf("COLLECTED → cancel: %v, want a refusal naming COLLECTED", err)
	}
	_, _, err = domain.Decide(domain.Preparing, domain.CustomerCancel)
	if err == nil || !strings.Contains(err.Error(), "ask the store") {
		t.Fatalf("PREPARING → customer cancel: %v, want the hint to ask the store", err)
	}
}

func TestPickupCodeIsSixDigitsStablePerOrderAndSecret(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	a := domain.PickupCode(secret, "order-a")
	if len(a) != domain.PickupCodeDigits || strings.Trim(a, "0123456789") != "" {
		t.Fatalf("code %q is not %d digits", a, domain.PickupCodeDigits)
	}
	if a != domain.PickupCode(secret, "order-a") {
		t.Fatal("the same order got two codes")
	}
	if a == domain.PickupCode([]byte("another secret, also long"), "order-a") {
		t.Fatal("another secret gave the same code")
	}
	seen := map[string]bool{}
	for i := range 1000 {
		seen[domain.PickupCode(secret, fmt.Sprint("order-", i))] = true
	}
	if len(seen) < 990 {
		t.Fatalf("1000 orders share %d codes: codes are not spread", len(seen))
	}
	if !domain.CheckPickupCode(secret, "order-a", a[:3]+" "+a[3:]) {
		t.Fatal("the right code with a space in it was refused")
	}
	if domain.CheckPickupCode(secret, "order-b", a) || domain.CheckPickupCode(secret, "order-a", "") {
		t.Fatal("a wrong code was accepted")
	}
}

func TestPickupAttemptsLockAfterTooManyWrongCodes(t *testing.T) {
	p := domain.PickupAttempts{MaxWrong: 3, Lockout: 5 * time.Minute}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	wrong, until := 0, time.Time{}
	var v domain.PickupVerdict
	for i := 1; i <= 2; i++ {
		v, wrong, until = p.Judge(now, wrong, until, false)
		if v != domain.CodeWrong || wrong != i {
			t.Fatalf("wrong code %d: verdict %d count %d", i, v, wrong)
		}
	}
	v, wrong, until = p.Judge(now, wrong, until, false)
	if v != domain.CodeWrongNowLocked || !until.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("third wrong code: verdict %d lock until %s, want locked for 5m", v, until)
	}
	if v, _, _ = p.Judge(now.Add(time.Minute), wrong, until, true); v != domain.HandOverLocked {
		t.Fatalf("right code during the lock: verdict %d, want locked", v)
	}
	if v, w, u := p.Judge(until, wrong, until, true); v != domain.CodeAccepted || w != 0 || !u.IsZero() {
		t.Fatalf("right code after the lock: verdict %d count %d lock %s", v, w, u)
	}
}

// Each lock after the first lasts twice as long as the one before, up to a day, so guessing
// through a week's pickup window tries few codes; a right code starts the count over.
func TestPickupLocksGrowWithEachRoundOfWrongCodes(t *testing.T) {
	p := domain.PickupAttempts{MaxWrong: 5, Lockout: 5 * time.Minute}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	start := now
	wrong, until := 0, time.Time{}
	var locks []time.Duration
	guesses := 0
	for now.Sub(start) < 7*24*time.Hour {
		v, w, u := p.Judge(now, wrong, until, false)
		switch v {
		case domain.HandOverLocked:
			now = u
			continue
		case domain.CodeWrongNowLocked:
			locks = append(locks, u.Sub(now))
		case domain.CodeWrong:
		default:
			t.Fatalf("a wrong code at %s: verdict %d", now, v)
		}
		guesses++
		wrong, until = w, u
	}
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 80 * time.Minute}
	for i, d := range want {
		if locks[i] != d {
			t.Fatalf("lock %d lasts %s; want %s (locks %v)", i+1, locks[i], d, locks)
		}
	}
	if last := locks[len(locks)-1]; last != domain.MaxPickupLockout {
		t.Fatalf("the last lock of a week lasts %s; want the cap, %s", last, domain.MaxPickupLockout)
	}
	if guesses > 80 {
		t.Fatalf("%d guesses fit in a week of locks; want at most 80 (of a million codes)", guesses)
	}
	// What is left before the next lock, and how long it will be, as the refusal tells staff.
	if l, d := p.Left(7), p.LockoutAt(10); l != 3 || d != 10*time.Minute {
		t.Fatalf("after 7 wrong codes: %d left, next lock %s; want 3 and 10m", l, d)
	}
	if v, w, u := p.Judge(now, wrong, time.Time{}, true); v != domain.CodeAccepted || w != 0 || !u.IsZero() {
		t.Fatalf("the right code after many locks: verdict %d count %d lock %s; want accepted, count over", v, w, u)
	}
}

func TestReadyByGrowsWithTheQueueUpToTheCap(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	prep := 6 * time.Minute
	cases := []struct {
		ahead int
		want  time.Duration
	}{{0, 6 * time.Minute}, {1, 12 * time.Minute}, {4, 30 * time.Minute}, {10, 36 * time.Minute}, {-1, 6 * time.Minute}}
	for _, c := range cases {
		if got := domain.ReadyBy(now, prep, c.ahead, 5, nil).Sub(now); got != c.want {
			t.Errorf("ahead %d: ready in %s, want %s", c.ahead, got, c.want)
		}
	}
}

func TestHoldDeadlineCoversThePickupWindowWithGrace(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	window, grace := time.Hour, 15*time.Minute
	readyBy := now.Add(10 * time.Minute)
	abandonAt := domain.AbandonAt(readyBy, time.Time{}, window, nil)
	if got := domain.HoldDeadline(domain.Confirmed, now, readyBy, time.Time{}, abandonAt, window, grace); !got.Equal(readyBy.Add(75 * time.Minute)) {
		t.Errorf("confirmed: %s, want ready-by + window + grace", got)
	}
	late := now.Add(time.Hour)
	if got := domain.HoldDeadline(domain.Preparing, late, readyBy, time.Time{}, abandonAt, window, grace); !got.Equal(late.Add(75 * time.Minute)) {
		t.Errorf("late order: %s, want now + window + grace", got)
	}
	deadline := now.Add(30 * time.Minute)
	if got := domain.HoldDeadline(domain.Ready, now, readyBy, deadline, abandonAt, window, grace); !got.Equal(deadline.Add(grace)) {
		t.Errorf("ready: %s, want pickup deadline + grace", got)
	}
	// A window counted in the store's open hours (ready-by just before closing, the rest of the
	// hour the next morning): the holds last until its end + grace, past the abandon time.
	overnight := domain.AbandonAt(readyBy, time.Time{}, window, func(start time.Time, w time.Duration) time.Time {
		return start.Add(w + 20*time.Hour)
	})
	for _, at := range []time.Time{now, late} {
		got := domain.HoldDeadline(domain.Preparing, at, readyBy, time.Time{}, overnight, window, grace)
		if want := overnight.Add(-domain.AbandonGrace + grace); !got.Equal(want) || got.Before(overnight) {
			t.Errorf("window overnight, at %s: %s, want its end + grace, %s", at.Format(time.TimeOnly), got, want)
		}
	}
}

func TestTimersFireInStateAndOnce(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var tm domain.Timers
	tm.NotAcceptedAt = now.Add(5 * time.Minute)
	if _, ok := tm.Due(domain.Confirmed, now); ok {
		t.Fatal("escalation due before its time")
	}
	if a, ok := tm.Due(domain.Confirmed, now.Add(5*time.Minute)); !ok || a != domain.EscalateNotAccepted {
		t.Fatalf("escalation not due at its time: %v %v", a, ok)
	}
	if _, ok := tm.Due(domain.Preparing, now.Add(time.Hour)); ok {
		t.Fatal("escalation due for an accepted order")
	}
	tm.Fired(domain.EscalateNotAccepted)
	if !tm.Next(domain.Confirmed).IsZero() {
		t.Fatal("escalation still scheduled after it fired")
	}

	tm.OnReady(now.Add(time.Hour), now.Add(50*time.Minute))
	if !tm.Next(domain.Ready).Equal(now.Add(50 * time.Minute)) {
		t.Fatalf("next timer of a ready order %s, want the reminder at 50m", tm.Next(domain.Ready))
	}
	if a, _ := tm.Due(domain.Ready, now.Add(50*time.Minute)); a != domain.RemindExpiringSoon {
		t.Fatalf("at 50m: %v, want the reminder", a)
	}
	tm.Fired(domain.RemindExpiringSoon)
	if !tm.Next(domain.Ready).Equal(now.Add(time.Hour)) {
		t.Fatal("after the reminder the next timer is not the deadline")
	}
	if a, _ := tm.Due(domain.Ready, now.Add(2*time.Hour)); a != domain.Expire {
		t.Fatalf("past the deadline: %v, want expiry", a)
	}
}

// An order never made ready expires at the end of the pickup window it would have had, plus
// the grace: confirmed or being prepared alike, whatever else is scheduled.
func TestAnOrderNeverMadeReadyExpires(t *testing.T) {
	readyBy := time.Date(2026, 1, 1, 12, 10, 0, 0, time.UTC)
	at := domain.AbandonAt(readyBy, time.Time{}, time.Hour, nil)
	if want := readyBy.Add(time.Hour + domain.AbandonGrace); !at.Equal(want) {
		t.Fatalf("AbandonAt = %s, want %s", at, want)
	}
	// Accepted before its estimate: the estimate rules. Accepted after it (a queue longer than
	// the estimate counts): the time to be made ready runs from the acceptance.
	if got := domain.AbandonAt(readyBy, readyBy.Add(-time.Minute), time.Hour, nil); !got.Equal(at) {
		t.Fatalf("accepted early: AbandonAt = %s, want %s", got, at)
	}
	late := readyBy.Add(3 * time.Hour)
	if got, want := domain.AbandonAt(readyBy, late, time.Hour, nil), late.Add(time.Hour+domain.AbandonGrace); !got.Equal(want) {
		t.Fatalf("accepted late: AbandonAt = %s, want %s", got, want)
	}
	// The store's window (its open hours, here a night shut in the middle) from the same start.
	overnight := func(start time.Time, w time.Duration) time.Time { return start.Add(w + 16*time.Hour) }
	if got, want := domain.AbandonAt(readyBy, late, time.Hour, overnight), late.Add(17*time.Hour+domain.AbandonGrace); !got.Equal(want) {
		t.Fatalf("accepted late, the window overnight: AbandonAt = %s, want %s", got, want)
	}
	if !domain.AbandonAt(time.Time{}, time.Time{}, time.Hour, nil).IsZero() {
		t.Fatal("an order without an estimate got an abandon time")
	}
	tm := domain.Timers{NotAcceptedAt: readyBy, AbandonAt: at}
	if got := tm.Next(domain.Preparing); !got.Equal(at) {
		t.Fatalf("next timer of a preparing order %s, want %s", got, at)
	}
	if _, ok := tm.Due(domain.Preparing, at.Add(-time.Second)); ok {
		t.Fatal("due before its time")
	}
	for _, s := range []domain.State{domain.Confirmed, domain.Preparing} {
		if a, ok := tm.Due(s, at); !ok || a != domain.Expire {
			t.Errorf("%s at the abandon time: %v %v, want expiry", s, a, ok)
		}
	}
	if got := tm.Next(domain.Ready); !got.IsZero() {
		t.Fatalf("a ready order keeps the abandon time %s; its pickup deadline rules", got)
	}
}
