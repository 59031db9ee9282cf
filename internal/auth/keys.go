package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// KeySet holds the HMAC-SHA256 keys tokens are signed with, by key id. Several keys let an
// operator rotate: add the new key, sign with it, drop the old one once its tokens expired.
type KeySet struct {
	keys     map[string][]byte
	signing  string    // key id new tokens are signed with
	provider *provider // the retailer's identity provider, if trusted (TrustProvider)
	verified verifiedCache
}

// minKeyBytes is the least key material accepted: HS256 wants at least the hash size.
const minKeyBytes = 32

// ParseKeySet reads "kid:base64key[,kid:base64key...]"; the first key signs new tokens.
func ParseKeySet(spec string) (*KeySet, error) {
	ks := &KeySet{keys: map[string][]byte{}}
	for i, part := range strings.Split(spec, ",") {
		kid, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || kid == "" {
			return nil, fmt.Errorf("key %d: want kid:base64key", i+1)
		}
		if !utf8.ValidString(kid) {
			// A token's header is JSON: such an id would come back changed, and no token signed
			// with the key would ever verify.
			return nil, fmt.Errorf("key %d: its id is not valid UTF-8", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			key, err = base64.RawURLEncoding.DecodeString(b64)
		}
		if err != nil {
			return nil, fmt.Errorf("key %q: not base64: %w", kid, err)
		}
		if len(key) < minKeyBytes {
			return nil, fmt.Errorf("key %q: %d bytes, want at least %d", kid, len(key), minKeyBytes)
		}
		if _, dup := ks.keys[kid]; dup {
			return nil, fmt.Errorf("key id %q given twice", kid)
		}
		ks.keys[kid] = key
		if i == 0 {
			ks.signing = kid
		}
	}
	return ks, nil
}

// DevKeySet returns the one-process mode's development key, made on first use and kept in
// dir so that tokens minted by `handoff token` keep working across restarts. Never for
// production: set HANDOFF_JWT_KEYS there.
func DevKeySet(dir string) (*KeySet, error) {
	path := filepath.Join(dir, devKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, minKeyBytes)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("make development key: %w", err)
		}
		b = []byte("dev:" + base64.StdEncoding.EncodeToString(key))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write development key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read development key: %w", err)
	}
	return ParseKeySet(strings.TrimSpace(string(b)))
}

const devKeyFile = "dev-jwt.key"

// ErrNoDevKey is ExistingDevKeySet's error where dir holds no development key.
var ErrNoDevKey = errors.New("no development token key")

// ExistingDevKeySet reads the development key a one-process Handoff made in dir, and never makes
// one: a tool minting tokens for a running system (handoff token, mobile-mock) with a key of its
// own would mint tokens that system refuses.
func ExistingDevKeySet(dir string) (*KeySet, error) {
	path := filepath.Join(dir, devKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoDevKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read development key: %w", err)
	}
	return ParseKeySet(strings.TrimSpace(string(b)))
}

// Issue signs a token for p, valid for ttl.
func (ks *KeySet) Issue(p Principal, ttl time.Duration) (string, error) {
	if p.Subject == "" {
		return "", errors.New("issue token: empty subject")
	}
	if strings.ContainsFunc(p.Subject, unicode.IsControl) {
		return "", fmt.Errorf("issue token: subject %q holds a control character", p.Subject)
	}
	switch p.Role {
	case RoleCustomer:
		if n := utf8.RuneCountInString(p.Subject); n > MaxCustomerIDLen {
			return "", fmt.Errorf("issue token: a customer's subject is at most %d characters, got %d", MaxCustomerIDLen, n)
		}
	case RoleAdmin:
	case RoleStaff:
		if len(p.Stores) == 0 {
			return "", errors.New("issue token: a staff token needs at least one store")
		}
	default:
		return "", fmt.Errorf("issue token: unknown role %q", p.Role)
	}
	now := time.Now()
	id := p.TokenID
	if id == "" {
		id = uuid.NewString()
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		Role:   p.Role,
		Stores: p.Stores,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   p.Subject,
			ID:        id,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	})
	tok.Header["kid"] = ks.signing
	s, err := tok.SignedString(ks.keys[ks.signing])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// MaxCustomerIDLen is the longest customer id, in characters, an order may carry: a customer
// token's subject is that id, so a longer one is refused when issued and when verified.
const MaxCustomerIDLen = 128

// leeway is the clock skew Verify allows on expiry and not-before.
const leeway = 30 * time.Second

// verifiedCap bounds the verified-token cache; when full it starts again empty.
const verifiedCap = 16384

// verifiedCache remembers tokens that verified: a token is checked at the edge and again by
// the service it is forwarded to, on every call of the same shopper or terminal, and parsing
// and checking it (JSON, HMAC) was a few percent of the whole system's CPU. A KeySet's own keys
// never change, so a token they verified verifies again until it expires; expiry is checked on
// every hit. An identity provider's keys may be withdrawn, so its tokens are verified again
// once their recheck time passes. Only tokens that verified are kept.
type verifiedCache struct {
	mu sync.Mutex
	m  map[string]verifiedToken
}

type verifiedToken struct {
	p       Principal
	recheck time.Time // zero: until it expires
}

func (v *verifiedCache) get(token string) (verifiedToken, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	t, ok := v.m[token]
	return t, ok
}

func (v *verifiedCache) put(token string, t verifiedToken) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= verifiedCap {
		v.m = make(map[string]verifiedToken, 256)
	}
	v.m[token] = t
}

func (v *verifiedCache) drop(token string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, token)
}

// Verify checks a token's signature, issuer, expiry and claims and returns its Principal: a
// token signed with one of the set's keys, or by the identity provider it trusts. Only a
// provider's token naming a key not yet fetched can wait (for the key set), and at most until
// ctx ends.
func (ks *KeySet) Verify(ctx context.Context, token string) (Principal, error) {
	now := time.Now()
	if t, ok := ks.verified.get(token); ok && (t.recheck.IsZero() || now.Before(t.recheck)) {
		if now.After(t.p.Expires.Add(leeway)) {
			ks.verified.drop(token)
			return Principal{}, ErrExpired
		}
		p := t.p
		p.Stores = slices.Clone(p.Stores)
		return p, nil
	}
	var (
		p       Principal
		err     error
		recheck time.Time
	)
	if ks.provider == nil {
		p, err = ks.verify(token) // the header is read once, by the parser
	} else if alg := algOf(token); alg != jwt.SigningMethodHS256.Alg() {
		p, err = ks.provider.verify(ctx, token, alg)
		recheck = now.Add(ks.provider.recheck)
	} else {
		p, err = ks.verify(token)
		if err != nil && !errors.Is(err, ErrExpired) && issuerOf(token) == ks.provider.issuer {
			// Not Handoff's: the provider's, signed with a shared secret Handoff does not hold.
			err = &RejectedError{Reason: "the identity provider's token is signed with HMAC (HS256): only its public-key signatures (RS, PS, ES, EdDSA) are taken"}
		}
	}
	if err != nil {
		ks.verified.drop(token)
		return Principal{}, err
	}
	cached := p
	cached.Stores = slices.Clone(p.Stores)
	ks.verified.put(token, verifiedToken{p: cached, recheck: recheck})
	return p, nil
}

func (ks *KeySet) verify(token string) (Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := ks.keys[kid]
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, ErrExpired
	case err != nil:
		return Principal{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return principalOf(c)
}

// principalOf is the caller a verified token's claims name, or why they name none.
func principalOf(c claims) (Principal, error) {
	p := Principal{Subject: c.Subject, Role: c.Role, Stores: c.Stores, TokenID: c.ID, Expires: c.ExpiresAt.Time}
	switch {
	case p.Subject == "":
		return Principal{}, &RejectedError{Reason: "no subject (sub)"}
	case strings.ContainsFunc(p.Subject, unicode.IsControl):
		// A NUL cannot be stored (every cart, order and history row carries the subject), and
		// the caller would only learn of it from a refusal naming none of its request's fields.
		return Principal{}, &RejectedError{Reason: "the subject (sub) holds a control character"}
	case p.Role != RoleCustomer && p.Role != RoleStaff && p.Role != RoleAdmin:
		return Principal{}, &RejectedError{Reason: fmt.Sprintf("role %q is none of customer, staff, admin", p.Role)}
	case p.Role == RoleStaff && len(p.Stores) == 0:
		return Principal{}, &RejectedError{Reason: "a staff token without stores"}
	case p.Role == RoleCustomer && utf8.RuneCountInString(p.Subject) > MaxCustomerIDLen:
		// Refused here, at the door, rather than by the first checkout after a cart was made.
		return Principal{}, &RejectedError{Reason: fmt.Sprintf("a customer's subject is at most %d characters", MaxCustomerIDLen)}
	}
	return p, nil
}
