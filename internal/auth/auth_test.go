package auth_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
)

func keySet(t *testing.T, kid string, fill byte) *auth.KeySet {
	t.Helper()
	ks, err := auth.ParseKeySet(kid + ":" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(fill), 32))))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestIssuedTokensVerifyWithTheirClaims(t *testing.T) {
	ks := keySet(t, "k1", 'a')
	tok, err := ks.Issue(auth.Principal{Subject: "staff-7", Role: auth.RoleStaff, Stores: []string{"sea-1", "sea-2"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ks.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "staff-7" || p.Role != auth.RoleStaff || !p.ActsForStore("sea-2") || p.ActsForStore("sea-3") || p.TokenID == "" {
		t.Fatalf("principal = %+v", p)
	}
}

func TestForgedExpiredAndMalformedTokensAreRejected(t *testing.T) {
	ks := keySet(t, "k1", 'a')
	other := keySet(t, "k1", 'b') // same key id, another secret
	good, _ := ks.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
	forged, _ := other.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
	expired, _ := ks.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, -time.Hour)
	parts := strings.Split(good, ".")
	// Upgrade the role in the body without re-signing.
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(body), "customer", "admin", 1))) + "." + parts[2]
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "role": "admin", "iss": "handoff", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)

	if _, err := ks.Verify(t.Context(), good); err != nil {
		t.Fatalf("good token: %v", err)
	}
	for name, tok := range map[string]string{"other key": forged, "tampered": tampered, "alg none": none, "garbage": "a.b.c", "empty": ""} {
		if _, err := ks.Verify(t.Context(), tok); err == nil {
			t.Errorf("%s token accepted", name)
		}
	}
	if _, err := ks.Verify(t.Context(), expired); err != auth.ErrExpired {
		t.Errorf("expired token: err = %v, want ErrExpired", err)
	}
}

func TestKeyRotationAcceptsOldKeysAndSignsWithTheFirst(t *testing.T) {
	old := keySet(t, "old", 'a')
	oldTok, _ := old.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
	both, err := auth.ParseKeySet("new:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("n", 32))) + ",old:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := both.Verify(t.Context(), oldTok); err != nil {
		t.Fatalf("token of the old key rejected during rotation: %v", err)
	}
	newTok, _ := both.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
	if _, err := old.Verify(t.Context(), newTok); err == nil {
		t.Fatal("new tokens are still signed with the old key")
	}
	if _, err := auth.ParseKeySet("short:" + base64.StdEncoding.EncodeToString([]byte("tiny"))); err == nil {
		t.Fatal("a 4-byte key was accepted")
	}
}

func TestPolicyGivesEachCallerTheRightCode(t *testing.T) {
	ks := keySet(t, "k1", 'a')
	tok := func(p auth.Principal) string {
		s, err := ks.Issue(p, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s
	}
	customer := tok(auth.Principal{Subject: "alice", Role: auth.RoleCustomer})
	staff := tok(auth.Principal{Subject: "t1", Role: auth.RoleStaff, Stores: []string{"sea-1"}})
	admin := tok(auth.Principal{Subject: "ops", Role: auth.RoleAdmin})
	pol := auth.DefaultPolicy()
	cases := []struct {
		method, authz string
		want          codes.Code
	}{
		{"/handoff.catalog.v1.CatalogService/ListProducts", "", codes.OK},
		{"/handoff.catalog.v1.CatalogService/ListProducts", "Bearer junk", codes.Unauthenticated},
		{"/handoff.cart.v1.CartService/GetCart", "", codes.Unauthenticated},
		{"/handoff.cart.v1.CartService/GetCart", customer, codes.OK},
		{"/handoff.cart.v1.CartService/GetCart", staff, codes.PermissionDenied},
		{"/handoff.cart.v1.CartService/GetCart", "Basic abc", codes.Unauthenticated},
		{"/handoff.fulfilment.v1.StoreOrderService/AcceptOrder", customer, codes.PermissionDenied},
		{"/handoff.fulfilment.v1.StoreOrderService/AcceptOrder", staff, codes.OK},
		{"/handoff.fulfilment.v1.StoreOrderService/AcceptOrder", admin, codes.OK},
		{"/handoff.catalog.v1.CatalogAdminService/CreateProduct", customer, codes.PermissionDenied},
		{"/handoff.catalog.v1.CatalogAdminService/CreateProduct", staff, codes.PermissionDenied},
		{"/handoff.catalog.v1.CatalogAdminService/CreateProduct", admin, codes.OK},
		{"/handoff.secret.v1.NewService/Anything", admin, codes.PermissionDenied},
	}
	for _, c := range cases {
		_, _, err := pol.Authorize(t.Context(), ks, c.method, c.authz)
		if got := status.Code(err); got != c.want {
			t.Errorf("%s with %.20q: %v (%v), want %v", c.method, c.authz, got, err, c.want)
		}
	}
}

// A customer token's subject is the customer id every order carries (at most
// MaxCustomerIDLen characters): a longer one would let a shopper fill carts that no checkout
// can ever turn into an order, so it is refused when issued and, signed elsewhere with the
// deployment's key, when verified.
func TestACustomerSubjectLongerThanAnOrderTakesIsRefused(t *testing.T) {
	ks := keySet(t, "k1", 'a')
	fits := strings.Repeat("é", auth.MaxCustomerIDLen) // characters, not bytes
	if _, err := ks.Issue(auth.Principal{Subject: fits, Role: auth.RoleCustomer}, time.Hour); err != nil {
		t.Fatalf("a subject of %d characters: %v", auth.MaxCustomerIDLen, err)
	}
	long := strings.Repeat("a", auth.MaxCustomerIDLen-11) + "@example.com"
	if _, err := ks.Issue(auth.Principal{Subject: long, Role: auth.RoleCustomer}, time.Hour); err == nil {
		t.Fatalf("issued a customer token whose subject has %d characters", len(long))
	}
	signed := func(sub string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "role": "customer", "iss": auth.Issuer,
			"exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString([]byte(strings.Repeat("a", 32)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := ks.Verify(t.Context(), signed(fits)); err != nil {
		t.Fatalf("verify a subject of %d characters: %v", auth.MaxCustomerIDLen, err)
	}
	if p, err := ks.Verify(t.Context(), signed(long)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("verify a customer subject of %d characters = %+v, %v; want ErrInvalidToken", len(long), p, err)
	}
}

// A subject with a control character (a NUL, say) is refused when issued and when verified: no
// table can store a NUL, and the holder would otherwise learn that only from a refusal of
// their first cart that names none of its fields. Every role: staff and admin subjects are
// written into order histories.
func TestASubjectWithAControlCharacterIsRefused(t *testing.T) {
	ks := keySet(t, "k1", 'a')
	for _, sub := range []string{"eve\x00x", "eve\nadmin", "\x7f"} {
		for _, role := range []auth.Role{auth.RoleCustomer, auth.RoleStaff, auth.RoleAdmin} {
			p := auth.Principal{Subject: sub, Role: role, Stores: []string{"sea-capitol-hill-01"}}
			if _, err := ks.Issue(p, time.Hour); err == nil {
				t.Errorf("issued a %s token for subject %q", role, sub)
			}
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "role": string(role), "stores": p.Stores,
				"iss": auth.Issuer, "exp": time.Now().Add(time.Hour).Unix()})
			tok.Header["kid"] = "k1"
			signed, err := tok.SignedString([]byte(strings.Repeat("a", 32)))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := ks.Verify(t.Context(), signed); !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), "sub") {
				t.Errorf("verify a %s token for subject %q = %+v, %v; want ErrInvalidToken naming the subject (sub)", role, sub, got, err)
			}
		}
	}
}
