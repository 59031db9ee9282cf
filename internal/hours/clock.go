package hours

import (
	"sync"
	"time"
)

// zones keeps loaded time zones by name: time.LoadLocation reads and parses zone data on every
// call.
var zones sync.Map

// Location is the time zone named by an order's store_time_zone, or fallback where there is
// none (an order not at a store yet, or one kept from before orders had it) or it does not
// load. Times a shopper or staff read (ready by, collect by) are given on the store's clock:
// that is where they are.
func Location(zone string, fallback *time.Location) *time.Location {
	if zone == "" || zone == "Local" { // "Local" is this server's zone, not the store's
		return fallback
	}
	if l, ok := zones.Load(zone); ok {
		return l.(*time.Location)
	}
	l, err := time.LoadLocation(zone)
	if err != nil {
		return fallback
	}
	zones.Store(zone, l)
	return l
}

// ClockText gives t on loc's clock as "15:04 MST", with the day ("Mon 2 Jan 15:04 MST") when
// it is not now's day there: a window counting open hours only may end the next day.
func ClockText(t time.Time, loc *time.Location, now time.Time) string {
	t = t.In(loc)
	if y, m, d := now.In(loc).Date(); t.Year() != y || t.Month() != m || t.Day() != d {
		return t.Format("Mon 2 Jan 15:04 MST")
	}
	return t.Format("15:04 MST")
}
