package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
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
	// Bad signatures for a store with a secret are counted per address and store: its burst
	// (50) and refill (10 a second), and no more.
	if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized] > 80 {
		t.Fatalf("badly signed posts for one store from one address: %v; want them limited (429) after about 50", codes)
	}
}

// One store's refused vendor signatures (its secret rotated, its vendor's backlog still signed
// with the old one) do not lock out correctly signed events of other stores posted from the same
// address (a vendor's cloud posts for many stores from a few addresses). Before, every refusal
// was charged to the address alone, and the others' events got 429.
func TestOneStoresStaleVendorSecretDoesNotLockOutOtherStoresFromTheSameAddress(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "lim-good", map[string]int32{"LATTE-16": 100})
	s.addStore(t, "lim-stale", map[string]int32{"LATTE-16": 100})
	good := e.vendorWebhook("lim-good")
	stale := e.vendorWebhook("lim-stale")
	for i := range 80 {
		e.vendorPost("lim-stale", stale+"old", time.Now(), vendorEvent(fmt.Sprintf("s-%d", i), "sale", "LATTE-16", 1), nil)
	}
	if code, out := e.vendorPost("lim-good", good, time.Now(), vendorEvent("g-1", "sale", "LATTE-16", 1), nil); code != http.StatusOK || out.Status != "applied" {
		t.Fatalf("a correctly signed sale of another store from the same address: HTTP %d %+v; want 200 applied", code, out)
	}
}

// A store's misconfigured vendor, posting from the address its terminals share (an on-premise
// POS behind the store's NAT), does not lock out those terminals, even just after the adapter
// restarted (no credential yet seen working). Before, vendor refusals and refused terminal
// credentials shared one limit per address.
func TestAStoresStaleVendorDoesNotLockOutItsTerminals(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s))
	s.addStore(t, "lim-nat", map[string]int32{"LATTE-16": 100})
	_, cred := e.register("till-1", "lim-nat")
	stale := e.vendorWebhook("lim-nat")
	e.restart()
	for i := range 80 {
		e.vendorPost("lim-nat", stale+"old", time.Now(), vendorEvent(fmt.Sprintf("s-%d", i), "sale", "LATTE-16", 1), nil)
		e.vendorPost("lim-nat", "", time.Now(), vendorEvent(fmt.Sprintf("u-%d", i), "sale", "LATTE-16", 1), nil)
	}
	c := e.terminal(protocol{name: "connect"}, cred)
	if _, err := c.ListStoreOrders(context.Background(), connect.NewRequest(&posv1.ListStoreOrdersRequest{StoreId: "lim-nat"})); connect.CodeOf(err) == connect.CodeResourceExhausted {
		t.Fatalf("a registered terminal with a valid credential was refused: %v; want it admitted (its store's vendor's refusals are not its own)", err)
	}
}
