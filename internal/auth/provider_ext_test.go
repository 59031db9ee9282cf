package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/auth/authtest"
	"github.com/handoff-dev/handoff/internal/testenv"
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
	idp.TrustedBy(t, ks, refresh)
	return ks
}

func TestAProvidersTokensAreAcceptedBesideHandoffsOwn(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, 0)

	p, err := ks.Verify(t.Context(), idp.Sign("es-1", authtest.Customer("auth0|alice")))
	if err != nil || p.Role != auth.RoleCustomer || p.Subject != "auth0|alice" {
		t.Fatalf("customer token signed ES256 by the provider: %+v, %v", p, err)
	}
	p, err = ks.Verify(t.Context(), idp.Sign("rs-1", authtest.Staff("till-7", "sea-1", "sea-2")))
	if err != nil || p.Role != auth.RoleStaff || !slices.Equal(p.Stores, []string{"sea-1", "sea-2"}) {
		t.Fatalf("staff token signed RS256 by the provider: %+v, %v", p, err)
	}
	own, err := ks.Issue(auth.Principal{Subject: "bob", Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ks.Verify(t.Context(), own); err != nil || p.Subject != "bob" {
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
		p, err := ks.Verify(t.Context(), c.token)
		if !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: %+v, %v; want ErrInvalidToken", name, p, err)
			continue
		}
		if c.reason != "" && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %v; want the reason (%s) named", name, err, c.reason)
		}
		// Refused again, not remembered.
		if _, err := ks.Verify(t.Context(), c.token); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s, again: %v", name, err)
		}
	}

	expired := idp.Sign("es-1", with(func(c *authtest.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour)) }))
	if _, err := ks.Verify(t.Context(), expired); !errors.Is(err, auth.ErrExpired) {
		t.Errorf("expired provider token: %v; want ErrExpired", err)
	}

	// At the door the caller is told why, naming the claim.
	_, _, err := auth.DefaultPolicy().Authorize(t.Context(), ks, cartv1connect.CartServiceCreateCartProcedure, "Bearer "+cases["another API's audience"].token)
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
	if _, err := handoffKeys(t).Verify(t.Context(), idp.Sign("es-1", authtest.Customer("alice"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a provider's token, no provider trusted: %v; want ErrInvalidToken", err)
	}
}

func TestAKeyTheProviderWithdrewIsRefusedFromItsNextRefresh(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, 200*time.Millisecond)
	tok := idp.Sign("es-1", authtest.Customer("alice"))
	if _, err := ks.Verify(t.Context(), tok); err != nil {
		t.Fatalf("before the key is withdrawn: %v", err)
	}
	idp.Withdraw("es-1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := ks.Verify(t.Context(), tok) // remembered, then verified again after a refresh interval
		if errors.Is(err, auth.ErrInvalidToken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token signed with a withdrawn key still verifies 20 s later: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The provider's other key is untouched.
	if _, err := ks.Verify(t.Context(), idp.Sign("rs-1", authtest.Customer("alice"))); err != nil {
		t.Fatalf("the key still published: %v", err)
	}
}

func TestAKeyTheProviderAddedIsFetchedWhenATokenNamesIt(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour) // no refresh due within the test
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	if p, err := ks.Verify(t.Context(), idp.Sign("es-2", authtest.Customer("alice"))); err != nil || p.Subject != "alice" {
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
		if _, err := ks.Verify(t.Context(), s); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("a token naming a made-up key: %v", err)
		}
	}
	if n := idp.Fetches() - before; n > 1 {
		t.Fatalf("20 tokens naming made-up keys fetched the key set %d times; want at most once", n)
	}
}

// A token naming a key not yet fetched waits for the fetch only as long as its caller does, and
// a caller giving up does not stop the fetch: else a client with short deadlines, sending a
// made-up key id every 30 s, would keep the provider's rotated keys from ever loading.
func TestACallerWaitsForANewKeyOnlyUntilItsDeadline(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour) // no refresh due within the test
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	release := idp.Stall()
	tok := idp.Sign("es-2", authtest.Customer("alice"))

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ks.Verify(ctx, tok)
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Verify waited %v for a stalled provider past its caller's 200ms deadline", waited)
	}
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a token whose key is still being fetched, its caller out of time: %v; want the deadline, not a refusal", err)
	}
	_, _, err = auth.DefaultPolicy().Authorize(ctx, ks, cartv1connect.CartServiceGetCartProcedure, "Bearer "+tok)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Authorize past its deadline: %v; want DeadlineExceeded", err)
	}

	// The fetch the first caller started goes on and loads the key for the callers after it.
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := ks.Verify(t.Context(), tok)
		if err == nil && p.Subject == "alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the provider answered, yet its new key's token is still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := idp.Fetches(); n != 2 {
		t.Fatalf("key set fetched %d times; want 2 (at start, and once for the new key)", n)
	}
}

// While one caller's token has the provider's rotated-in key fetched, the tokens of that key
// arriving meanwhile wait for the same fetch (until their own deadline) and are taken: they
// are not refused as naming a key the provider does not publish, which would sign their users out.
func TestTokensOfANewKeyArrivingDuringItsFetchWaitForIt(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour)
	idp.AddKey("es-2", jwt.SigningMethodES256, true)
	release := idp.Stall()

	first := make(chan error, 1)
	go func() {
		_, err := ks.Verify(t.Context(), idp.Sign("es-2", authtest.Customer("alice")))
		first <- err
	}()
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if idp.Fetches() < 2 {
			return errors.New("the first caller's fetch has not started")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() { time.Sleep(300 * time.Millisecond); release() }()
	if p, err := ks.Verify(ctx, idp.Sign("es-2", authtest.Customer("bob"))); err != nil || p.Subject != "bob" {
		t.Errorf("bob's token of the key being fetched for alice's: %+v, %v; want it taken once the fetch ends", p, err)
	}
	if err := <-first; err != nil {
		t.Errorf("alice: %v", err)
	}
	if n := idp.Fetches(); n != 2 {
		t.Errorf("key set fetched %d times; want 2 (at start, and once for the new key)", n)
	}
}

// A token refused without waiting for anything (malformed, or not signed by a trusted key) is
// refused as Unauthenticated whatever its caller's context: only a wait for the provider's
// keys cut short by the caller is its context's error.
func TestARefusalIsUnauthenticatedEvenWhenItsCallerIsOutOfTime(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	otherAPI := authtest.Customer("alice")
	otherAPI.Audience = jwt.ClaimStrings{"https://payments.retailer.example"}
	for _, tok := range []string{"not.a.token", idp.Sign("es-1", otherAPI)} {
		_, _, err := auth.DefaultPolicy().Authorize(ctx, ks, cartv1connect.CartServiceGetCartProcedure, "Bearer "+tok)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q, its caller's context done: %v; want Unauthenticated", tok, err)
		}
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
	if _, err := ks.Verify(t.Context(), own); err != nil {
		t.Fatalf("Handoff's own token while the provider is down: %v", err)
	}
	idp.SetDown(false)
	if p, err := ks.Verify(t.Context(), idp.Sign("es-1", authtest.Customer("alice"))); err != nil || p.Subject != "alice" {
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

// pubKey is a key a provider publishes, with its metadata.
type pubKey struct {
	kid, alg string
	use      jwkset.USE
	pub      crypto.PublicKey
}

// jwksServer publishes keys (their public halves), as a provider would.
func jwksServer(t *testing.T, keys ...pubKey) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
		for _, k := range keys {
			j, err := jwkset.NewJWKFromKey(k.pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.alg), USE: k.use}})
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			set.Keys = append(set.Keys, j.Marshal())
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks"
}

// trustURL is a key set trusting the provider publishing its keys at u.
func trustURL(t *testing.T, u string) *auth.KeySet {
	t.Helper()
	ks := handoffKeys(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := ks.TrustProvider(ctx, auth.Provider{JWKSURLs: []string{u}, Issuer: authtest.Issuer, Audience: authtest.Audience, Refresh: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return ks
}

// signWith signs c with key, naming kid in the header unless it is empty.
func signWith(t *testing.T, m jwt.SigningMethod, kid string, key crypto.Signer, c authtest.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A key the provider publishes for encryption ("use": "enc", e.g. Keycloak's RSA-OAEP key) is
// not a signing key: RFC 7517 4.2, OIDC Core 10.1.1. A token signed with it must be refused.
func TestAKeyPublishedForEncryptionDoesNotVerifyTokens(t *testing.T) {
	sig, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, _ := rsa.GenerateKey(rand.Reader, 2048)
	enc2, _ := rsa.GenerateKey(rand.Reader, 2048)
	ks := trustURL(t, jwksServer(t,
		pubKey{kid: "sig-1", alg: "ES256", use: jwkset.UseSig, pub: sig.Public()},
		pubKey{kid: "enc-1", alg: "RSA-OAEP", use: jwkset.UseEnc, pub: enc.Public()},
		pubKey{kid: "enc-2", use: jwkset.UseEnc, pub: enc2.Public()},
	))
	// Naming an encryption key that has no alg: keyfunc checks no "use".
	if p, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodRS256, "enc-2", enc2, authtest.Staff("mallory", "sea-1"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("token naming the provider's encryption key enc-2 (use enc, no alg): %+v, %v; want refused", p, err)
	}
	if _, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodES256, "sig-1", sig, authtest.Customer("alice"))); err != nil {
		t.Fatalf("the signing key: %v", err)
	}
	// Without a kid keyfunc tries every published key, the encryption key too.
	tok := signWith(t, jwt.SigningMethodRS256, "", enc, authtest.Staff("mallory", "sea-1"))
	if p, err := ks.Verify(t.Context(), tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("token without kid signed with the provider's encryption key (use enc): %+v, %v; want refused", p, err)
	}
}

// RFC 7518 3.3: a key of 2048 bits or larger MUST be used with RS256.
func TestAnRSAKeyUnder2048BitsIsRefused(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ks := trustURL(t, jwksServer(t, pubKey{kid: "rs-small", alg: "RS256", use: jwkset.UseSig, pub: small.Public()}))
	if p, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodRS256, "rs-small", small, authtest.Customer("alice"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("token signed by a 1024-bit RSA key: %+v, %v; want refused", p, err)
	}
}

// The JWK's alg pins the algorithm its key is used with; keyfunc checks it only when the token
// names a kid.
func TestAProviderTokenMustNameItsKeyWhoseAlgorithmItKeeps(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	ks := trustURL(t, jwksServer(t, pubKey{kid: "rs-1", alg: "RS256", use: jwkset.UseSig, pub: k.Public()}))
	if _, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodPS256, "rs-1", k, authtest.Customer("alice"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("PS256 naming an RS256 key: %v; want refused", err)
	}
	if p, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodPS256, "", k, authtest.Customer("alice"))); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("PS256 with no kid, the only key RS256: %+v, %v; want refused", p, err)
	}
}

// roundTrips answers a client's requests in memory: a provider reached over https whose
// answers a test decides.
type roundTrips func(*http.Request) *http.Response

func (f roundTrips) RoundTrip(r *http.Request) (*http.Response, error) { return f(r), nil }

func answer(r *http.Request, code int, body string, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}
}

// jwksOf is the key set publishing key as kid, ES256, for signatures, with padding bytes of an
// extra member.
func jwksOf(t *testing.T, kid string, key crypto.PublicKey, padding int) string {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: "ES256", USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	if err != nil {
		t.Fatal(err)
	}
	if padding == 0 {
		return string(b)
	}
	// Padding inside the object: a decoder reads it all before it has the set.
	return strings.TrimSuffix(string(b), "}") + `,"x-padding":"` + strings.Repeat("x", padding) + `"}`
}

// The key set's URL must be https (keys fetched in the clear could be replaced on the way, and
// anyone's tokens made with them): a redirect to plain http elsewhere is not followed.
func TestKeysAreNeverFetchedInTheClearAfterARedirect(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var plain atomic.Int64
	client := &http.Client{Transport: roundTrips(func(r *http.Request) *http.Response {
		if r.URL.Scheme == "http" {
			plain.Add(1)
			return answer(r, http.StatusOK, jwksOf(t, "es-1", k.Public(), 0), "Content-Type", "application/json")
		}
		return answer(r, http.StatusFound, "", "Location", "http://keys.login.example/jwks")
	})}
	ks := handoffKeys(t)
	if err := ks.TrustProvider(t.Context(), auth.Provider{JWKSURLs: []string{"https://login.example/.well-known/jwks.json"},
		Issuer: authtest.Issuer, Audience: authtest.Audience, Refresh: time.Hour, Client: client}); err != nil {
		t.Fatal(err)
	}
	p, err := ks.Verify(t.Context(), signWith(t, jwt.SigningMethodES256, "es-1", k, authtest.Customer("alice")))
	if !errors.Is(err, auth.ErrInvalidToken) || plain.Load() > 0 {
		t.Fatalf("the key set redirected to plain http: fetched in the clear %d times; token %+v, %v; want never fetched, the token refused", plain.Load(), p, err)
	}
}

// A key set is a few keys: an answer over a megabyte is refused, not read into memory whole
// at every refresh.
func TestAnOversizedKeySetIsRefused(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	padding := 0
	client := &http.Client{Transport: roundTrips(func(r *http.Request) *http.Response {
		return answer(r, http.StatusOK, jwksOf(t, "es-1", k.Public(), padding), "Content-Type", "application/json")
	})}
	trust := func() *auth.KeySet {
		ks := handoffKeys(t)
		if err := ks.TrustProvider(t.Context(), auth.Provider{JWKSURLs: []string{"https://login.example/jwks"},
			Issuer: authtest.Issuer, Audience: authtest.Audience, Refresh: time.Hour, Client: client}); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	tok := signWith(t, jwt.SigningMethodES256, "es-1", k, authtest.Customer("alice"))
	if _, err := trust().Verify(t.Context(), tok); err != nil {
		t.Fatalf("a key set of normal size: %v", err)
	}
	padding = 2 << 20
	if p, err := trust().Verify(t.Context(), tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a key set of 2 MiB: %+v, %v; want it refused and the token with it", p, err)
	}
}

// The provider's token signed with a shared secret is refused saying so, whichever HMAC it is.
func TestAProvidersHMACTokenIsRefusedSayingSo(t *testing.T) {
	idp := authtest.New(t)
	ks := trusting(t, idp, time.Hour)
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS512} {
		tok := jwt.NewWithClaims(m, authtest.Customer("alice"))
		tok.Header["kid"] = "hs-1"
		s, err := tok.SignedString([]byte("the provider's client secret, 32+ bytes long"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = auth.DefaultPolicy().Authorize(t.Context(), ks, cartv1connect.CartServiceCreateCartProcedure, "Bearer "+s)
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(msg, "HMAC") && !strings.Contains(msg, "public-key signatures") {
			t.Errorf("the provider's %s token: %v; want Unauthenticated saying it is signed with HMAC", m.Alg(), err)
		}
	}
}
