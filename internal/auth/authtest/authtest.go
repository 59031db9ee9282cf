// Package authtest plays a retailer's identity provider in tests: it publishes public keys as a
// JWK Set over HTTP on a loopback port, as an OpenID Connect provider does at its jwks_uri, and
// signs tokens with the private halves. Keys can be published, withdrawn and added while a
// test runs.
package authtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/handoff-dev/handoff/internal/auth"
)

// Issuer and Audience are what the provider's tokens carry unless a test says otherwise.
const (
	Issuer   = "https://login.retailer.example/"
	Audience = "https://api.handoff.example"
)

// Provider is a running identity provider.
type Provider struct {
	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	keys      map[string]Key // by kid
	published map[string]bool
	down      atomic.Bool
	fetches   atomic.Int64
	stall     atomic.Pointer[chan struct{}] // while set, fetches wait for it to close
}

// Key is one of the provider's signing keys.
type Key struct {
	ID     string
	Method jwt.SigningMethod
	Signer crypto.Signer
}

// New starts a provider publishing one ES256 key, "es-1", and one RS256 key, "rs-1", until t ends.
func New(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{t: t, keys: map[string]Key{}, published: map[string]bool{}}
	p.AddKey("es-1", jwt.SigningMethodES256, true)
	p.AddKey("rs-1", jwt.SigningMethodRS256, true)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serveJWKS))
	t.Cleanup(p.srv.Close)
	return p
}

// URL is the provider's JWK Set URL.
func (p *Provider) URL() string { return p.srv.URL + "/.well-known/jwks.json" }

// Config is the auth.Provider trusting p.
func (p *Provider) Config() auth.Provider {
	return auth.Provider{JWKSURLs: []string{p.URL()}, Issuer: Issuer, Audience: Audience}
}

// TrustedBy makes ks trust p until the test ends, its key set fetched again every refresh (0:
// the default).
func (p *Provider) TrustedBy(t testing.TB, ks *auth.KeySet, refresh time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := p.Config()
	cfg.Refresh = refresh
	if err := ks.TrustProvider(ctx, cfg); err != nil {
		t.Fatalf("authtest: trust the provider: %v", err)
	}
}

// Fetches counts the key set's fetches so far.
func (p *Provider) Fetches() int64 { return p.fetches.Load() }

// SetDown makes the provider answer 503 (down) or its key set again.
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

// Stall makes the key set's fetches from now on wait, answering only once the returned func is
// called (at the latest when the test ends): a provider that is slow to answer.
func (p *Provider) Stall() (release func()) {
	ch := make(chan struct{})
	p.stall.Store(&ch)
	once := sync.OnceFunc(func() {
		p.stall.CompareAndSwap(&ch, nil)
		close(ch)
	})
	p.t.Cleanup(once)
	return once
}

// AddKey makes a new signing key (ES256 or RS256) with id kid, published in the set or not.
func (p *Provider) AddKey(kid string, method jwt.SigningMethod, publish bool) Key {
	p.t.Helper()
	var (
		signer crypto.Signer
		err    error
	)
	switch method {
	case jwt.SigningMethodES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwt.SigningMethodRS256:
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		p.t.Fatalf("authtest: no keys for %s", method.Alg())
	}
	if err != nil {
		p.t.Fatalf("authtest: make key: %v", err)
	}
	k := Key{ID: kid, Method: method, Signer: signer}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
	p.published[kid] = publish
	return k
}

// Withdraw takes key kid out of the published set (the provider rotated it out).
func (p *Provider) Withdraw(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published[kid] = false
}

// Key returns key kid.
func (p *Provider) Key(kid string) Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[kid]
	if !ok {
		p.t.Fatalf("authtest: no key %q", kid)
	}
	return k
}

// Claims are a token's claims: Handoff's role and stores, and the registered ones.
type Claims struct {
	Role   string   `json:"role,omitempty"`
	Stores []string `json:"stores,omitempty"`
	jwt.RegisteredClaims
}

// Customer is the claims of a customer token for subject, valid for an hour.
func Customer(subject string) Claims {
	now := time.Now()
	return Claims{Role: "customer", RegisteredClaims: jwt.RegisteredClaims{
		Issuer: Issuer, Audience: jwt.ClaimStrings{Audience}, Subject: subject,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}}
}

// Staff is the claims of a staff token for subject at stores, valid for an hour.
func Staff(subject string, stores ...string) Claims {
	c := Customer(subject)
	c.Role, c.Stores = "staff", stores
	return c
}

// Sign signs c with key kid, naming it in the header.
func (p *Provider) Sign(kid string, c Claims) string {
	p.t.Helper()
	k := p.Key(kid)
	tok := jwt.NewWithClaims(k.Method, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k.Signer)
	if err != nil {
		p.t.Fatalf("authtest: sign: %v", err)
	}
	return s
}

func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p.fetches.Add(1)
	if ch := p.stall.Load(); ch != nil {
		select {
		case <-*ch:
		case <-r.Context().Done():
			return
		}
	}
	if p.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for kid, k := range p.keys {
		if !p.published[kid] {
			continue
		}
		jwk, err := jwkset.NewJWKFromKey(k.Signer.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: kid, ALG: jwkset.ALG(k.Method.Alg()), USE: jwkset.UseSig,
		}})
		if err != nil {
			p.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}
