package notify

import (
	"sync"
	"time"
)

// zones keeps loaded time zones by name: time.LoadLocation reads and parses zone data on every
// call.
var zones sync.Map

// StoreLocation is the time zone named by an order's store_time_zone, or fallback where there
// is none (an order not at a store yet, or one kept from before orders had it) or it does not
// load. Times a shopper reads (ready by, collect by) are given on the store's clock: that is
// where the shopper will be.
func StoreLocation(zone string, fallback *time.Location) *time.Location {
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
