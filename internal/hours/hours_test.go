package hours_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/hours"
)

const la = "America/Los_Angeles"

func loc(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func clock(t *testing.T, s string) hours.Clock {
	t.Helper()
	c, err := hours.ParseClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func span(t *testing.T, open, close string) hours.Span {
	return hours.Span{Open: clock(t, open), Close: clock(t, close)}
}

func date(t *testing.T, s string) hours.Date {
	t.Helper()
	d, err := hours.ParseDate(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// every gives the same spans on each weekday.
func every(spans ...hours.Span) (w [7][]hours.Span) {
	for d := range w {
		w[d] = spans
	}
	return w
}

// rfc parses an RFC 3339 time; "" is the zero time.
func rfc(t *testing.T, s string) time.Time {
	t.Helper()
	if s == "" {
		return time.Time{}
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStatusAt(t *testing.T) {
	weekdays := func(sp hours.Span) (w [7][]hours.Span) {
		for d := time.Monday; d <= time.Friday; d++ {
			w[d] = []hours.Span{sp}
		}
		return w
	}
	overnightFriday := weekdays(span(t, "06:00", "20:00"))
	overnightFriday[time.Friday] = []hours.Span{span(t, "06:00", "24:00")}
	overnightFriday[time.Saturday] = []hours.Span{span(t, "00:00", "02:00"), span(t, "09:00", "13:00")}

	springSunday := [7][]hours.Span{}
	springSunday[time.Saturday] = []hours.Span{span(t, "20:00", "24:00")}
	springSunday[time.Sunday] = []hours.Span{span(t, "00:00", "02:30"), span(t, "02:30", "02:45"), span(t, "05:00", "10:00")}

	lunchBreak := every(span(t, "08:00", "12:00"), span(t, "13:00", "17:00"))

	tests := []struct {
		name     string
		zone     string
		weekly   [7][]hours.Span
		except   map[string][]hours.Span
		now      string
		open     bool
		closes   string
		nextOpen string
	}{
		{name: "weekday midday is open until the evening close",
			zone: la, weekly: weekdays(span(t, "06:00", "20:00")), now: "2026-06-10T12:00:00-07:00",
			open: true, closes: "2026-06-10T20:00:00-07:00"},
		{name: "opening minute is open",
			zone: la, weekly: weekdays(span(t, "06:00", "20:00")), now: "2026-06-10T06:00:00-07:00",
			open: true, closes: "2026-06-10T20:00:00-07:00"},
		{name: "closing minute is closed",
			zone: la, weekly: weekdays(span(t, "06:00", "20:00")), now: "2026-06-10T20:00:00-07:00",
			nextOpen: "2026-06-11T06:00:00-07:00"},
		{name: "friday night next opens on monday",
			zone: la, weekly: weekdays(span(t, "06:00", "20:00")), now: "2026-06-12T21:00:00-07:00",
			nextOpen: "2026-06-15T06:00:00-07:00"},
		{name: "same wall clock in another zone is a different instant",
			zone: "Europe/Berlin", weekly: weekdays(span(t, "06:00", "20:00")), now: "2026-06-10T12:00:00-07:00",
			nextOpen: "2026-06-11T06:00:00+02:00"},
		{name: "lunch break: closed between the two spans",
			zone: la, weekly: lunchBreak, now: "2026-06-10T12:30:00-07:00",
			nextOpen: "2026-06-10T13:00:00-07:00"},
		{name: "round the clock never closes",
			zone: la, weekly: every(span(t, "00:00", "24:00")), now: "2026-06-10T03:00:00-07:00",
			open: true},
		{name: "24:00 close runs into the next day's 00:00 span",
			zone: la, weekly: overnightFriday, now: "2026-06-12T23:00:00-07:00",
			open: true, closes: "2026-06-13T02:00:00-07:00"},
		{name: "after the overnight close, next opening is the same morning",
			zone: la, weekly: overnightFriday, now: "2026-06-13T02:00:00-07:00",
			nextOpen: "2026-06-13T09:00:00-07:00"},
		{name: "still open after midnight from yesterday's late span",
			zone: la, weekly: overnightFriday, now: "2026-06-13T01:00:00-07:00",
			open: true, closes: "2026-06-13T02:00:00-07:00"},
		{name: "no hours: never open",
			zone: la, now: "2026-06-10T12:00:00-07:00"},
		{name: "spring forward: a close at a skipped time happens at the change",
			zone: la, weekly: springSunday, now: "2026-03-07T23:00:00-08:00",
			open: true, closes: "2026-03-08T03:00:00-07:00"},
		{name: "spring forward: a span inside the gap is empty, next opening is after it",
			zone: la, weekly: springSunday, now: "2026-03-08T03:00:00-07:00",
			nextOpen: "2026-03-08T05:00:00-07:00"},
		{name: "spring forward: the morning span is its wall-clock hours",
			zone: la, weekly: springSunday, now: "2026-03-08T09:59:00-07:00",
			open: true, closes: "2026-03-08T10:00:00-07:00"},
		{name: "spring forward: opening at a skipped time opens at the change",
			zone: la, weekly: every(span(t, "02:30", "04:00")), now: "2026-03-08T01:59:00-08:00",
			nextOpen: "2026-03-08T03:00:00-07:00"},
		{name: "fall back: closes at the first 01:30",
			zone: la, weekly: every(span(t, "00:00", "01:30"), span(t, "09:00", "17:00")), now: "2026-11-01T01:10:00-07:00",
			open: true, closes: "2026-11-01T01:30:00-07:00"},
		{name: "fall back: the repeated hour after closing stays closed",
			zone: la, weekly: every(span(t, "00:00", "01:30"), span(t, "09:00", "17:00")), now: "2026-11-01T01:10:00-08:00",
			nextOpen: "2026-11-01T09:00:00-08:00"},
		{name: "fall back: a span across the change lasts an hour longer",
			zone: la, weekly: every(span(t, "01:00", "03:00")), now: "2026-11-01T01:00:00-07:00",
			open: true, closes: "2026-11-01T03:00:00-08:00"},
		{name: "holiday closed all day: next opening the day after",
			zone: la, weekly: every(span(t, "06:00", "20:00")), except: map[string][]hours.Span{"2026-12-25": nil},
			now: "2026-12-25T10:00:00-08:00", nextOpen: "2026-12-26T06:00:00-08:00"},
		{name: "holiday eve closes early",
			zone: la, weekly: every(span(t, "06:00", "20:00")), except: map[string][]hours.Span{"2026-12-24": {span(t, "07:00", "15:00")}, "2026-12-25": nil},
			now: "2026-12-24T14:00:00-08:00", open: true, closes: "2026-12-24T15:00:00-08:00"},
		{name: "after an early close, the next opening skips the closed holiday",
			zone: la, weekly: every(span(t, "06:00", "20:00")), except: map[string][]hours.Span{"2026-12-24": {span(t, "07:00", "15:00")}, "2026-12-25": nil},
			now: "2026-12-24T16:00:00-08:00", nextOpen: "2026-12-26T06:00:00-08:00"},
		{name: "exception opens a day that is normally closed",
			zone: la, weekly: weekdays(span(t, "06:00", "20:00")), except: map[string][]hours.Span{"2026-12-20": {span(t, "10:00", "14:00")}},
			now: "2026-12-20T11:00:00-08:00", open: true, closes: "2026-12-20T14:00:00-08:00"},
		{name: "exception ends a round-the-clock stretch",
			zone: la, weekly: every(span(t, "00:00", "24:00")), except: map[string][]hours.Span{"2026-12-25": {span(t, "08:00", "18:00")}},
			now: "2026-12-24T12:00:00-08:00", open: true, closes: "2026-12-25T00:00:00-08:00"},
		{name: "only a dated exception far ahead is found",
			zone: la, except: map[string][]hours.Span{"2027-05-01": {span(t, "10:00", "12:00")}},
			now: "2026-06-10T12:00:00-07:00", nextOpen: "2027-05-01T10:00:00-07:00"},
		{name: "half-hour daylight saving (Lord Howe) ambiguous close is the first reading",
			zone: "Australia/Lord_Howe", weekly: every(span(t, "00:00", "01:45"), span(t, "09:00", "17:00")), now: "2026-04-05T01:40:00+11:00",
			open: true, closes: "2026-04-05T01:45:00+11:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := hours.Schedule{Location: loc(t, tc.zone), Weekly: tc.weekly, Exceptions: map[hours.Date][]hours.Span{}}
			for d, sp := range tc.except {
				s.Exceptions[date(t, d)] = sp
			}
			got := s.StatusAt(rfc(t, tc.now))
			if got.Open != tc.open || !got.Closes.Equal(rfc(t, tc.closes)) || !got.NextOpen.Equal(rfc(t, tc.nextOpen)) {
				t.Errorf("StatusAt(%s) = open %v, closes %v, next open %v; want open %v, closes %q, next open %q",
					tc.now, got.Open, got.Closes, got.NextOpen, tc.open, tc.closes, tc.nextOpen)
			}
		})
	}
}

func TestInstant(t *testing.T) {
	tests := []struct {
		zone, date, clock, want string
	}{
		{la, "2026-06-10", "06:00", "2026-06-10T06:00:00-07:00"},
		{la, "2026-06-10", "24:00", "2026-06-11T00:00:00-07:00"},
		{la, "2026-03-08", "02:00", "2026-03-08T03:00:00-07:00"}, // skipped: the change itself
		{la, "2026-03-08", "02:59", "2026-03-08T03:00:00-07:00"},
		{la, "2026-03-08", "03:00", "2026-03-08T03:00:00-07:00"},
		{la, "2026-11-01", "01:30", "2026-11-01T01:30:00-07:00"}, // ambiguous: first reading
		{"Australia/Lord_Howe", "2026-04-05", "01:45", "2026-04-05T01:45:00+11:00"},
		{"Australia/Lord_Howe", "2026-10-04", "02:15", "2026-10-04T02:30:00+11:00"},
		{"UTC", "2026-06-10", "00:00", "2026-06-10T00:00:00Z"},
	}
	for _, tc := range tests {
		got := hours.Instant(loc(t, tc.zone), date(t, tc.date), clock(t, tc.clock))
		if !got.Equal(rfc(t, tc.want)) {
			t.Errorf("Instant(%s, %s, %s) = %v, want %s", tc.zone, tc.date, tc.clock, got, tc.want)
		}
	}
}

func TestParseClock(t *testing.T) {
	good := map[string]hours.Clock{"00:00": 0, "06:30": 390, "23:59": 1439, "24:00": hours.MinutesPerDay}
	for s, want := range good {
		if got, err := hours.ParseClock(s); err != nil || got != want {
			t.Errorf("ParseClock(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "7:00", "07:0", "24:01", "25:00", "12:60", "ab:cd", "12-30", "012:00"} {
		if _, err := hours.ParseClock(s); err == nil {
			t.Errorf("ParseClock(%q) accepted", s)
		}
	}
}

func TestParseDate(t *testing.T) {
	if d, err := hours.ParseDate("2028-02-29"); err != nil || d.String() != "2028-02-29" {
		t.Errorf("ParseDate(2028-02-29) = %v, %v", d, err)
	}
	for _, s := range []string{"2027-02-29", "2026-13-01", "26-01-01", "2026/01/01", ""} {
		if _, err := hours.ParseDate(s); err == nil {
			t.Errorf("ParseDate(%q) accepted", s)
		}
	}
}

// A span of open time counted from an instant skips the hours the store is shut: overnight,
// over a lunch break, over a day closed by an exception; a store open around the clock, and
// one that never opens again, count plain time.
func TestAddOpen(t *testing.T) {
	l := loc(t, la)
	daily := &hours.Schedule{Location: l, Weekly: every(span(t, "07:00", "22:00"))}
	lunch := &hours.Schedule{Location: l, Weekly: every(span(t, "08:00", "12:00"), span(t, "13:00", "17:00"))}
	closedXmas := &hours.Schedule{Location: l, Weekly: every(span(t, "07:00", "22:00")),
		Exceptions: map[hours.Date][]hours.Span{date(t, "2026-12-25"): {}}}
	allDay := &hours.Schedule{Location: l, Weekly: every(span(t, "00:00", "24:00"))}
	for _, c := range []struct {
		name string
		s    *hours.Schedule
		from string
		d    time.Duration
		want string
	}{
		{"within the day", daily, "2026-11-24T10:00:00-08:00", time.Hour, "2026-11-24T11:00:00-08:00"},
		{"ending at closing", daily, "2026-11-24T21:00:00-08:00", time.Hour, "2026-11-24T22:00:00-08:00"},
		{"over the night", daily, "2026-11-24T21:55:00-08:00", time.Hour, "2026-11-25T07:55:00-08:00"},
		{"from while shut", daily, "2026-11-24T23:30:00-08:00", time.Hour, "2026-11-25T08:00:00-08:00"},
		{"over lunch", lunch, "2026-11-24T11:30:00-08:00", time.Hour, "2026-11-24T13:30:00-08:00"},
		{"over lunch and the night", lunch, "2026-11-24T11:30:00-08:00", 5 * time.Hour, "2026-11-25T08:30:00-08:00"},
		{"over a day closed", closedXmas, "2026-12-24T21:30:00-08:00", time.Hour, "2026-12-26T07:30:00-08:00"},
		{"around the clock", allDay, "2026-11-24T23:30:00-08:00", time.Hour, "2026-11-25T00:30:00-08:00"},
		{"never open", &hours.Schedule{Location: l}, "2026-11-24T23:30:00-08:00", time.Hour, "2026-11-25T00:30:00-08:00"},
	} {
		if got := c.s.AddOpen(rfc(t, c.from), c.d); !got.Equal(rfc(t, c.want)) {
			t.Errorf("%s: AddOpen(%s, %v) = %s, want %s", c.name, c.from, c.d, got.In(l).Format(time.RFC3339), c.want)
		}
	}
}

// Hours as written build the schedule they say; anything unreadable is refused.
func TestBuild(t *testing.T) {
	l := loc(t, la)
	s, err := hours.Build(l, []hours.Weekly{{Weekday: 1, Open: "07:00", Close: "22:00"}, {Weekday: 7, Open: "09:00", Close: "17:00"}},
		[]hours.Exception{{Date: "2026-11-30", Closed: true}, {Date: "2026-12-06", Open: "10:00", Close: "14:00"}})
	if err != nil {
		t.Fatal(err)
	}
	for at, open := range map[string]bool{
		"2026-11-23T08:00:00-08:00": true,  // a Monday
		"2026-11-24T08:00:00-08:00": false, // a Tuesday: no hours
		"2026-11-29T16:00:00-08:00": true,  // a Sunday
		"2026-11-30T08:00:00-08:00": false, // a Monday closed by exception
		"2026-12-06T09:30:00-08:00": false, // a Sunday opening late by exception
		"2026-12-06T13:30:00-08:00": true,
	} {
		if got := s.OpenAt(rfc(t, at)); got != open {
			t.Errorf("open at %s = %v, want %v", at, got, open)
		}
	}
	for _, bad := range []struct {
		w  []hours.Weekly
		ex []hours.Exception
	}{
		{w: []hours.Weekly{{Weekday: 0, Open: "07:00", Close: "22:00"}}},
		{w: []hours.Weekly{{Weekday: 8, Open: "07:00", Close: "22:00"}}},
		{w: []hours.Weekly{{Weekday: 1, Open: "7am", Close: "22:00"}}},
		{ex: []hours.Exception{{Date: "2026-02-30", Closed: true}}},
		{ex: []hours.Exception{{Date: "2026-12-06", Open: "10:00"}}},
	} {
		if _, err := hours.Build(l, bad.w, bad.ex); err == nil {
			t.Errorf("Build(%+v, %+v) took hours it cannot read", bad.w, bad.ex)
		}
	}
}

// A store that shuts for longer than the close look-ahead (two weeks: a refurbishment,
// a seasonal closure, a pop-up whose hours are dated exceptions) is open on its last day until
// its closing time, not "around the clock" for want of a later opening to compare with.
func TestTheLastDayBeforeALongClosureHasItsClosingTime(t *testing.T) {
	l := loc(t, "Europe/London")
	s := &hours.Schedule{Location: l, Weekly: every(span(t, "09:00", "17:00")), Exceptions: map[hours.Date][]hours.Span{}}
	for i := 1; i <= 21; i++ { // shut 1–21 July for a refurbishment
		s.Exceptions[date(t, "2026-06-30").AddDays(i)] = []hours.Span{}
	}
	now := rfc(t, "2026-06-30T16:55:00+01:00")
	got := s.StatusAt(now)
	if want := rfc(t, "2026-06-30T17:00:00+01:00"); !got.Open || !got.Closes.Equal(want) {
		t.Errorf("StatusAt(%s) = open %v, closes %v; want open, closing at %s", now.Format(time.RFC3339), got.Open, got.Closes, want.Format(time.RFC3339))
	}
	// A pop-up trading on one date only.
	pop := &hours.Schedule{Location: l, Exceptions: map[hours.Date][]hours.Span{date(t, "2026-08-01"): {span(t, "10:00", "16:00")}}}
	now = rfc(t, "2026-08-01T12:00:00+01:00")
	if got, want := pop.StatusAt(now), rfc(t, "2026-08-01T16:00:00+01:00"); !got.Open || !got.Closes.Equal(want) {
		t.Errorf("pop-up StatusAt(%s) = open %v, closes %v; want open, closing at %s", now.Format(time.RFC3339), got.Open, got.Closes, want.Format(time.RFC3339))
	}
	// And a pickup window opened 10 minutes before the refurbishment closing has its other 50
	// minutes once the store reopens, as it would before a shorter closure.
	if got, want := s.AddOpen(rfc(t, "2026-06-30T16:50:00+01:00"), time.Hour), rfc(t, "2026-07-22T09:50:00+01:00"); !got.Equal(want) {
		t.Errorf("AddOpen(16:50, 1h) on the last day before the refurbishment = %s, want %s: the window runs out while the store is shut", got.In(l).Format(time.RFC3339), want.Format(time.RFC3339))
	}
}

// A store shut for as many days as it may have exceptions, every one of them dated, still says
// when it opens again. Before, the search for the next opening stopped at 370 days and the store
// had no next opening at all.
func TestTheLongestClosureExceptionsCanMakeStillHasANextOpening(t *testing.T) {
	l := loc(t, "Europe/London")
	s := &hours.Schedule{Location: l, Weekly: every(span(t, "09:00", "17:00")), Exceptions: map[hours.Date][]hours.Span{}}
	first := date(t, "2026-06-30")
	for i := range hours.MaxExceptions {
		s.Exceptions[first.AddDays(i)] = []hours.Span{}
	}
	got := s.StatusAt(rfc(t, "2026-06-30T08:00:00+01:00"))
	if want := hours.Instant(l, first.AddDays(hours.MaxExceptions), clock(t, "09:00")); got.Open || !got.NextOpen.Equal(want) {
		t.Errorf("StatusAt = open %v, next open %s; want closed, opening at %s", got.Open, got.NextOpen, want)
	}
}

// At every minute of a day, for every hour asked, the zone has it that hour there.
func TestZoneWhereItIsHasTheHourAskedWhateverTheTimeHere(t *testing.T) {
	start := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for m := 0; m < 24*60; m += 7 {
		now := start.Add(time.Duration(m) * time.Minute)
		for hour := range 24 {
			zone := hours.ZoneWhereItIs(hour, now)
			loc, err := time.LoadLocation(zone)
			if err != nil {
				t.Fatalf("%s, hour %d: zone %q: %v", now.Format(time.TimeOnly), hour, zone, err)
			}
			if got := now.In(loc).Hour(); got != hour {
				t.Fatalf("%s UTC: it is %02d:xx in %s, want %02d:xx", now.Format(time.TimeOnly), got, zone, hour)
			}
		}
	}
}

// A time read on a store's clock names its day only when that is not today there, and an
// unknown zone falls back to the one given.
func TestClockTextNamesTheDayOnlyWhenItIsNotTodayAtTheStore(t *testing.T) {
	pdt := hours.Location("America/Los_Angeles", time.UTC)
	now := time.Date(2026, 7, 2, 1, 0, 0, 0, time.UTC) // 18:00 PDT on Wednesday 1 July
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 7, 2, 1, 30, 0, 0, time.UTC), "18:30 PDT"},           // today there, tomorrow in UTC
		{time.Date(2026, 7, 2, 16, 0, 0, 0, time.UTC), "Thu 2 Jul 09:00 PDT"}, // tomorrow there
	} {
		if got := hours.ClockText(c.at, pdt, now); got != c.want {
			t.Errorf("ClockText(%s) = %q, want %q", c.at, got, c.want)
		}
	}
	for _, zone := range []string{"", "Local", "Nowhere/Such"} {
		if got := hours.Location(zone, time.UTC); got != time.UTC {
			t.Errorf("Location(%q) = %v, want the fallback", zone, got)
		}
	}
}
