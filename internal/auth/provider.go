package auth

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// A retailer's shoppers and staff already sign in somewhere: an OpenID Connect provider
// (Auth0, Okta, Keycloak, Cognito, Entra ID...) that signs tokens with a private key and
// publishes the public keys as a JWK Set (its jwks_uri). Trusting that provider lets its tokens
// reach Handoff as they are, and Handoff never holds a key that could mint them. Handoff's own
// HMAC keys stay: they sign the tokens the pos-adapter mints for terminals, and
// `handoff token`'s.

// Provider is an identity provider whose tokens a KeySet accepts besides its own.
type Provider struct {
	// JWKSURLs are where the provider publishes its public keys: https, or http to a loopback
	// address (a provider on the same host, in development).
	JWKSURLs []string
	// Issuer is the provider's iss claim, exactly as it writes it.
	Issuer string
	// Audience is the aud the provider puts in tokens meant for Handoff (its API's identifier):
	// a token the same provider issued for another of the retailer's APIs is refused.
	Audience string
	// Refresh is how often the key set is fetched again. A key the provider withdrew is refused
	// from the next fetch, and a token already seen is verified again after Refresh. Default 5m.
	Refresh time.Duration
	// Client fetches the key set; nil means http.DefaultClient. Each fetch is given 10 s.
	Client *http.Client
	// Logger receives failed fetches; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultProviderRefresh is Provider.Refresh's default.
const DefaultProviderRefresh = 5 * time.Minute

// providerFetchTimeout bounds one fetch of the provider's key set.
const providerFetchTimeout = 10 * time.Second

// providerMethods are the signing algorithms accepted from a provider: public-key ones only, so
// that a token cannot be "signed" with a public key used as an HMAC secret.
var providerMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Validate checks p's settings, naming what is wrong.
func (p Provider) Validate() error {
	if len(p.JWKSURLs) == 0 {
		return errors.New("no JWK Set URL")
	}
	for _, raw := range p.JWKSURLs {
		if err := CheckJWKSURL(raw); err != nil {
			return fmt.Errorf("JWK Set URL %q: %w", raw, err)
		}
	}
	if p.Issuer == "" {
		return errors.New("the provider's issuer (iss) is needed with its JWK Set URL")
	}
	if p.Audience == "" {
		return errors.New("the audience (aud) the provider puts in tokens for Handoff is needed with its JWK Set URL")
	}
	if p.Refresh < 0 {
		return fmt.Errorf("refresh %v: want a positive interval", p.Refresh)
	}
	return nil
}

// CheckJWKSURL refuses a key set URL that is not https, unless it is on a loopback address:
// keys fetched in the clear could be replaced on the way, and with them anyone's tokens made.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return errors.New("want https (http only to a loopback address)")
	default:
		return errors.New("want https")
	}
}

// provider verifies one identity provider's tokens.
type provider struct {
	keys     jwkset.Storage // refreshed in the background, and on an unknown kid
	mu       sync.Mutex
	fetching chan struct{} // closed when the fetch for an unknown kid running now ends
	issuer   string
	parser   *jwt.Parser
	recheck  time.Duration
}

// maxJWKSBytes bounds a key set's response: a few keys take a few KB.
const maxJWKSBytes = 1 << 20

// jwksClient is c (nil: a client of its own) following only redirects that keep to the rule
// CheckJWKSURL sets for the URL itself, and reading at most maxJWKSBytes of a key set.
func jwksClient(c *http.Client) *http.Client {
	out := http.Client{}
	if c != nil {
		out = *c
	}
	next := out.CheckRedirect
	out.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if err := CheckJWKSURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirected to %s: %w", req.URL.Redacted(), err)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	rt := out.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	out.Transport = limitedBodies{rt}
	return &out
}

// limitedBodies cuts every response body at maxJWKSBytes, as an error.
type limitedBodies struct{ next http.RoundTripper }

func (l limitedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err == nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxJWKSBytes}
	}
	return resp, err
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// key is the public key a provider's token t is verified with: the published key its kid
// names, meant for signatures, of the algorithm t names, and of a size the algorithm allows.
// A token must name its key: without a kid, each published key would be tried, an encryption
// key and keys of other algorithms among them.
func (pv *provider) key(ctx context.Context, t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, &RejectedError{Reason: "no key id (kid) in its header"}
	}
	jwk, err := pv.keyRead(ctx, kid)
	if err != nil {
		if isContextErr(err) {
			return nil, fmt.Errorf("waiting for the identity provider's keys: %w", err)
		}
		return nil, &RejectedError{Reason: fmt.Sprintf("key %q is not one the identity provider publishes", rpcerr.Echo(kid))}
	}
	m := jwk.Marshal()
	switch {
	case m.USE == jwkset.UseEnc:
		return nil, &RejectedError{Reason: fmt.Sprintf("key %q is published for encryption, not signatures", rpcerr.Echo(kid))}
	case len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify):
		return nil, &RejectedError{Reason: fmt.Sprintf("key %q is not published to verify signatures (key_ops)", rpcerr.Echo(kid))}
	case m.ALG != "" && m.ALG.String() != t.Method.Alg():
		return nil, &RejectedError{Reason: fmt.Sprintf("key %q is published for %s, the token names %s", rpcerr.Echo(kid), m.ALG, t.Method.Alg())}
	}
	key := jwk.Key()
	if priv, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = priv.Public() // a provider that published a private key: only its public half is used
	}
	if pub, ok := key.(*rsa.PublicKey); ok && pub.Size()*8 < minRSABits {
		return nil, &RejectedError{Reason: fmt.Sprintf("key %q is %d-bit RSA, under the %d bits RFC 7518 asks", rpcerr.Echo(kid), pub.Size()*8, minRSABits)}
	}
	return key, nil
}

// keyRead looks kid up in the key set. A kid the set does not hold has the set fetched again
// (at most every 30 s, up to providerFetchTimeout), once for all callers: those arriving while
// a fetch runs wait for it too, and look again after it, so a rotated key's first tokens are
// not refused while one of them fetches it. Each caller waits only until its ctx ends; the
// fetch is not tied to any caller's ctx, so a client giving up early (or on purpose, every
// 30 s) cannot keep a rotated key from being loaded.
func (pv *provider) keyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	if jwk, ok := pv.lookup(ctx, kid); ok {
		return jwk, nil
	}
	pv.mu.Lock()
	fetched := pv.fetching
	if fetched == nil {
		fetched = make(chan struct{})
		pv.fetching = fetched
		go func() {
			// The store's KeyRead fetches the set for a kid it does not hold, when its
			// limiter allows.
			_, _ = pv.keys.KeyRead(context.WithoutCancel(ctx), kid)
			pv.mu.Lock()
			pv.fetching = nil
			pv.mu.Unlock()
			close(fetched)
		}()
	}
	pv.mu.Unlock()
	select {
	case <-fetched:
	case <-ctx.Done():
		return jwkset.JWK{}, ctx.Err()
	}
	if jwk, ok := pv.lookup(ctx, kid); ok {
		return jwk, nil
	}
	return jwkset.JWK{}, jwkset.ErrKeyNotFound
}

// lookup finds kid among the keys fetched so far, fetching nothing.
func (pv *provider) lookup(ctx context.Context, kid string) (jwkset.JWK, bool) {
	all, err := pv.keys.KeyReadAll(ctx)
	if err != nil {
		return jwkset.JWK{}, false
	}
	for _, k := range all {
		if k.Marshal().KID == kid {
			return k, true
		}
	}
	return jwkset.JWK{}, false
}

// isContextErr reports whether err is a caller's context ending (canceled, or its deadline).
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// minRSABits is the smallest RSA key RFC 7518 (3.3, 3.5) lets sign a token.
const minRSABits = 2048

// TrustsProvider reports whether ks accepts an identity provider's tokens, whose check may
// wait for the provider's key set.
func (ks *KeySet) TrustsProvider() bool { return ks.provider != nil }

// TrustProvider makes ks accept tokens signed by p's published keys, carrying p's issuer and
// audience and the claims Handoff's own tokens carry (role, and stores for staff). The key set
// is fetched now and every p.Refresh until ctx ends, and again (at most every 30 s) when a token
// names a key not in it: the provider rotating keys. A first fetch that fails is logged, not
// returned: Handoff starts while its provider is down, its own tokens work meanwhile, and the
// provider's are accepted once a fetch succeeds. Call it before ks verifies tokens.
func (ks *KeySet) TrustProvider(ctx context.Context, p Provider) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("identity provider: %w", err)
	}
	if p.Refresh == 0 {
		p.Refresh = DefaultProviderRefresh
	}
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, p.JWKSURLs, keyfunc.Override{
		Client:          jwksClient(p.Client),
		HTTPTimeout:     providerFetchTimeout,
		RefreshInterval: p.Refresh,
		// A token naming an unknown key fetches the set again, at most every 30 s, and waits at
		// most a fetch's time for its turn: a flood of made-up key ids is refused, not queued.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(30*time.Second), 1),
		RateLimitWaitMax:  providerFetchTimeout,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Error("identity provider's keys could not be fetched: its tokens are refused until they are", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("identity provider's keys: %w", err)
	}
	ks.provider = &provider{
		keys:   keys.Storage(),
		issuer: p.Issuer,
		parser: jwt.NewParser(
			jwt.WithValidMethods(providerMethods),
			jwt.WithIssuer(p.Issuer),
			jwt.WithAudience(p.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(leeway),
		),
		recheck: p.Refresh,
	}
	return nil
}

func (pv *provider) verify(ctx context.Context, token, alg string) (Principal, error) {
	if alg == "" {
		return Principal{}, &RejectedError{Reason: "malformed: no algorithm (alg) in its header"}
	}
	if !slices.Contains(providerMethods, alg) {
		return Principal{}, &RejectedError{Reason: fmt.Sprintf("signed with %q: only public-key signatures (RS, PS, ES, EdDSA) are taken from the identity provider", rpcerr.Echo(alg))}
	}
	var c claims
	_, err := pv.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) { return pv.key(ctx, t) })
	var rejected *RejectedError
	switch {
	case isContextErr(err):
		// Not refused: its caller stopped waiting for the key set.
		return Principal{}, fmt.Errorf("identity provider's token: %w", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, ErrExpired
	case errors.As(err, &rejected):
		return Principal{}, rejected
	case err != nil:
		return Principal{}, &RejectedError{Reason: providerReason(err, c)}
	}
	p, err := principalOf(c)
	if err != nil {
		return Principal{}, err
	}
	if _, delegated := strings.CutPrefix(p.Subject, delegatePrefix); delegated {
		// Only the pos-adapter, with Handoff's own key, speaks for someone else (OnBehalfOf).
		return Principal{}, &RejectedError{Reason: fmt.Sprintf("a subject starting %q is Handoff's own", delegatePrefix)}
	}
	return p, nil
}

// providerReason says why the provider's token was refused, in words safe to give its caller.
func providerReason(err error, c claims) string {
	switch {
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issuer (iss) is not the identity provider's"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "audience (aud) does not name Handoff"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not valid yet (nbf, iat)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && len(c.Audience) == 0:
		return "no audience (aud) naming Handoff"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "no expiry (exp)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "not signed by a key the identity provider publishes"
	}
	return "malformed"
}

// RejectedError is a token refused for a reason its caller may be told (a provider's token
// with the wrong audience, say). It is an ErrInvalidToken.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return ErrInvalidToken.Error() + ": " + e.Reason }

// Is makes a RejectedError an ErrInvalidToken.
func (e *RejectedError) Is(target error) bool { return target == ErrInvalidToken }

// algOf is the alg a token's header names, or "" when the header cannot be read.
func algOf(token string) string {
	var h struct {
		Alg string `json:"alg"`
	}
	decodeSegment(token, 0, &h)
	return h.Alg
}

// issuerOf is the iss a token claims, unverified, or "": only for saying why it was refused.
func issuerOf(token string) string {
	var c struct {
		Iss string `json:"iss"`
	}
	decodeSegment(token, 1, &c)
	return c.Iss
}

// decodeSegment decodes the i-th dot-separated segment of token as JSON into v, leaving v as it
// is when it is not JSON.
func decodeSegment(token string, i int, v any) {
	parts := strings.SplitN(token, ".", 3)
	if len(parts) < 3 {
		return
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[i], "="))
	if err != nil {
		return
	}
	_ = json.Unmarshal(b, v)
}
