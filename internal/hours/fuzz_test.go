package hours_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
)

// FuzzParseClock: an accepted clock is 00:00–24:00 and formats back as given.
func FuzzParseClock(f *testing.F) {
	for _, s := range []string{"00:00", "24:00", "24:01", "23:59", "9:00", "+1:00", "12:60", "1２:00", "-0:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := hours.ParseClock(s)
		if err != nil {
			return
		}
		if c < 0 || c > hours.MinutesPerDay {
			t.Fatalf("ParseClock(%q) = %d, outside 0..%d", s, c, hours.MinutesPerDay)
		}
		if c.String() != s {
			t.Fatalf("ParseClock(%q) = %d, which formats as %q", s, c, c.String())
		}
	})
}

// FuzzParseDate: an accepted date exists and formats back as given (so that two spellings of
// one date cannot both be exceptions).
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2026-02-28", "2026-02-29", "2024-02-29", "0000-01-01", "9999-12-31", "2026-1-01", "+2026-01-01", "2026-01-01T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := hours.ParseDate(s)
		if err != nil {
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDate(%q) = %+v, which formats as %q", s, d, d.String())
		}
		if d.AddDays(1).AddDays(-1) != d {
			t.Fatalf("ParseDate(%q): AddDays(1).AddDays(-1) = %+v", s, d.AddDays(1).AddDays(-1))
		}
	})
}

// zones that make opening hours hard: DST at midnight, 30-minute DST, negative DST, skipped
// days, a 2-hour DST, odd offsets.
var fuzzZones = []string{
	"UTC", "America/Los_Angeles", "America/Sao_Paulo", "America/Havana", "America/Santiago",
	"Asia/Tehran", "Asia/Beirut", "Asia/Gaza", "Australia/Lord_Howe", "Pacific/Apia",
	"Pacific/Kiritimati", "Africa/Casablanca", "Europe/Dublin", "Antarctica/Troll",
	"America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham", "Europe/London", "America/Godthab",
	"Asia/Amman", "America/Asuncion", "Africa/Cairo",
}

// schedule builds, from fuzz bytes, hours that inventory's validation accepts: each span
// open < close, no two spans of one weekday overlapping, one span per exception date.
func schedule(t *testing.T, loc *time.Location, today hours.Date, weekly, exc []byte) *hours.Schedule {
	var ws []hours.Weekly
	byDay := map[int][][2]hours.Clock{}
	for i := 0; i+4 < len(weekly) && len(ws) < 28; i += 5 {
		day := int(weekly[i])%7 + 1
		o := hours.Clock((int(weekly[i+1])<<8 | int(weekly[i+2])) % (hours.MinutesPerDay + 1))
		c := hours.Clock((int(weekly[i+3])<<8 | int(weekly[i+4])) % (hours.MinutesPerDay + 1))
		if c <= o {
			continue
		}
		overlap := false
		for _, sp := range byDay[day] {
			if o < sp[1] && sp[0] < c {
				overlap = true
			}
		}
		if overlap {
			continue
		}
		byDay[day] = append(byDay[day], [2]hours.Clock{o, c})
		ws = append(ws, hours.Weekly{Weekday: day, Open: o.String(), Close: c.String()})
	}
	var ex []hours.Exception
	seen := map[hours.Date]bool{}
	for i := 0; i+4 < len(exc) && len(ex) < 40; i += 5 {
		d := today.AddDays(int(exc[i]%32) - 4)
		if seen[d] {
			continue
		}
		seen[d] = true
		if exc[i+1]%4 == 0 {
			ex = append(ex, hours.Exception{Date: d.String(), Closed: true})
			continue
		}
		o := hours.Clock((int(exc[i+1])<<8 | int(exc[i+2])) % (hours.MinutesPerDay + 1))
		c := hours.Clock((int(exc[i+3])<<8 | int(exc[i+4])) % (hours.MinutesPerDay + 1))
		if c <= o {
			continue
		}
		ex = append(ex, hours.Exception{Date: d.String(), Open: o.String(), Close: c.String()})
	}
	s, err := hours.Build(loc, ws, ex)
	if err != nil {
		t.Fatalf("Build of valid hours: %v", err)
	}
	return s
}

// openByDefinition is whether now falls inside one of the spans, each from the first instant
// the clock reads its opening time to the first it reads its closing time (package doc).
func openByDefinition(s *hours.Schedule, loc *time.Location, now time.Time) bool {
	today := hours.DateOf(now.In(loc))
	for k := -2; k <= 1; k++ {
		d := today.AddDays(k)
		for _, sp := range s.SpansOn(d) {
			start, end := hours.Instant(loc, d, sp.Open), hours.Instant(loc, d, sp.Close)
			if !now.Before(start) && now.Before(end) {
				return true
			}
		}
	}
	return false
}

// FuzzStatusAt: what StatusAt says of an instant agrees with the spans, and with what it says
// of the instants it names: a store open now is open until it closes and shut at its closing
// time; a shut one is shut until it next opens and open then.
func FuzzStatusAt(f *testing.F) {
	f.Add(uint8(1), int64(1774756800), []byte{0, 1, 104, 4, 176, 1, 0, 0, 5, 160}, []byte{3, 0, 0, 0, 0}, uint32(3600))
	f.Add(uint8(2), int64(1762052400), []byte{0, 0, 0, 5, 160, 1, 0, 0, 5, 160, 6, 0, 0, 5, 160}, []byte{}, uint32(86400))
	f.Add(uint8(9), int64(1325239200), []byte{3, 0, 0, 5, 160, 4, 0, 0, 5, 160, 5, 0, 0, 5, 160}, []byte{}, uint32(7200))
	f.Add(uint8(12), int64(1710000000), []byte{0, 0, 0, 0, 90, 1, 0, 60, 0, 120}, []byte{5, 1, 0, 5, 160}, uint32(60))
	f.Fuzz(func(t *testing.T, zone uint8, unix int64, weekly, exc []byte, dSec uint32) {
		loc, err := time.LoadLocation(fuzzZones[int(zone)%len(fuzzZones)])
		if err != nil {
			t.Fatal(err)
		}
		// 1970 to 2100: where zone rules are known and stores trade.
		now := time.Unix(unix%(130*365*86400), 0)
		if unix < 0 {
			now = time.Unix(-unix%(130*365*86400), 0)
		}
		s := schedule(t, loc, hours.DateOf(now.In(loc)), weekly, exc)
		st := s.StatusAt(now)
		if want := openByDefinition(s, loc, now); st.Open != want {
			t.Fatalf("%s at %v (%v): StatusAt says open=%v, the spans %v (%+v)", loc, now, now.In(loc), st.Open, want, st)
		}
		switch {
		case st.Open && !st.Closes.IsZero():
			if !st.Closes.After(now) {
				t.Fatalf("open at %v, closes at %v", now.In(loc), st.Closes.In(loc))
			}
			if s.OpenAt(st.Closes) {
				t.Fatalf("open at %v, said to close at %v, but open then", now.In(loc), st.Closes.In(loc))
			}
			if !s.OpenAt(st.Closes.Add(-time.Second)) {
				t.Fatalf("open at %v, said to close at %v, but shut a second before", now.In(loc), st.Closes.In(loc))
			}
		case !st.Open && !st.NextOpen.IsZero():
			if !st.NextOpen.After(now) {
				t.Fatalf("shut at %v, next opens at %v", now.In(loc), st.NextOpen.In(loc))
			}
			if !s.OpenAt(st.NextOpen) {
				t.Fatalf("shut at %v, said to open at %v, but shut then (%+v)", now.In(loc), st.NextOpen.In(loc), s.StatusAt(st.NextOpen))
			}
			if st.NextOpen.Sub(now) > time.Second && s.OpenAt(st.NextOpen.Add(-time.Second)) {
				t.Fatalf("shut at %v, said to open at %v, but open a second before", now.In(loc), st.NextOpen.In(loc))
			}
		}
		d := time.Duration(dSec%(8*86400)) * time.Second
		if end := s.AddOpen(now, d); end.Before(now.Add(d)) {
			t.Fatalf("AddOpen(%v, %v) = %v, before plain time %v", now.In(loc), d, end.In(loc), now.Add(d).In(loc))
		}
	})
}

// FuzzInstant: Instant is the first instant the local clock reads the time asked for (or, in
// a gap, the first after it).
func FuzzInstant(f *testing.F) {
	f.Add(uint8(1), int64(1773532800), uint16(120))
	f.Add(uint8(2), int64(1730000000), uint16(0))
	f.Add(uint8(9), int64(1325203200), uint16(1440))
	f.Fuzz(func(t *testing.T, zone uint8, unix int64, c uint16) {
		loc, err := time.LoadLocation(fuzzZones[int(zone)%len(fuzzZones)])
		if err != nil {
			t.Fatal(err)
		}
		if unix < 0 {
			unix = -unix
		}
		day := hours.DateOf(time.Unix(unix%(130*365*86400), 0).In(loc))
		clock := hours.Clock(int(c) % (hours.MinutesPerDay + 1))
		got := hours.Instant(loc, day, clock)
		want := time.Date(day.Year, day.Month, day.Day, 0, 0, 0, 0, time.UTC).Add(time.Duration(clock) * time.Minute)
		wall := func(x time.Time) time.Time {
			x = x.In(loc)
			return time.Date(x.Year(), x.Month(), x.Day(), x.Hour(), x.Minute(), x.Second(), 0, time.UTC)
		}
		if wall(got).Before(want) {
			t.Fatalf("Instant(%s, %v, %v) = %v, whose clock reads before it", loc, day, clock, got.In(loc))
		}
		if before := got.Add(-time.Second); !wall(before).Before(want) {
			t.Fatalf("Instant(%s, %v, %v) = %v, but the clock read it already at %v", loc, day, clock, got.In(loc), before.In(loc))
		}
	})
}
