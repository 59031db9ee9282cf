package rounds_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/rounds"
)

func TestRoundsAreWantedFromTheEarliestReasonAndKeepTheirGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := rounds.Schedule{Gap: 10 * time.Millisecond, Kick: t0}
	if at, ok := s.Next(); !ok || !at.Equal(t0) {
		t.Fatalf("first round at %v, %v; want at the kick", at, ok)
	}
	s.Done(t0, t0.Add(time.Millisecond), false, 0, false)
	if _, ok := s.Next(); ok {
		t.Fatal("a round is wanted with no reason left")
	}
	s.Kick = t0.Add(2 * time.Millisecond)
	if at, _ := s.Next(); !at.Equal(t0.Add(10 * time.Millisecond)) {
		t.Fatalf("kicked round at %v; want one gap after the last start", at)
	}
	s.Done(t0.Add(10*time.Millisecond), t0.Add(11*time.Millisecond), true, time.Second, false)
	if at, _ := s.Next(); !at.Equal(t0.Add(11*time.Millisecond + time.Second)) {
		t.Fatalf("round for the next due row at %v; want when it falls due", at)
	}
	s.RetryAt(t0.Add(500 * time.Millisecond))
	if at, _ := s.Next(); !at.Equal(t0.Add(500 * time.Millisecond)) {
		t.Fatalf("round for a retry at %v; want at the retry", at)
	}
}

func TestAFailedRoundBacksOffAndASuccessResetsIt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := rounds.Schedule{Kick: t0}
	if d := s.Failed(t0); d != 100*time.Millisecond {
		t.Fatalf("first backoff %v, want 100ms", d)
	}
	if d := s.Failed(t0); d != 200*time.Millisecond {
		t.Fatalf("second backoff %v, want 200ms", d)
	}
	if at, _ := s.Next(); !at.Equal(t0.Add(200 * time.Millisecond)) {
		t.Fatalf("round after failures at %v; want after the backoff", at)
	}
	s.Done(t0, t0, false, 0, false)
	if d := s.Failed(t0); d != 100*time.Millisecond {
		t.Fatalf("backoff after a success %v, want 100ms again", d)
	}
}

func TestAFreedSlotWantsARoundOnlyWhenTheLastFilledThemAll(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := rounds.Schedule{}
	s.Done(t0, t0, false, 0, false)
	s.FreedSlot(t0.Add(time.Second))
	if _, ok := s.Next(); ok {
		t.Fatal("a freed slot wanted a round though the last one did not fill every slot")
	}
	s.Done(t0, t0, false, 0, true)
	s.FreedSlot(t0.Add(time.Second))
	if at, ok := s.Next(); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("round after a freed slot at %v, %v; want at once", at, ok)
	}
}

// Retries keeps the earliest of the times noted before a Take, wakes the loop once however
// many were noted, and starts empty again after Take.
func TestRetriesKeepEarliest(t *testing.T) {
	r := rounds.NewRetries()
	if got := r.Take(); !got.IsZero() {
		t.Fatalf("Take on empty = %v, want zero", got)
	}
	base := time.Unix(1_800_000_000, 0)
	r.Note(base.Add(3 * time.Second))
	r.Note(base.Add(time.Second))
	r.Note(base.Add(2 * time.Second))
	select {
	case <-r.C():
	default:
		t.Fatal("Note did not wake the loop")
	}
	select {
	case <-r.C():
		t.Fatal("three notes woke the loop twice; one pending wake is enough")
	default:
	}
	if got := r.Take(); !got.Equal(base.Add(time.Second)) {
		t.Fatalf("Take = %v, want the earliest, %v", got, base.Add(time.Second))
	}
	if got := r.Take(); !got.IsZero() {
		t.Fatalf("second Take = %v, want zero", got)
	}
}
