package posadapter

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/auth"
)

// A terminal's forwarded calls reuse one staff token per store while it has more than half its
// lifetime left; it names only that store, and a new one is minted after.
func TestMintedStaffTokensAreReusedForHalfTheirLifetime(t *testing.T) {
	keys, err := auth.ParseKeySet("k:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	var mt mintedTokens
	const ttl = 400 * time.Millisecond
	first, err := mt.get(keys, "till-1", "s1", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := mt.get(keys, "till-1", "s1", ttl); again != first {
		t.Fatal("a fresh token was minted while the last one had most of its life left")
	}
	other, _ := mt.get(keys, "till-1", "s2", ttl)
	if other == first {
		t.Fatal("two stores share one token")
	}
	for tok, store := range map[string]string{first: "s1", other: "s2"} {
		p, err := keys.Verify(t.Context(), tok)
		if err != nil || p.Role != auth.RoleStaff || p.Subject != "till-1" || !slices.Equal(p.Stores, []string{store}) {
			t.Fatalf("token for %s: %+v, %v", store, p, err)
		}
		if left := time.Until(p.Expires); left > ttl+time.Second {
			t.Fatalf("token for %s lives %s, more than its TTL", store, left)
		}
	}
	time.Sleep(ttl/2 + 50*time.Millisecond)
	// JWT times are whole seconds: a renewed token may read the same, so check the renewal
	// time moved on rather than comparing token strings.
	before := mt.m["till-1\x00s1"].renewAt
	if _, err := mt.get(keys, "till-1", "s1", ttl); err != nil {
		t.Fatal(err)
	}
	if after := mt.m["till-1\x00s1"].renewAt; !after.After(before) {
		t.Fatal("a token past half its lifetime was handed out again")
	}
}
