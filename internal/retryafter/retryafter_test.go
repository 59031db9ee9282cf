package retryafter_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/retryafter"
)

const limit = time.Hour

func TestRetryAfterReadsSecondsAndHTTPDatesCapped(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		value, date string
		want        time.Duration
		ok          bool
	}{
		{"", "", 0, false},
		{"120", "", 2 * time.Minute, true},
		{" 7 ", "", 7 * time.Second, true},
		{"0", "", 0, true},
		{"-5", "", 0, false},
		{"1.5", "", 0, false},
		{"soon", "", 0, false},
		{"86400", "", limit, true},
		{"99999999999999999999999", "", limit, true},
		{"10000000000", "", limit, true}, // more seconds than a Duration holds: not wrapped short
		{"18446744074", "", limit, true},
		{date(90 * time.Second), "", 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.RFC850), "", 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.ANSIC), "", 90 * time.Second, true},
		{date(-time.Minute), "", 0, true},
		{date(48 * time.Hour), "", limit, true},
		// Read against the vendor's Date: its clock runs 10 minutes behind ours.
		{date(-10*time.Minute + 30*time.Second), date(-10 * time.Minute), 30 * time.Second, true},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		if tc.date != "" {
			h.Set("Date", tc.date)
		}
		got, ok := retryafter.Parse(h, now, limit)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Retry-After %q (Date %q) = %v, %v; want %v, %v", tc.value, tc.date, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzRetryAfter: a Retry-After, whatever it says, asks for a wait between 0 and the
// cap; a number of seconds within the cap is that many seconds.
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Add("120", "")
	f.Add("99999999999999999999", "")
	f.Add(now.Add(time.Minute).Format(http.TimeFormat), now.Add(-time.Hour).Format(http.TimeFormat))
	f.Add("Sun, 06 Nov 1994 08:49:37 GMT", "Mon, 01 Jan 0001 00:00:00 GMT")
	f.Add("٣", "")
	f.Fuzz(func(t *testing.T, v, date string) {
		h := http.Header{}
		h.Set("Retry-After", v)
		h.Set("Date", date)
		d, ok := retryafter.Parse(h, now, limit)
		if d < 0 || d > limit || !ok && d != 0 {
			t.Fatalf("Retry-After %q (Date %q) = %v, %v", v, date, d, ok)
		}
	})
}
