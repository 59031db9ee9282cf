package notify

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// FuzzParseRetryAfter: a receiver's Retry-After is never read as a shorter wait than it asks
// for, up to the dispatcher's longest backoff (it waits at least what is asked, capped at
// MaxBackoff, 15 minutes by default), and never as a negative one.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Add("120")
	f.Add("0")
	f.Add("-5")
	f.Add(now.Add(time.Hour).Format(http.TimeFormat))
	f.Add("Sun, 06 Nov 1994 08:49:37 GMT")
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v", v, d)
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 {
			asked := 15 * time.Minute
			if n < uint64(asked/time.Second) {
				asked = time.Duration(n) * time.Second
			}
			if d < asked {
				t.Fatalf("Retry-After: %s read as a wait of %v, less than the %v asked (up to the 15m cap)", v, d, asked)
			}
		}
	})
}

// A receiver asking for a very long wait (more seconds than a Duration holds, or than 64 bits
// hold) waits the longest: it was read as asking for none, or for a fraction of a second.
func TestRetryAfterOfHugeSecondsIsNotShort(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, v := range []string{"10000000000", "18446744074", "99999999999999999999999"} {
		if d := parseRetryAfter(v, now); d < 15*time.Minute {
			t.Errorf("Retry-After: %s read as %v", v, d)
		}
	}
}
