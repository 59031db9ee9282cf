package posadapter_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"
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
	for range 1000 { // past the address's room, 16 stores' worth (800)
		code, _ := e.vendorPost("ven-e5", "", time.Now(), body, nil) // no signature header at all
		codes[code]++
	}
	t.Logf("1000 unsigned posts from one address: %v", codes)
	if codes[http.StatusTooManyRequests] == 0 {
		t.Fatalf("1000 unsigned posts from one address were never limited (%v); want the address limited (429)", codes)
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
	good := e.vendorWebhook("lim-good")
	// A partial rotation: five stores' secrets changed, their vendor's backlog signed with the old.
	for k := range 5 {
		store := fmt.Sprintf("lim-stale-%d", k)
		s.addStore(t, store, map[string]int32{"LATTE-16": 100})
		stale := e.vendorWebhook(store)
		for i := range 80 {
			e.vendorPost(store, stale+"old", time.Now(), vendorEvent(fmt.Sprintf("s-%d", i), "sale", "LATTE-16", 1), nil)
		}
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

// vendorPostFrom is vendorPost from client (X-Forwarded-For, the adapter trusting loopback).
func (e *env) vendorPostFrom(client, store, secret string, body []byte) int {
	e.t.Helper()
	r, _ := http.NewRequest(http.MethodPost, e.base+posadapter.VendorWebhookPath+store, bytes.NewReader(body))
	r.Header.Set(posadapter.SignatureHeader, posadapter.Sign(secret, time.Now(), body))
	r.Header.Set("X-Forwarded-For", client)
	res, err := e.http1.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// slowVendorRefusals trusts loopback's X-Forwarded-For and gives refused vendor signatures a
// small room (5 at once and 1 a second per address and store; four stores' worth, 20 and 4, per
// address; 320 and 64 per IPv6 site), so that what the limits let through is measured against
// the time taken on a slow machine as on a fast one.
func slowVendorRefusals(c *posadapter.Config) {
	_, n, _ := net.ParseCIDR("127.0.0.1/32")
	c.TrustedProxies = []net.IPNet{*n}
	c.VendorRefusalRate, c.VendorRefusalBurst, c.VendorAddressRoom = 1, 5, 4
}

// What one address may cost in refused signatures (a read of a store's secret, a log line each)
// is bounded whatever stores it names: the limit per address and store does not multiply it by
// the chain's stores (their ids are public). Before, one address got 50 at once and 10 a second
// for every store with a secret.
func TestRefusedVendorSignaturesFromOneAddressAreBoundedAcrossStores(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s), withConfig(slowVendorRefusals))
	const stores, rounds = 20, 50
	secrets := map[string]string{}
	for i := range stores {
		id := fmt.Sprintf("lim-s%02d", i)
		s.addStore(t, id, map[string]int32{"LATTE-16": 100})
		secrets[id] = e.vendorWebhook(id)
	}
	codes := map[int]int{}
	start := time.Now()
	for round := range rounds {
		for id, sec := range secrets {
			codes[e.vendorPostFrom("198.51.100.7", id, sec+"x", vendorEvent(fmt.Sprint(round), "sale", "LATTE-16", 1))]++
		}
	}
	took := time.Since(start)
	t.Logf("%d badly signed posts from one address over %d stores in %s: %v", stores*rounds, stores, took.Round(time.Millisecond), codes)
	// The address's room: 4 stores' worth at once (20), and 4 a second.
	if bound := 20 + int(4*took.Seconds()) + 2; codes[http.StatusUnauthorized] > bound {
		t.Fatalf("one address had %d bad signatures read and refused over %d stores in %s; want at most about %d", codes[http.StatusUnauthorized], stores, took, bound)
	}
}

// The same bound holds for a site (an IPv6 /48) that takes a fresh /64 for each post.
func TestRefusedVendorSignaturesFromOneIPv6SiteAreBounded(t *testing.T) {
	var s services
	e := newEnv(t, withServices(&s), withConfig(slowVendorRefusals))
	s.addStore(t, "lim-v6", map[string]int32{"LATTE-16": 100})
	secret := e.vendorWebhook("lim-v6")
	const posts = 1000
	codes := map[int]int{}
	start := time.Now()
	for i := range posts {
		codes[e.vendorPostFrom(fmt.Sprintf("2001:db8:1:%x::1", i), "lim-v6", secret+"x", vendorEvent("x", "sale", "LATTE-16", 1))]++
	}
	took := time.Since(start)
	t.Logf("%d badly signed posts from one /48 in %s: %v", posts, took.Round(time.Millisecond), codes)
	// The site's room: 16 addresses' (320 at once, 64 a second).
	if bound := 320 + int(64*took.Seconds()) + 10; codes[http.StatusUnauthorized] > bound {
		t.Fatalf("one IPv6 /48 had %d of %d bad signatures read and refused in %s; want the site limited, at most about %d", codes[http.StatusUnauthorized], posts, took, bound)
	}
}
