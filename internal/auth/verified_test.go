package auth

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func testKeys(t *testing.T, fill byte) *KeySet {
	t.Helper()
	ks, err := ParseKeySet("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(fill), 32))))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// A token verified once is answered from the cache, still checked for expiry on every use,
// never shared with another key set, and callers cannot change what the cache holds.
func TestVerifiedTokensAreRememberedButStillExpire(t *testing.T) {
	ks := testKeys(t, 'a')
	tok, err := ks.Issue(Principal{Subject: "till-1", Role: RoleStaff, Stores: []string{"s1", "s2"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ks.Verify(t.Context(), tok)
	if err != nil || p.Subject != "till-1" || !slices.Equal(p.Stores, []string{"s1", "s2"}) {
		t.Fatalf("first verify: %+v, %v", p, err)
	}
	p.Stores[0] = "someone-elses-store"
	again, err := ks.Verify(t.Context(), tok)
	if err != nil || !slices.Equal(again.Stores, []string{"s1", "s2"}) || again.Expires != p.Expires {
		t.Fatalf("cached verify: %+v, %v; want the token's own claims", again, err)
	}
	if _, ok := ks.verified.get(tok); !ok {
		t.Fatal("a verified token was not remembered")
	}

	// Another key set (another deployment, a rotated-out key) does not see it.
	if _, err := testKeys(t, 'b').Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of another key verified by a key set that never saw it: %v", err)
	}

	// Expiry is checked on the cached path too (leeway included).
	cached, _ := ks.verified.get(tok)
	cached.p.Expires = time.Now().Add(-leeway - time.Second)
	ks.verified.put(tok, cached)
	if _, err := ks.Verify(t.Context(), tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired cached token: %v, want ErrExpired", err)
	}
	if _, ok := ks.verified.get(tok); ok {
		t.Fatal("an expired token stayed in the cache")
	}

	// Tokens that fail are never remembered.
	if _, err := ks.Verify(t.Context(), tok+"x"); err == nil {
		t.Fatal("tampered token verified")
	}
	if _, ok := ks.verified.get(tok + "x"); ok {
		t.Fatal("a token that failed was remembered")
	}
}

func TestVerifiedCacheStaysBounded(t *testing.T) {
	var v verifiedCache
	for i := range verifiedCap + 10 {
		v.put(strings.Repeat("t", 1+i%7)+string(rune('a'+i%26))+time.Duration(i).String(), verifiedToken{p: Principal{Subject: "x"}})
	}
	if n := len(v.m); n > verifiedCap {
		t.Fatalf("%d cached tokens, cap %d", n, verifiedCap)
	}
}
