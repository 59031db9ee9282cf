// Package retryafter reads the Retry-After header of an answer to one of Handoff's own outgoing
// calls (a vendor's POS webhook, a shopper-notification receiver) that asks for a wait.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Parse reads h's Retry-After (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date taken against
// the answer's Date when it has one (the server's own clock, so that a skew between the two
// clocks does not change the wait) and against now otherwise. ok is false for no header or one
// that does not parse. The wait is capped at limit: a server's mistake (a wait of years, or more
// seconds than a Duration holds) asks for limit, never for a short or a negative wait.
func Parse(h http.Header, now time.Time, limit time.Duration) (wait time.Duration, ok bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if digits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(limit/time.Second) { // too many digits: past the cap
			return limit, true
		}
		return time.Duration(n) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	return min(max(at.Sub(now), 0), limit), true
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
