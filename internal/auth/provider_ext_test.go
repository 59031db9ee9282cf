package auth_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/auth/authtest"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
)

// handoffKeys is a key set of Handoff's own (HMAC), as every deployment has.
func handoffKeys(t *testing.T) *auth.KeySet {
	t.Helper()
	ks, err := auth.ParseKeySet("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// trusting is a key set trusting idp, its key set refreshed every refresh (0: the default).
func trusting(t *testing.T, idp *authtest.Provider, refresh time.Duration) *auth.KeySet {
	t.Helper()
	ks := handoffKeys(t)
	cfg := idp.Config()
	cfg.Refresh = refresh
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := ks.TrustProvider(ctx, cfg); err != nil {
		t.Fatalf("trust provider: %v", err)
	}
	return ks
}

func TestAProvidersTokensAreAcceptedBesideHandoffsOwn(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, 0)

	p, err := ks.Verify(idp.Sign("es-1", authtest.Customer("auth0|alice")))
	if err != nil || p.Role != auth.RoleCustomer || p.Subject != "auth0|alice" {
		t.Fatalf("customer token signed ES256 by the provider: %+v, %v", p, err)
	}
	p, err = ks.Verify(idp.Sign("rs-1", authtest.Staff("till-7", "sea-1", "sea-2")))
	if err != nil || p.Role != auth.RoleStaff || !slices.Equal(p.Stores, []string{"sea-1", "sea-2"}) {
		t.Fatalf("staff token signed RS256 by the provider: %+v, %v", p, err)
	}
	own, err := ks.Issue(auth.Principal{Subject: "bob", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ks.Verify(own); err != nil || p.Subject != "bob" {
		t.Fatalf("Handoff's own token beside a provider: %+v, %v", p, err)
	}
}

func TestAProvidersTokenIsRefusedUnlessEverythingInItHolds(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, 0)
	idp.AddKey("es-unpublished", jwt.SigningMethodES256, false)

	with := func(edit func(*authtest.Claims)) authtest.Claims {
		c := authtest.Customer("alice")
		edit(&c)
		return c
	}
	// An HMAC token "signed" with the provider's public key, naming its key and issuer: the
	// classic confusion of algorithms, which must not pass as either kind.
	confused := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, authtest.Customer("mallory"))
		tok.Header["kid"] = "rs-1"
		der, err := x509.MarshalPKIXPublicKey(idp.Key("rs-1").Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		s, err := tok.SignedString(pub)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	unsigned := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, authtest.Customer("mallory")).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	cases := map[string]struct {
		token  string
		reason string // in the refusal, "" when the caller is told nothing more
	}{
		"another issuer": {idp.Sign("es-1", with(func(c *authtest.Claims) { c.Issuer = "https://evil.example/" })), "issuer"},
		"no audience":    {idp.Sign("es-1", with(func(c *authtest.Claims) { c.Audience = nil })), "audience"},
		"another API's audience": {idp.Sign("es-1", with(func(c *authtest.Claims) { c.Audience = jwt.ClaimStrings{"https://payments.retailer.example"} })),
			"audience"},
		"no expiry":               {idp.Sign("es-1", with(func(c *authtest.Claims) { c.ExpiresAt = nil })), "expiry"},
		"not valid yet":           {idp.Sign("es-1", with(func(c *authtest.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) })), "not valid yet"},
		"a key never published":   {idp.Sign("es-unpublished", authtest.Customer("alice")), ""},
		"no role":                 {idp.Sign("es-1", with(func(c *authtest.Claims) { c.Role = "" })), "role"},
		"a staff token, no store": {idp.Sign("es-1", with(func(c *authtest.Claims) { c.Role = "staff" })), "stores"},
		"Handoff's delegate subject": {idp.Sign("es-1", with(func(c *authtest.Claims) {
			c.Role, c.Subject = "admin", "pos-adapter/terminal:t1"
		})), "Handoff's own"},
		"HMAC with the provider's public key": {confused, ""},
		"unsigned (alg none)":                 {unsigned, ""},
		"the signature of another token":      {reSigned(idp.Sign("es-1", authtest.Customer("alice")), idp.Sign("es-1", authtest.Customer("bob"))), ""},
	}
	for name, c := range cases {
		p, err := ks.Verify(c.token)
		if !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: %+v, %v; want ErrInvalidToken", name, p, err)
			continue
		}
		if c.reason != "" && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %v; want the reason (%s) named", name, err, c.reason)
		}
		// Refused again, not remembered.
		if _, err := ks.Verify(c.token); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s, again: %v", name, err)
		}
	}

	expired := idp.Sign("es-1", with(func(c *authtest.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour)) }))
	if _, err := ks.Verify(expired); !errors.Is(err, auth.ErrExpired) {
		t.Errorf("expired provider token: %v; want ErrExpired", err)
	}

	// At the door the caller is told why, naming the claim.
	_, _, err := auth.DefaultPolicy().Authorize(ks, cartv1connect.CartServiceCreateCartProcedure, "Bearer "+cases["another API's audience"].token)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "audience (aud)") {
		t.Errorf("CreateCart with another API's token: %v; want Unauthenticated naming the audience", err)
	}
}

// reSigned is token a's header and claims with token b's signature.
func reSigned(a, b string) string {
	return a[:strings.LastIndex(a, ".")] + b[strings.LastIndex(b, "."):]
}

func TestWithoutAProviderItsTokensAreRefused(t *testing.T) {
	idp := authtest.New(t)
	if _, err := handoffKeys(t).Verify(idp.Sign("es-1", authtest.Customer("alice"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a provider's token, no provider trusted: %v; want ErrInvalidToken", err)
	}
}

func TestAKeyTheProviderWithdrewIsRefusedFromItsNextRefresh(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, 200*time.Millisecond)
	tok := idp.Sign("es-1", authtest.Customer("alice"))
	if _, err := ks.Verify(tok); err != nil {
		t.Fatalf("before the key is withdrawn: %v", err)
	}
	idp.Withdraw("es-1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := ks.Verify(tok) // remembered, then verified again after a refresh interval
		if errors.Is(err, auth.ErrInvalidToken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token signed with a withdrawn key still verifies 20 s later: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The provider's other key is untouched.
	if _, err := ks.Verify(idp.Sign("rs-1", authtest.Customer("alice"))); err != nil {
		t.Fatalf("the key still published: %v", err)
	}
}

func TestAKeyTheProviderAddedIsFetchedWhenATokenNamesIt(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour) // no refresh due within the test
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	if p, err := ks.Verify(idp.Sign("es-2", authtest.Customer("alice"))); err != nil || p.Subject != "alice" {
		t.Fatalf("a token signed with a key published after the last fetch: %+v, %v", p, err)
	}
	// Made-up key ids do not fetch the set on every call.
	before := idp.Fetches()
	for i := range 20 {
		c := authtest.Customer("mallory")
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
		tok.Header["kid"] = "made-up-" + string(rune('a'+i))
		s, err := tok.SignedString(idp.Key("es-1").Signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Verify(s); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("a token naming a made-up key: %v", err)
		}
	}
	if n := idp.Fetches() - before; n > 1 {
		t.Fatalf("20 tokens naming made-up keys fetched the key set %d times; want at most once", n)
	}
}

func TestAProviderDownAtStartIsTrustedOnceItAnswers(t *testing.T) {
	idp := authtest.New(t)
	idp.SetDown(true)
	ks := trusting(t, idp, time.Hour)
	own, err := ks.Issue(auth.Principal{Subject: "bob", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Verify(own); err != nil {
		t.Fatalf("Handoff's own token while the provider is down: %v", err)
	}
	idp.SetDown(false)
	if p, err := ks.Verify(idp.Sign("es-1", authtest.Customer("alice"))); err != nil || p.Subject != "alice" {
		t.Fatalf("the provider's token once it answers: %+v, %v", p, err)
	}
}

func TestProviderSettingsAreChecked(t *testing.T) {
	good := auth.Provider{JWKSURLs: []string{"https://login.example/.well-known/jwks.json"}, Issuer: "https://login.example/", Audience: "handoff"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good settings: %v", err)
	}
	for name, c := range map[string]struct {
		edit func(*auth.Provider)
		want string
	}{
		"http elsewhere":   {func(p *auth.Provider) { p.JWKSURLs = []string{"http://login.example/jwks"} }, "want https"},
		"not a URL":        {func(p *auth.Provider) { p.JWKSURLs = []string{"login.example/jwks"} }, "not an absolute URL"},
		"no URL":           {func(p *auth.Provider) { p.JWKSURLs = nil }, "no JWK Set URL"},
		"no issuer":        {func(p *auth.Provider) { p.Issuer = "" }, "issuer"},
		"no audience":      {func(p *auth.Provider) { p.Audience = "" }, "audience"},
		"negative refresh": {func(p *auth.Provider) { p.Refresh = -time.Second }, "refresh"},
	} {
		p := good
		c.edit(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.want)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9/jwks"} {
		if err := auth.CheckJWKSURL(ok); err != nil {
			t.Errorf("%s: %v; a loopback address may be http", ok, err)
		}
	}
	if err := handoffKeys(t).TrustProvider(t.Context(), auth.Provider{JWKSURLs: []string{"http://login.example/jwks"}, Issuer: "i", Audience: "a"}); err == nil {
		t.Error("TrustProvider took settings Validate refuses")
	}
}
