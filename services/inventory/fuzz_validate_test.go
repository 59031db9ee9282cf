package inventory

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/hours"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// FuzzStoreHours: a store an admin writes is refused (InvalidArgument) or stored with hours
// that every reader takes: inventory's own schedule, and fulfilment's (hours.OfStore, from the
// API form), each span opening before it closes, no two of a weekday overlapping, each date
// once, durations within their bounds.
func FuzzStoreHours(f *testing.F) {
	f.Add("America/Los_Angeles", int32(1), "06:00", "20:00", int32(1), "20:00", "24:00", "2026-12-25", true, "", "", "2026-12-24", "07:00", "15:00", int64(300), int64(3600))
	f.Add("Local", int32(8), "24:00", "24:00", int32(0), "", "", "2026-02-30", false, "x", "y", "2026-12-24", "07:00", "07:00", int64(-1), int64(0))
	f.Add("Etc/GMT-14", int32(7), "00:00", "24:00", int32(7), "00:00", "00:01", "0000-01-01", false, "00:00", "24:00", "0000-01-01", "", "", int64(86400), int64(604800))
	f.Fuzz(func(t *testing.T, zone string, d1 int32, o1, c1 string, d2 int32, o2, c2 string,
		date1 string, closed1 bool, eo1, ec1 string, date2, eo2, ec2 string, prep, window int64) {
		in := &inventoryv1.Store{
			Id: "s1", Name: "Store", TimeZone: zone,
			Address:  &inventoryv1.Address{Line1: "1 Main St", City: "Seattle", CountryCode: "US"},
			Location: &commonv1.LatLng{Latitude: 47.6, Longitude: -122.3},
			OpeningHours: []*inventoryv1.OpeningHours{
				{Weekday: inventoryv1.Weekday(d1), OpenTime: o1, CloseTime: c1},
				{Weekday: inventoryv1.Weekday(d2), OpenTime: o2, CloseTime: c2},
			},
			HoursExceptions: []*inventoryv1.HoursException{
				{Date: date1, Closed: closed1, OpenTime: eo1, CloseTime: ec1},
				{Date: date2, OpenTime: eo2, CloseTime: ec2},
			},
			PrepTime:     &durationpb.Duration{Seconds: prep},
			PickupWindow: &durationpb.Duration{Seconds: window},
		}
		w, err := storeForWrite(in, "store", true)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refused as %v: %v", status.Code(err), err)
			}
			return
		}
		if w.prepSec < 0 || time.Duration(w.prepSec)*time.Second > maxPrepTime ||
			time.Duration(w.windowSec)*time.Second < minPickupWindow || time.Duration(w.windowSec)*time.Second > maxPickupWindow {
			t.Fatalf("stored prep %ds, window %ds", w.prepSec, w.windowSec)
		}
		var weekly []hoursJSON
		var exceptions []exceptionJSON
		if err := json.Unmarshal(w.hours, &weekly); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(w.exceptions, &exceptions); err != nil {
			t.Fatal(err)
		}
		loc, err := loadZone(w.timeZone)
		if err != nil {
			t.Fatalf("zone %q stored but does not load: %v", w.timeZone, err)
		}
		s, err := buildSchedule(loc, weekly, exceptions)
		if err != nil {
			t.Fatalf("stored hours %s / %s do not build: %v", w.hours, w.exceptions, err)
		}
		for day := time.Sunday; day <= time.Saturday; day++ {
			spans := s.Weekly[day]
			for i, a := range spans {
				if a.Open >= a.Close {
					t.Fatalf("stored span %v on %v", a, day)
				}
				for _, b := range spans[i+1:] {
					if a.Open < b.Close && b.Open < a.Close {
						t.Fatalf("stored overlapping spans %v and %v on %v", a, b, day)
					}
				}
			}
		}
		seen := map[string]bool{}
		for _, e := range exceptions {
			if seen[e.Date] {
				t.Fatalf("date %s stored twice", e.Date)
			}
			seen[e.Date] = true
			if e.Closed && (e.Open != "" || e.Close != "") {
				t.Fatalf("closed date stored with hours: %+v", e)
			}
			if sp := s.SpansOn(mustDate(t, e.Date)); !e.Closed && (len(sp) != 1 || sp[0].Open >= sp[0].Close) {
				t.Fatalf("exception %+v builds as %v", e, sp)
			}
		}
		api := &inventoryv1.Store{TimeZone: w.timeZone, OpeningHours: hoursToProto(weekly), HoursExceptions: exceptionsToProto(exceptions)}
		if (len(weekly) > 0 || len(exceptions) > 0) && hours.OfStore(api) == nil {
			t.Fatalf("fulfilment cannot read stored hours %s / %s in %q", w.hours, w.exceptions, w.timeZone)
		}
		_ = s.StatusAt(time.Now())
	})
}

func mustDate(t *testing.T, s string) hours.Date {
	d, err := hours.ParseDate(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
