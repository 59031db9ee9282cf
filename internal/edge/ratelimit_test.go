package edge

import (
	"fmt"
	"testing"
	"time"
)

// A key whose bucket has filled up again is forgotten (it is what a new key gets); one still
// short of calls is kept.
func TestLimiterForgetsRefilledKeysAndKeepsBusyOnes(t *testing.T) {
	l := NewLimiter(1000, 2) // refills in 2 ms
	l.Allow("quick")
	slow := NewLimiter(0.001, 2)
	slow.Allow("in-debt")
	time.Sleep(10 * time.Millisecond)
	now := time.Now()
	l.mu.Lock()
	l.sweepLocked(now)
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("%d keys kept after their buckets refilled, want 0", n)
	}
	slow.mu.Lock()
	slow.sweepLocked(now)
	n = len(slow.buckets)
	slow.mu.Unlock()
	if n != 1 {
		t.Errorf("%d keys kept, want the one still short of calls", n)
	}
}

// The map never holds more than maxKeys: while it is full of keys that are still busy, a key not
// yet known is refused (with a wait), and the known ones go on being served.
func TestLimiterHoldsNoMoreThanMaxKeys(t *testing.T) {
	l := NewLimiter(0.001, 5)
	l.maxKeys = 100
	for i := range 100 {
		if ok, _ := l.Allow(fmt.Sprintf("10.0.0.%d", i)); !ok {
			t.Fatalf("key %d refused before the map was full", i)
		}
	}
	for i := range 1000 {
		if ok, wait := l.Allow(fmt.Sprintf("10.1.%d.%d", i/256, i%256)); ok || wait <= 0 {
			t.Fatalf("new key %d allowed (%v, wait %v) with the map full of busy keys", i, ok, wait)
		}
	}
	if ok, _ := l.Allow("10.0.0.7"); !ok {
		t.Error("a known key with calls left was refused")
	}
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 100 {
		t.Errorf("the map holds %d keys, want 100", n)
	}
}

// Attempts by a key with no failures to pay off are free, up to attemptsAtOnce times the burst at once. Once it has
// some, attempts under way count against the calls left, so a burst of simultaneous attempts
// gets no more than those; attempts that succeed cost nothing, failed ones are charged.
func TestAttemptsUnderWayCountAgainstTheCallsLeftOnceSomeFailed(t *testing.T) {
	l := NewLimiter(0.001, 4)
	var free []func(bool)
	for i := range attemptsAtOnce * 4 {
		done, ok, _ := l.Attempt("counter")
		if !ok {
			t.Fatalf("attempt %d at once refused with no failures to pay off", i)
		}
		free = append(free, done)
	}
	if _, ok, wait := l.Attempt("counter"); ok || wait <= 0 {
		t.Fatalf("attempt %d at once allowed (wait %v); want at most %d under way", attemptsAtOnce*4+1, wait, attemptsAtOnce*4)
	}
	for _, done := range free {
		done(false)
	}

	first, _, _ := l.Attempt("terminal")
	first(true) // one failure: 3 calls left
	var dones []func(bool)
	for range 3 {
		done, ok, _ := l.Attempt("terminal")
		if !ok {
			t.Fatal("an attempt refused with calls left")
		}
		dones = append(dones, done)
	}
	if _, ok, wait := l.Attempt("terminal"); ok || wait <= 0 {
		t.Fatalf("a fourth attempt under way alongside three, with 3 calls left: allowed %v, wait %v", ok, wait)
	}
	dones[0](false) // succeeded: free again
	done, ok, _ := l.Attempt("terminal")
	if !ok {
		t.Fatal("an attempt refused after one under way succeeded")
	}
	done(true)
	dones[1](true)
	dones[2](true)
	if _, ok, _ := l.Attempt("terminal"); ok {
		t.Fatal("an attempt allowed after four failures used up the burst of 4")
	}
}

func TestClientKeyIsTheIPv4AddressOrTheIPv6Slash64(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:5000":                  "192.0.2.7",
		"[::ffff:192.0.2.7]:5000":         "192.0.2.7",
		"[2001:db8:1:2:aaaa::1]:443":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:bbbb:cccc::9]:443": "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":               "fe80::/64",
		"not an address":                  "not an address",
	} {
		if got := ClientKey(addr); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q", addr, got, want)
		}
	}
}
