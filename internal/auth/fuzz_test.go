package auth_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/auth"
)

// FuzzParseKeySet: a spec is taken whole or refused; a taken one has keys of 32 bytes or more,
// signs with its first and verifies what it signs.
func FuzzParseKeySet(f *testing.F) {
	k := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	f.Add("a:" + k)
	f.Add("a:" + k + ", b:" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 40))))
	f.Add("a:" + k + ",a:" + k)
	f.Add(":" + k)
	f.Add("a:" + k[:10])
	f.Add("")
	f.Add("a:" + k + ",")
	f.Fuzz(func(t *testing.T, spec string) {
		ks, err := auth.ParseKeySet(spec)
		if err != nil {
			if ks != nil {
				t.Fatalf("ParseKeySet(%q) refused (%v) but returned a set", spec, err)
			}
			return
		}
		for i, part := range strings.Split(spec, ",") {
			kid, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
			if !ok || kid == "" {
				t.Fatalf("ParseKeySet(%q) took entry %d %q, which is not kid:key", spec, i, part)
			}
			key, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				key, err = base64.RawURLEncoding.DecodeString(b64)
			}
			if err != nil || len(key) < 32 {
				t.Fatalf("ParseKeySet(%q) took key %q of %d bytes (%v)", spec, kid, len(key), err)
			}
		}
		tok, err := ks.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Hour)
		if err != nil {
			t.Fatalf("ParseKeySet(%q): Issue: %v", spec, err)
		}
		if p, err := ks.Verify(t.Context(), tok); err != nil || p.Subject != "alice" {
			t.Fatalf("ParseKeySet(%q): its own token verified as %+v, %v", spec, p, err)
		}
	})
}

// FuzzBearerToken: an accepted header is "Bearer" (any case), spaces and a b64token; the
// token given back is in the header, and reads back the same from "Bearer <token>".
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  abc== ", "Bearer", "Bearer \tabc", "Basic abc", "Bearer a b", "Bearer ===", "BEARER x\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := auth.BearerToken(header)
		if err != nil {
			if !errors.Is(err, auth.ErrNoToken) && !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("BearerToken(%q): %v is neither no token nor an invalid one", header, err)
			}
			return
		}
		if tok == "" || !strings.Contains(header, tok) || !strings.EqualFold(header[:7], "bearer ") {
			t.Fatalf("BearerToken(%q) = %q", header, tok)
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),:;<>@[\]{}`, c) >= 0 {
				t.Fatalf("BearerToken(%q) = %q, with %q, no header may carry", header, tok, c)
			}
		}
		if again, err := auth.BearerToken("Bearer " + tok); err != nil || again != tok {
			t.Fatalf("BearerToken(%q) = %q, but %q reads as %q, %v", header, tok, "Bearer "+tok, again, err)
		}
	})
}
