package fulfilment

import (
	"testing"
	"time"
)

// A window whose reminder lead is left exactly at closing (made ready 50 minutes before a
// 17:00 closing with an hour's window and a 10-minute lead; or made ready before opening with
// a window a day's hours and the lead long) is reminded of when the store next opens, not at
// the instant it shuts: at 17:00 the shopper cannot collect, and 10 minutes of the window are
// left the next morning.
func TestAReminderDueAtClosingComesWhenTheStoreOpensAgain(t *testing.T) {
	london, daily := londonNineToFive(t)
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	store := storeInfo{hours: daily}
	for _, c := range []struct {
		name   string
		ready  time.Time
		window time.Duration
	}{
		{"made ready 50 minutes before closing, an hour's window", at(10, 16, 10), time.Hour},
		{"made ready before opening, a day's hours and the lead", at(10, 8, 30), 8*time.Hour + 10*time.Minute},
	} {
		deadline, warn := store.pickupTimes(c.ready, c.window, 10*time.Minute)
		if !daily.OpenAt(warn) {
			t.Errorf("%s: ready %s: the reminder at %s comes while the store is shut (the window ends %s)", c.name,
				c.ready.Format(time.DateTime), warn.In(london).Format(time.DateTime), deadline.In(london).Format(time.DateTime))
		}
	}
}

// A pickup window longer than the seven days a deadline may be ahead (a store's pickup_window
// may be up to seven days, which counted in its open hours runs past them) ends seven days
// on, and its shopper is still reminded before it ends: the reminder must not be cut to the
// deadline itself, where the expiry wins over it and it is never sent.
func TestALongWindowCutToSevenDaysStillHasItsReminder(t *testing.T) {
	london, daily := londonNineToFive(t)
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	store := storeInfo{hours: daily}
	ready := at(10, 10, 0)
	deadline, warn := store.pickupTimes(ready, 4*24*time.Hour, 10*time.Minute)
	if want := ready.Add(maxPickupAhead); !deadline.Equal(want) {
		t.Fatalf("deadline %s; want seven days on, %s", deadline.In(london).Format(time.DateTime), want.Format(time.DateTime))
	}
	if warn.IsZero() || !warn.Before(deadline) {
		t.Errorf("ready %s, a four-day window: deadline %s, reminder %s; want a reminder before the deadline (the expiry wins over one at it: never sent)",
			ready.Format(time.DateTime), deadline.In(london).Format(time.DateTime), warn.In(london).Format(time.DateTime))
	}
}
