package posadapter

import (
	"net/http"
	"testing"
	"time"
)

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
		{"86400", "", webhookMaxRetryAfter, true},
		{"99999999999999999999999", "", webhookMaxRetryAfter, true},
		{date(90 * time.Second), "", 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.RFC850), "", 90 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.ANSIC), "", 90 * time.Second, true},
		{date(-time.Minute), "", 0, true},
		{date(48 * time.Hour), "", webhookMaxRetryAfter, true},
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
		got, ok := retryAfter(h, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Retry-After %q (Date %q) = %v, %v; want %v, %v", tc.value, tc.date, got, ok, tc.want, tc.ok)
		}
	}
}
