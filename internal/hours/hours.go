// Package hours answers "is this store open now, when does it close, when does it next open"
// from weekly opening hours and dated exceptions, in the store's own time zone. It is pure:
// no I/O, no clock; the caller passes the instant to ask about.
//
// Hours are wall-clock spans on local calendar dates ("Mon 06:00–20:00", "2026-12-24
// 07:00–15:00"). A span that ends at 24:00 and one that starts at 00:00 the next day are one
// stretch, so overnight and round-the-clock trading is written as per-day spans and reported
// with its true closing time. Daylight-saving changes are handled the way a shop door works:
// a span opens at the first instant the local clock reads its opening time (at the end of a
// spring-forward gap if that time is skipped) and closes the first time the clock reads its
// closing time (so "00:00–01:30" on a fall-back night closes at the first 01:30).
package hours

import (
	"fmt"
	"sort"
	"time"
	// Zones are part of the store's data: a host or container without a zoneinfo database must
	// still answer correctly, so the binary carries its own copy.
	_ "time/tzdata"
)

// MinutesPerDay is the largest clock value: "24:00", the midnight that ends a day.
const MinutesPerDay = 24 * 60

// Clock is a local wall-clock time of day in minutes after midnight, 0 to MinutesPerDay.
type Clock int

// ParseClock reads "HH:MM" (24-hour clock, "24:00" allowed for a closing time).
func ParseClock(s string) (Clock, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	for i, c := range []byte(s) {
		if i == 2 {
			continue
		}
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not HH:MM", s)
		}
	}
	h = int(s[0]-'0')*10 + int(s[1]-'0')
	m = int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%q is not a time between 00:00 and 24:00", s)
	}
	return Clock(h*60 + m), nil
}

// String formats c as "HH:MM".
func (c Clock) String() string { return fmt.Sprintf("%02d:%02d", int(c)/60, int(c)%60) }

// Span is one opening on a local date: from Open until Close (exclusive), Open < Close.
type Span struct {
	Open, Close Clock
}

// Date is a local calendar date.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// ParseDate reads "YYYY-MM-DD" and checks the date exists.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, fmt.Errorf("%q is not a date YYYY-MM-DD", s)
	}
	return DateOf(t), nil
}

// DateOf is the calendar date of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// AddDays returns the date n days after d.
func (d Date) AddDays(n int) Date {
	return DateOf(time.Date(d.Year, d.Month, d.Day+n, 12, 0, 0, 0, time.UTC))
}

// Weekday is d's day of the week.
func (d Date) Weekday() time.Weekday {
	return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC).Weekday()
}

// String formats d as "YYYY-MM-DD".
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// Schedule is a store's trading hours in its zone. The zero value is never open.
type Schedule struct {
	// Location is the store's time zone; nil means UTC.
	Location *time.Location
	// Weekly are the regular spans per weekday (time.Sunday = 0), sorted by Open.
	Weekly [7][]Span
	// Exceptions replace the weekly spans on their dates; an empty list is closed all day.
	Exceptions map[Date][]Span
}

// SpansOn returns the spans that apply on local date d.
func (s *Schedule) SpansOn(d Date) []Span {
	if ex, ok := s.Exceptions[d]; ok {
		return ex
	}
	return s.Weekly[d.Weekday()]
}

// Status is what a schedule says about one instant.
type Status struct {
	// Open is true when the instant falls inside an opening.
	Open bool
	// Closes is when the current stretch ends, when Open; zero if it does not end within
	// the look-ahead (a store open around the clock).
	Closes time.Time
	// NextOpen is when the store next opens, when not Open; zero if it never opens within
	// the look-ahead.
	NextOpen time.Time
}

const (
	// closeLookAhead bounds the search for the end of an open stretch: a store open without a
	// break for two weeks is reported as open around the clock.
	closeLookAhead = 14
	// openLookAhead bounds the search for the next opening: past the longest closure dated
	// exceptions can make, and a week of weekly hours after it. It covers a store whose only
	// hours are a dated exception a year ahead too.
	openLookAhead = MaxExceptions + 8
)

// MaxExceptions is how many dated exceptions a schedule may have (inventory refuses more).
const MaxExceptions = 400

// StatusAt reports whether the store is open at now, and when it closes or next opens.
func (s *Schedule) StatusAt(now time.Time) Status {
	loc := s.loc()
	today := DateOf(now.In(loc))
	// Start a day early: yesterday's span ending at 24:00 runs into today's 00:00 span, and a
	// fall-back night can make yesterday's late span still open.
	it := intervals{s: s, loc: loc, next: today.AddDays(-1), last: today.AddDays(openLookAhead)}
	for {
		iv, ok := it.pop()
		if !ok {
			return Status{}
		}
		if !iv.end.After(now) {
			continue // already over
		}
		if iv.start.After(now) {
			return Status{NextOpen: iv.start}
		}
		// Open: extend over every interval that starts where this one ends.
		it.last = today.AddDays(closeLookAhead)
		end := iv.end
		for {
			nx, ok := it.peek()
			if !ok {
				if end.Before(Instant(loc, it.last.AddDays(1), 0)) {
					// It closes, and does not open again within the look-ahead: the last day
					// before a long closure has its closing time (and its last orders) too.
					return Status{Open: true, Closes: end}
				}
				return Status{Open: true} // open through the whole look-ahead: no end in sight
			}
			if nx.start.After(end) {
				return Status{Open: true, Closes: end}
			}
			it.pop()
			if nx.end.After(end) {
				end = nx.end
			}
		}
	}
}

// maxStretches bounds AddOpen's walk: a week of several openings a day is well within it.
const maxStretches = 64

// AddOpen is when the store will have been open for d, counting from from: time while it is
// shut does not count. A pickup window of an hour that starts five minutes before closing
// thus ends 55 minutes after the store next opens, not overnight while it is shut. A schedule
// that does not open again within its look-ahead counts plain time from there.
func (s *Schedule) AddOpen(from time.Time, d time.Duration) time.Time {
	t := from
	for range maxStretches {
		st := s.StatusAt(t)
		switch {
		case st.Open && (st.Closes.IsZero() || !t.Add(d).After(st.Closes)):
			return t.Add(d)
		case st.Open:
			d -= st.Closes.Sub(t)
			t = st.Closes
		case st.NextOpen.IsZero():
			return t.Add(d)
		default:
			t = st.NextOpen
		}
	}
	return t.Add(d)
}

// Weekly is one weekly opening as written: an ISO weekday (1 = Monday … 7 = Sunday) and
// "HH:MM" times.
type Weekly struct {
	Weekday     int
	Open, Close string
}

// Exception is one dated override as written: closed all day, or open from Open to Close.
type Exception struct {
	Date        string // "YYYY-MM-DD"
	Closed      bool
	Open, Close string
}

// Build makes a schedule in loc from hours as written (an API's, a stored row's).
func Build(loc *time.Location, weekly []Weekly, exceptions []Exception) (*Schedule, error) {
	s := &Schedule{Location: loc, Exceptions: make(map[Date][]Span, len(exceptions))}
	for _, h := range weekly {
		open, err1 := ParseClock(h.Open)
		closeAt, err2 := ParseClock(h.Close)
		if err1 != nil || err2 != nil || h.Weekday < 1 || h.Weekday > 7 {
			return nil, fmt.Errorf("opening hours %+v", h)
		}
		d := time.Weekday(h.Weekday % 7)
		s.Weekly[d] = append(s.Weekly[d], Span{Open: open, Close: closeAt})
	}
	for _, e := range exceptions {
		d, err := ParseDate(e.Date)
		if err != nil {
			return nil, fmt.Errorf("hours exception %+v", e)
		}
		spans := []Span{}
		if !e.Closed {
			open, err1 := ParseClock(e.Open)
			closeAt, err2 := ParseClock(e.Close)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("hours exception %+v", e)
			}
			spans = append(spans, Span{Open: open, Close: closeAt})
		}
		s.Exceptions[d] = spans
	}
	return s, nil
}

// OpenAt reports whether the store is open at t.
func (s *Schedule) OpenAt(t time.Time) bool { return s.StatusAt(t).Open }

func (s *Schedule) loc() *time.Location {
	if s.Location == nil {
		return time.UTC
	}
	return s.Location
}

// interval is an opening in absolute time, [start, end).
type interval struct{ start, end time.Time }

// intervals yields a schedule's openings in time order, one local date at a time.
type intervals struct {
	s       *Schedule
	loc     *time.Location
	next    Date // the next date to expand
	last    Date // the last date to expand
	pending []interval
}

func (it *intervals) fill() bool {
	for len(it.pending) == 0 {
		if after(it.next, it.last) {
			return false
		}
		d := it.next
		it.next = d.AddDays(1)
		for _, sp := range it.s.SpansOn(d) {
			start, end := Instant(it.loc, d, sp.Open), Instant(it.loc, d, sp.Close)
			if end.After(start) { // a span inside a spring-forward gap is empty
				it.pending = append(it.pending, interval{start, end})
			}
		}
		sort.Slice(it.pending, func(i, j int) bool { return it.pending[i].start.Before(it.pending[j].start) })
	}
	return true
}

func (it *intervals) peek() (interval, bool) {
	if !it.fill() {
		return interval{}, false
	}
	return it.pending[0], true
}

func (it *intervals) pop() (interval, bool) {
	iv, ok := it.peek()
	if ok {
		it.pending = it.pending[1:]
	}
	return iv, ok
}

func after(a, b Date) bool {
	if a.Year != b.Year {
		return a.Year > b.Year
	}
	if a.Month != b.Month {
		return a.Month > b.Month
	}
	return a.Day > b.Day
}

// Instant is the first instant at which the local clock in loc reads c on date d. A time
// skipped by a spring-forward change maps to the change itself (the clock first reads a later
// time then); a time that occurs twice on a fall-back night maps to its first occurrence.
// c = MinutesPerDay is midnight at the start of the next day.
func Instant(loc *time.Location, d Date, c Clock) time.Time {
	h, m := int(c)/60, int(c)%60
	t := time.Date(d.Year, d.Month, d.Day, h, m, 0, 0, loc)
	want := time.Date(d.Year, d.Month, d.Day, h, m, 0, 0, time.UTC)
	got := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
	switch {
	case got.Equal(want):
		// An ambiguous time (read twice on a fall-back night): take the first reading. Go
		// does today, but its documentation does not promise which, so check the zone before.
		start, _ := t.ZoneBounds()
		if !start.IsZero() {
			before := start.Add(-time.Nanosecond)
			_, prevOff := before.Zone()
			_, curOff := t.Zone()
			if prevOff > curOff {
				earlier := t.Add(-time.Duration(prevOff-curOff) * time.Second)
				if earlier.Before(start) && wallEqual(earlier.In(loc), want) {
					return earlier
				}
			}
		}
		return t
	case got.Before(want):
		// In a gap, normalised to before it: the clock first reads a later time when the
		// zone changes, at the end of the zone in effect at t.
		_, end := t.ZoneBounds()
		return end
	default:
		start, _ := t.ZoneBounds()
		return start
	}
}

func wallEqual(t, want time.Time) bool {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC).Equal(want)
}
