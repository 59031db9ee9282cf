package edge_test

import (
	"fmt"
	"testing"

	"github.com/handoff-dev/handoff/internal/edge"
)

// An IPv6 client calling from ever new /64s of its /48 gets the site's allowance in all, not a
// fresh one each time; another site, and IPv4 clients, keep their own.
func TestAnIPv6SiteCannotTakeAFreshAllowanceFromEachOfItsAddresses(t *testing.T) {
	l := edge.NewAddressLimiter(0.001, 2) // next to no refill during the test
	allowed := 0
	for i := range 200 {
		if ok, _ := l.Allow(fmt.Sprintf("[2001:db8:aa:%x::1]:443", i)); ok {
			allowed++
		}
	}
	if allowed < 2 || allowed > 2*16 {
		t.Fatalf("200 /64s of one /48 were allowed %d calls; want at most the site's 16 addresses' bursts (32)", allowed)
	}
	if ok, _ := l.Allow("[2001:db8:bb::1]:443"); !ok {
		t.Fatal("a client of another /48 was refused")
	}
	for i := range 20 {
		if ok, _ := l.Allow(fmt.Sprintf("198.51.100.%d:443", i)); !ok {
			t.Fatalf("IPv4 client %d was refused", i)
		}
	}
	// A refused attempt charges nothing; attempts of a site are bounded as its calls are.
	failedAttempts := 0
	for i := range 200 {
		done, ok, _ := l.Attempt(fmt.Sprintf("[2001:db8:cc:%x::1]:443", i))
		if !ok {
			continue
		}
		failedAttempts++
		done(true)
	}
	if failedAttempts > 2*16 {
		t.Fatalf("200 /64s of one /48 made %d failed attempts; want at most 32", failedAttempts)
	}
}
