package posadapter_test

import (
	"net/http"
	"testing"
	"time"
)

// Refused vendor requests (no signature, a bad one) are limited per client address, as
// refused terminal credentials are: each would otherwise cost a log line, and those with a
// well-formed signature a database read, without limit.
func TestUnsignedVendorRequestsAreLimitedPerAddress(t *testing.T) {
	e := newEnv(t)
	secret := e.vendorWebhook("ven-e5")
	body := vendorEvent("x", "sale", "LATTE-16", 1)
	codes := map[int]int{}
	for range 300 {
		code, _ := e.vendorPost("ven-e5", "", time.Now(), body, nil) // no signature header at all
		codes[code]++
	}
	t.Logf("300 unsigned posts from one address: %v", codes)
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("300 unsigned posts from one address were never limited (%v); want the address limited (429) as refused terminal credentials are", codes)
	}
	codes = map[int]int{}
	for range 300 {
		code, _ := e.vendorPost("ven-e5", secret+"x", time.Now(), body, nil) // well formed, wrong secret
		codes[code]++
	}
	t.Logf("300 badly signed posts from one address: %v", codes)
	// The address has its refusals' refill (10 a second) and no more.
	if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized] >= 50 {
		t.Fatalf("an address over its refusals had badly signed posts read and refused (%v); want them limited (429)", codes)
	}
}
