package fulfilment

import (
	"testing"
	"time"
)

// f712be4 keeps the reminder of a window cut to seven days only when the store is open the
// lead before the (cut) deadline. Seven days on from when the order was made ready is the
// same clock time, so an order made ready in the store's first minutes (or before it opens,
// or after it shuts: staff prepare orders then too) has its deadline in, or just after, the
// shut hours, and the lead before it falls while the store is shut: no reminder at all, though
// the store was open for a whole day before the deadline. The shopper should be reminded in
// the last lead of open time before the window ends.
func TestALongWindowCutToSevenDaysIsRemindedOfWhateverTheHourItWasMadeReady(t *testing.T) {
	london, daily := londonNineToFive(t)
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	store := storeInfo{hours: daily}
	for _, ready := range []time.Time{at(10, 9, 5), at(10, 8, 30), at(10, 17, 30)} {
		deadline, warn := store.pickupTimes(ready, 4*24*time.Hour, 10*time.Minute)
		if want := ready.Add(maxPickupAhead); !deadline.Equal(want) {
			t.Fatalf("ready %s: deadline %s; want seven days on", ready.Format(time.DateTime), deadline.In(london).Format(time.DateTime))
		}
		if warn.IsZero() || !warn.Before(deadline) || !daily.OpenAt(warn) {
			t.Errorf("ready %s, a four-day window: deadline %s, reminder %s; want one while the store is open before the deadline (the expiry wins over one at or after it: never sent)",
				ready.Format(time.DateTime), deadline.In(london).Format(time.DateTime), warn.In(london).Format(time.DateTime))
		}
	}
}
