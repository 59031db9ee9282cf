package fulfilment

import (
	"testing"
	"time"
)

// The other side of TestALongWindowCutToSevenDaysIsRemindedOfWhateverTheHourItWasMadeReady:
// an order made ready less than a lead after closing has its cut deadline (the same clock time
// seven days on) less than a lead after closing too. The lead before that deadline falls while
// the store is still open, so it is taken as the reminder, though the store shuts a few
// minutes later: the shopper is told the order expires soon with less than the lead of open
// time left to collect it. Every other reminder leaves the lead of open time before the
// deadline (pickupTimes: "when the window has that long left of the store's open time").
func TestALongWindowCutToSevenDaysJustAfterClosingIsRemindedALeadOfOpenTimeBefore(t *testing.T) {
	london, daily := londonNineToFive(t)
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	store := storeInfo{hours: daily}
	const lead = 10 * time.Minute
	for _, ready := range []time.Time{at(10, 17, 5), at(10, 17, 1), at(10, 17, 9)} {
		deadline, warn := store.pickupTimes(ready, 4*24*time.Hour, lead)
		if want := ready.Add(maxPickupAhead); !deadline.Equal(want) {
			t.Fatalf("ready %s: deadline %s; want seven days on", ready.Format(time.DateTime), deadline.In(london).Format(time.DateTime))
		}
		if warn.IsZero() || !daily.OpenAt(warn) || daily.AddOpen(warn, lead).After(deadline) {
			t.Errorf("ready %s, a four-day window: deadline %s, reminder %s; want one a lead (%s) of open time before the deadline, %s",
				ready.Format(time.DateTime), deadline.In(london).Format(time.DateTime), warn.In(london).Format(time.DateTime), lead,
				at(17, 16, 50).Format(time.DateTime))
		}
	}
}
