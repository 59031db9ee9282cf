package fulfilment

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// londonNineToFive is London and a store there open 09:00–17:00 every day.
func londonNineToFive(t *testing.T) (*time.Location, *hours.Schedule) {
	t.Helper()
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	var weekly []hours.Weekly
	for d := 1; d <= 7; d++ {
		weekly = append(weekly, hours.Weekly{Weekday: d, Open: "09:00", Close: "17:00"})
	}
	daily, err := hours.Build(london, weekly, nil)
	if err != nil {
		t.Fatal(err)
	}
	return london, daily
}

// A pickup window and its reminder count the store's open hours: the reminder comes when the
// window has its lead left of open time, so never while the store is shut; a window no longer
// than the lead has none; a store shut for weeks lets the window end seven days on; a store
// without hours counts plain time.
func TestPickupTimesCountTheStoresOpenHours(t *testing.T) {
	london, daily := londonNineToFive(t)
	faraway, err := hours.Build(london, nil, []hours.Exception{{Date: "2026-03-30", Open: "09:00", Close: "17:00"}})
	if err != nil {
		t.Fatal(err)
	}
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	for _, c := range []struct {
		name           string
		store          storeInfo
		ready          time.Time
		window         time.Duration
		deadline, warn time.Time
	}{
		{"reminder before closing", storeInfo{hours: daily}, at(10, 16, 5), time.Hour, at(11, 9, 5), at(10, 16, 55)},
		{"reminder after opening", storeInfo{hours: daily}, at(10, 16, 45), time.Hour, at(11, 9, 45), at(11, 9, 35)},
		{"a window shorter than the lead", storeInfo{hours: daily}, at(10, 16, 55), 8 * time.Minute, at(11, 9, 3), time.Time{}},
		{"shut for weeks", storeInfo{hours: faraway}, at(10, 16, 5), time.Hour, at(17, 16, 5), at(17, 16, 5)},
		{"no hours", storeInfo{}, at(10, 16, 5), time.Hour, at(10, 17, 5), at(10, 16, 55)},
	} {
		deadline, warn := c.store.pickupTimes(c.ready, c.window, 10*time.Minute)
		if !deadline.Equal(c.deadline) || !warn.Equal(c.warn) {
			t.Errorf("%s: ready %s, window %v: deadline %s, reminder %s; want %s, %s", c.name, c.ready.Format(time.DateTime), c.window,
				deadline.In(london).Format(time.DateTime), warn.In(london).Format(time.DateTime), c.deadline.Format(time.DateTime), c.warn.Format(time.DateTime))
		}
		if c.store.hours != nil && c.store.hours != faraway && !warn.IsZero() && !c.store.hours.OpenAt(warn) {
			t.Errorf("%s: the reminder at %s comes while the store is shut", c.name, warn.In(london).Format(time.DateTime))
		}
	}
}

// An order not made ready has the pickup window it would have had counted the same way: one
// due ready 5 minutes before closing expires 15 minutes after the rest of its hour the next
// morning, not overnight; a store without hours counts plain time.
func TestAbandonTimeCountsTheStoresOpenHours(t *testing.T) {
	london, daily := londonNineToFive(t)
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 3, day, hour, minute, 0, 0, london) }
	for _, c := range []struct {
		name              string
		store             storeInfo
		readyBy, accepted time.Time
		want              time.Time
	}{
		{"due ready before closing", storeInfo{hours: daily}, at(10, 16, 55), time.Time{}, at(11, 10, 10)},
		{"accepted late, after closing", storeInfo{hours: daily}, at(10, 16, 55), at(10, 17, 30), at(11, 10, 15)},
		{"no hours", storeInfo{}, at(10, 16, 55), time.Time{}, at(10, 18, 10)},
	} {
		if got := domain.AbandonAt(c.readyBy, c.accepted, time.Hour, c.store.pickupDeadline); !got.Equal(c.want) {
			t.Errorf("%s: abandon time %s, want %s", c.name, got.In(london).Format(time.DateTime), c.want.Format(time.DateTime))
		}
	}
}
