package inventory

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// hoursJSON is one weekly opening as stored in stores.opening_hours.
type hoursJSON struct {
	Weekday int    `json:"weekday"` // ISO: 1 = Monday … 7 = Sunday
	Open    string `json:"open"`
	Close   string `json:"close"`
}

// exceptionJSON is one dated override as stored in stores.hours_exceptions.
type exceptionJSON struct {
	Date   string `json:"date"`
	Closed bool   `json:"closed,omitempty"`
	Open   string `json:"open,omitempty"`
	Close  string `json:"close,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// buildSchedule turns stored hours into a schedule. The inputs were validated when written;
// an error here means the row was changed behind the service's back.
func buildSchedule(loc *time.Location, weekly []hoursJSON, exceptions []exceptionJSON) (*hours.Schedule, error) {
	w := make([]hours.Weekly, len(weekly))
	for i, h := range weekly {
		w[i] = hours.Weekly{Weekday: h.Weekday, Open: h.Open, Close: h.Close}
	}
	ex := make([]hours.Exception, len(exceptions))
	for i, e := range exceptions {
		ex[i] = hours.Exception{Date: e.Date, Closed: e.Closed, Open: e.Open, Close: e.Close}
	}
	return hours.Build(loc, w, ex)
}

// zoneCache keeps loaded time zones: time.LoadLocation reads and parses zone data on every
// call, far too slow for a locator that checks dozens of stores per query.
type zoneCache struct{ m sync.Map }

func (z *zoneCache) load(name string) (*time.Location, error) {
	if l, ok := z.m.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := loadZone(name)
	if err != nil {
		return nil, err
	}
	z.m.Store(name, l)
	return l, nil
}

// loadZone accepts IANA zone names only: not "" or "Local", which mean the server's zone.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("%q is not an IANA time zone", rpcerr.Echo(name))
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IANA time zone", rpcerr.Echo(name))
	}
	return l, nil
}

// checkZone is loadZone for a store being written, refusing too the other names a host's
// zoneinfo directory holds beside the IANA zones: "localtime" (the server's zone again),
// "posixrules", "Factory", and the posix/ and right/ copies. A store in one of those would be
// read in whatever zone its server runs in, or, in a container whose only zone data is the
// binary's own copy, in none. (Stores already written are read as they are.)
func checkZone(name string) error {
	if name == "localtime" || name == "posixrules" || name == "Factory" || strings.HasPrefix(name, "posix/") || strings.HasPrefix(name, "right/") {
		return fmt.Errorf("%q is not an IANA time zone", rpcerr.Echo(name))
	}
	_, err := loadZone(name)
	return err
}

// storeStatus is a store's open status at now, in its own zone (from the shared, memoised
// schedule of its cache entry).
func (s *Service) storeStatus(e *storeEntry, now time.Time) (hours.Status, error) {
	st, err := e.hours.statusAt(&s.zones, now)
	if err != nil {
		return hours.Status{}, fmt.Errorf("store %s: %w", e.row.id, err)
	}
	return st, nil
}

// accepting reports whether a store with status st at now takes orders: open, not paused or
// closed, and not past its last orders (lastOrdersPassed).
func (e *storeEntry) accepting(st hours.Status, now time.Time) bool {
	return st.Open && e.row.state == stateOpen && !e.lastOrdersPassed(st, now)
}

// lastOrdersPassed reports whether an open store closes within its prep time from now: an
// order taken now could not be ready before it closes, nor collected, and would expire
// overnight. Its last orders are a prep time before closing (an order behind a queue may
// still be ready a little later: fulfilment's estimate counts the queue).
func (e *storeEntry) lastOrdersPassed(st hours.Status, now time.Time) bool {
	return st.Open && !st.Closes.IsZero() && now.Add(time.Duration(e.row.prepSec)*time.Second).After(st.Closes)
}

// openStatusProto is the API form of a store's status at now.
func (e *storeEntry) openStatusProto(st hours.Status, now time.Time) *inventoryv1.OpenStatus {
	out := &inventoryv1.OpenStatus{OpenNow: st.Open, AcceptingOrders: e.accepting(st, now)}
	if !st.Closes.IsZero() {
		out.ClosesTime = timestamp(st.Closes)
	}
	if !st.NextOpen.IsZero() {
		out.NextOpenTime = timestamp(st.NextOpen)
	}
	return out
}

// hoursFromJSON and friends convert between the stored and the API forms.
func hoursToProto(hs []hoursJSON) []*inventoryv1.OpeningHours {
	out := make([]*inventoryv1.OpeningHours, 0, len(hs))
	for _, h := range hs {
		out = append(out, &inventoryv1.OpeningHours{Weekday: inventoryv1.Weekday(h.Weekday), OpenTime: h.Open, CloseTime: h.Close})
	}
	return out
}

func exceptionsToProto(es []exceptionJSON) []*inventoryv1.HoursException {
	out := make([]*inventoryv1.HoursException, 0, len(es))
	for _, e := range es {
		out = append(out, &inventoryv1.HoursException{Date: e.Date, Closed: e.Closed, OpenTime: e.Open, CloseTime: e.Close, Reason: e.Reason})
	}
	return out
}

func decodeJSON[T any](raw []byte, what, storeID string) ([]T, error) {
	var out []T
	if len(raw) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		if storeID == "" {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return nil, fmt.Errorf("store %s %s: %w", storeID, what, err)
	}
	return out, nil
}
