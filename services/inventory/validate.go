package inventory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/storeid"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

var (
	// SKU codes travel through POS systems and printed labels: the catalog's rule.
	skuPattern     = regexp.MustCompile(`^[A-Z0-9][A-Z0-9._-]{0,63}$`)
	countryPattern = regexp.MustCompile(`^[A-Z]{2}$`)
)

const (
	maxNameLen       = 200
	maxAddressLen    = 200
	maxReasonLen     = 200
	maxNoteLen       = 500
	maxIDLen         = 128
	maxWeeklySpans   = 28
	maxPrepTime      = 24 * time.Hour
	minPickupWindow  = time.Minute
	maxPickupWindow  = 7 * 24 * time.Hour
	earthRadiusMeter = 6_371_008.8
)

// storeWrite is a validated store in its stored form.
type storeWrite struct {
	id, name, timeZone string
	address            []byte
	lat, lng           float64
	hours, exceptions  []byte
	prepSec, windowSec int32
	state, stateReason string
}

// sameAs reports whether w and o would store the same values.
func (w *storeWrite) sameAs(o *storeWrite) bool {
	return w.id == o.id && w.name == o.name && w.timeZone == o.timeZone && bytes.Equal(w.address, o.address) &&
		w.lat == o.lat && w.lng == o.lng && bytes.Equal(w.hours, o.hours) && bytes.Equal(w.exceptions, o.exceptions) &&
		w.prepSec == o.prepSec && w.windowSec == o.windowSec && w.state == o.state && w.stateReason == o.stateReason
}

// storeForWrite validates a store as it will be stored, reporting every bad field under
// prefix. On create, an empty id is assigned and the state defaults to open.
func storeForWrite(in *inventoryv1.Store, prefix string, create bool) (*storeWrite, error) {
	var v rpcerr.Violations
	w := &storeWrite{id: in.GetId(), name: in.GetName(), timeZone: in.GetTimeZone(), stateReason: in.GetStateReason()}
	if create {
		if w.id == "" {
			w.id = newStoreID()
		} else if !storeid.Valid(w.id) {
			v.Add(prefix+".id", "must be "+storeid.Rule)
		}
		w.state = stateOpen
		if st := in.GetState(); st != inventoryv1.StoreState_STORE_STATE_UNSPECIFIED {
			name, ok := stateNames[st]
			if !ok {
				v.Addf(prefix+".state", "unknown state %v", st)
			}
			w.state = name
		}
		checkText(&v, prefix+".state_reason", w.stateReason, maxReasonLen, false)
	}
	checkText(&v, prefix+".name", w.name, maxNameLen, true)

	a := in.GetAddress()
	if a == nil {
		v.Add(prefix+".address", "required")
	} else {
		checkText(&v, prefix+".address.line1", a.GetLine1(), maxAddressLen, true)
		checkText(&v, prefix+".address.line2", a.GetLine2(), maxAddressLen, false)
		checkText(&v, prefix+".address.city", a.GetCity(), maxAddressLen, true)
		checkText(&v, prefix+".address.region", a.GetRegion(), maxAddressLen, false)
		checkText(&v, prefix+".address.postal_code", a.GetPostalCode(), 20, false)
		if !countryPattern.MatchString(a.GetCountryCode()) {
			v.Addf(prefix+".address.country_code", "must be an ISO 3166-1 alpha-2 code like \"US\", got %q", rpcerr.Echo(a.GetCountryCode()))
		}
		w.address, _ = json.Marshal(addressJSON{Line1: a.GetLine1(), Line2: a.GetLine2(), City: a.GetCity(), Region: a.GetRegion(),
			PostalCode: a.GetPostalCode(), CountryCode: a.GetCountryCode()})
	}

	if in.GetLocation() == nil {
		v.Add(prefix+".location", "required")
	} else {
		checkLatLng(&v, prefix+".location", in.GetLocation())
		w.lat, w.lng = in.GetLocation().GetLatitude(), in.GetLocation().GetLongitude()
	}
	if err := checkZone(w.timeZone); err != nil {
		v.Add(prefix+".time_zone", "required: an IANA time zone like \"America/Los_Angeles\"; "+err.Error())
	}

	weekly := checkWeeklyHours(&v, prefix+".opening_hours", in.GetOpeningHours())
	exceptions := checkExceptions(&v, prefix+".hours_exceptions", in.GetHoursExceptions())
	w.hours, _ = json.Marshal(weekly)
	w.exceptions, _ = json.Marshal(exceptions)

	prep := checkDuration(&v, prefix+".prep_time", in.GetPrepTime(), defaultPrepTime, 0, maxPrepTime)
	window := checkDuration(&v, prefix+".pickup_window", in.GetPickupWindow(), defaultPickupWindow, minPickupWindow, maxPickupWindow)
	w.prepSec, w.windowSec = int32(prep/time.Second), int32(window/time.Second)
	if err := v.Err(); err != nil {
		return nil, err
	}
	return w, nil
}

func checkLatLng(v *rpcerr.Violations, field string, p *commonv1.LatLng) {
	lat, lng := p.GetLatitude(), p.GetLongitude()
	if math.IsNaN(lat) || lat < -90 || lat > 90 {
		v.Addf(field+".latitude", "must be between -90 and 90, got %v", lat)
	}
	if math.IsNaN(lng) || lng < -180 || lng > 180 {
		v.Addf(field+".longitude", "must be between -180 and 180, got %v", lng)
	}
}

func checkWeeklyHours(v *rpcerr.Violations, field string, in []*inventoryv1.OpeningHours) []hoursJSON {
	if len(in) > maxWeeklySpans {
		v.Addf(field, "at most %d entries, got %d", maxWeeklySpans, len(in))
		return nil
	}
	out := make([]hoursJSON, 0, len(in))
	byDay := map[int][]hours.Span{}
	for i, h := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		day := int(h.GetWeekday())
		if day < 1 || day > 7 {
			v.Addf(f+".weekday", "must be WEEKDAY_MONDAY … WEEKDAY_SUNDAY, got %v", h.GetWeekday())
			continue
		}
		sp, ok := checkSpan(v, f, h.GetOpenTime(), h.GetCloseTime())
		if !ok {
			continue
		}
		for _, o := range byDay[day] {
			if sp.Open < o.Close && o.Open < sp.Close {
				v.Addf(f, "%s–%s overlaps %s–%s on the same weekday", sp.Open, sp.Close, o.Open, o.Close)
			}
		}
		byDay[day] = append(byDay[day], sp)
		out = append(out, hoursJSON{Weekday: day, Open: h.GetOpenTime(), Close: h.GetCloseTime()})
	}
	// Stored in week order, so reads and events are stable.
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Weekday != out[j].Weekday {
			return out[i].Weekday < out[j].Weekday
		}
		return out[i].Open < out[j].Open
	})
	return out
}

func checkExceptions(v *rpcerr.Violations, field string, in []*inventoryv1.HoursException) []exceptionJSON {
	if len(in) > hours.MaxExceptions {
		v.Addf(field, "at most %d entries, got %d", hours.MaxExceptions, len(in))
		return nil
	}
	out := make([]exceptionJSON, 0, len(in))
	seen := map[string]int{}
	for i, e := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		if _, err := hours.ParseDate(e.GetDate()); err != nil {
			v.Add(f+".date", "must be a date YYYY-MM-DD: "+err.Error())
			continue
		}
		if j, dup := seen[e.GetDate()]; dup {
			v.Addf(f+".date", "%s repeats %s[%d]", e.GetDate(), field, j)
			continue
		}
		seen[e.GetDate()] = i
		checkText(v, f+".reason", e.GetReason(), maxReasonLen, false)
		if e.GetClosed() {
			if e.GetOpenTime() != "" || e.GetCloseTime() != "" {
				v.Add(f, "a closed day has no open_time or close_time")
			}
		} else if _, ok := checkSpan(v, f, e.GetOpenTime(), e.GetCloseTime()); !ok {
			continue
		}
		out = append(out, exceptionJSON{Date: e.GetDate(), Closed: e.GetClosed(), Open: e.GetOpenTime(), Close: e.GetCloseTime(), Reason: e.GetReason()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Date < out[j].Date })
	return out
}

func checkSpan(v *rpcerr.Violations, field, open, closeAt string) (hours.Span, bool) {
	o, err := hours.ParseClock(open)
	if err != nil {
		v.Add(field+".open_time", "must be HH:MM: "+err.Error())
		return hours.Span{}, false
	}
	c, err := hours.ParseClock(closeAt)
	if err != nil {
		v.Add(field+".close_time", "must be HH:MM (24:00 for midnight): "+err.Error())
		return hours.Span{}, false
	}
	if c <= o {
		v.Addf(field+".close_time", "%s is not after open_time %s; hours past midnight are written as …–24:00 and the next day 00:00–…", closeAt, open)
		return hours.Span{}, false
	}
	return hours.Span{Open: o, Close: c}, true
}

func checkDuration(v *rpcerr.Violations, field string, d *durationpb.Duration, def, lo, hi time.Duration) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		v.Add(field, "invalid duration: "+err.Error())
		return def
	}
	got := d.AsDuration()
	if got < lo || got > hi || got%time.Second != 0 {
		v.Addf(field, "must be whole seconds between %v and %v, got %v", lo, hi, got)
	}
	return got
}

func checkText(v *rpcerr.Violations, field, s string, maxLen int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		v.Add(field, "required")
	case !utf8.ValidString(s):
		v.Add(field, "must be valid UTF-8")
	case utf8.RuneCountInString(s) > maxLen:
		v.Addf(field, "at most %d characters, got %d", maxLen, utf8.RuneCountInString(s))
	}
}

func checkSKU(v *rpcerr.Violations, field, sku string) {
	switch {
	case sku == "":
		v.Add(field, "required")
	case !skuPattern.MatchString(sku):
		v.Addf(field, "%q must be 1-64 of A-Z, 0-9, '.', '_', '-'", rpcerr.Echo(sku))
	}
}

func checkStoreID(v *rpcerr.Violations, field, id string) {
	switch {
	case id == "":
		v.Add(field, "required")
	case !storeid.Valid(id):
		v.Addf(field, "%q is not a store id (%s)", rpcerr.Echo(id), storeid.Rule)
	}
}

// checkRadius applies the default and the limit of a search radius in metres.
func checkRadius(v *rpcerr.Violations, field string, r float64) float64 {
	switch {
	case math.IsNaN(r) || r < 0 || r > maxRadius:
		v.Addf(field, "must be between 0 and %.0f metres (0 means %.0f), got %v", maxRadius, defaultRadius, r)
		return defaultRadius
	case r == 0:
		return defaultRadius
	}
	return r
}
