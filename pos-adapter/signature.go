package posadapter

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries the signature of a webhook body, in both directions:
//
//	Handoff-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// The timestamp is inside the signed bytes, so a captured request cannot be replayed later
// with a fresh time; receivers refuse timestamps too far from their clock. While a rotated
// secret's grace runs (SetStoreWebhook's previous_secret_ttl) a delivery carries one v1 per
// secret, the new one's first: a receiver takes the request when any v1 matches its secret,
// so it must check them all, not only the first or the last.
const SignatureHeader = "Handoff-Signature"

// Errors VerifySignature returns.
var (
	ErrNoSignature        = errors.New("no " + SignatureHeader + " header")
	ErrMalformedSignature = errors.New(SignatureHeader + " is not t=<unix>,v1=<hex>[,v1=<hex>…]")
	ErrStaleSignature     = errors.New("signature timestamp is too far from now")
	ErrBadSignature       = errors.New("signature does not match the body")
)

// Sign returns the Handoff-Signature value for body sent at t, signed with secret.
func Sign(secret string, t time.Time, body []byte) string { return SignWith([]string{secret}, t, body) }

// SignWith returns the Handoff-Signature value for body sent at t with a v1 signature made with
// each of secrets (a rotation's new secret and the one it replaces): a receiver takes it when
// one of them matches the secret it has.
func SignWith(secrets []string, t time.Time, body []byte) string {
	ts := t.Unix()
	var b strings.Builder
	b.WriteString("t=" + strconv.FormatInt(ts, 10))
	for _, s := range secrets {
		b.WriteString(",v1=" + hex.EncodeToString(signature(s, ts, body)))
	}
	return b.String()
}

func signature(secret string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature checks a Handoff-Signature header against body and secret, and that its
// timestamp is within tolerance of now. Several v1 values may be given (a sender rotating its
// secret); one match is enough.
func VerifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	sig, err := parseSignature(header, now, tolerance)
	if err != nil {
		return err
	}
	return sig.verify(secret, body)
}

// signedHeader is a Handoff-Signature header read and found fresh, not yet checked against a
// secret.
type signedHeader struct {
	ts   int64
	sigs [][]byte
}

// parseSignature reads a Handoff-Signature header and checks its timestamp: what can be
// checked without the secret, so a receiver refuses a request without one, a malformed or a
// stale one before it looks the secret up.
func parseSignature(header string, now time.Time, tolerance time.Duration) (signedHeader, error) {
	if header == "" {
		return signedHeader{}, ErrNoSignature
	}
	var (
		h     signedHeader
		haveT bool
	)
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return signedHeader{}, ErrMalformedSignature
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || haveT {
				return signedHeader{}, ErrMalformedSignature
			}
			h.ts, haveT = n, true
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return signedHeader{}, ErrMalformedSignature
			}
			h.sigs = append(h.sigs, b)
		}
	}
	if !haveT || len(h.sigs) == 0 {
		return signedHeader{}, ErrMalformedSignature
	}
	if d := now.Sub(time.Unix(h.ts, 0)); d > tolerance || d < -tolerance {
		return signedHeader{}, fmt.Errorf("%w (%s off, tolerance %s)", ErrStaleSignature, d.Round(time.Second), tolerance)
	}
	return h, nil
}

// verify checks the header's signatures against body signed with secret.
func (h signedHeader) verify(secret string, body []byte) error {
	want := signature(secret, h.ts, body)
	for _, s := range h.sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}

// newSigningSecret makes a store's webhook secret: "whsec_" and 32 random bytes.
func newSigningSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("signing secret: %w", err)
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
