package hours

import (
	"time"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// OfStore is the schedule of a store as inventory's API gives it, or nil when it has none that
// can be counted in: no hours, no time zone, or hours that do not build (the caller then counts
// plain time).
func OfStore(st *inventoryv1.Store) *Schedule {
	if len(st.GetOpeningHours()) == 0 && len(st.GetHoursExceptions()) == 0 {
		return nil
	}
	if tz := st.GetTimeZone(); tz == "" || tz == "Local" {
		return nil
	}
	loc, err := time.LoadLocation(st.GetTimeZone())
	if err != nil {
		return nil
	}
	weekly := make([]Weekly, 0, len(st.GetOpeningHours()))
	for _, h := range st.GetOpeningHours() {
		weekly = append(weekly, Weekly{Weekday: int(h.GetWeekday()), Open: h.GetOpenTime(), Close: h.GetCloseTime()})
	}
	exceptions := make([]Exception, 0, len(st.GetHoursExceptions()))
	for _, e := range st.GetHoursExceptions() {
		exceptions = append(exceptions, Exception{Date: e.GetDate(), Closed: e.GetClosed(), Open: e.GetOpenTime(), Close: e.GetCloseTime()})
	}
	s, err := Build(loc, weekly, exceptions)
	if err != nil {
		return nil
	}
	return s
}
