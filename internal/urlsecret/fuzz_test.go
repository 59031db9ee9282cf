package urlsecret_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/handoff-dev/handoff/internal/urlsecret"
)

// FuzzSnippet: whatever a receiver answers, the snippet of it kept for operators holds none of
// the URL's secrets whole, is valid UTF-8 and at most n bytes.
func FuzzSnippet(f *testing.F) {
	f.Add("Cannot POST /services/T000/SLACKSECRETabcdefghijklmnop", uint8(200))
	f.Add("token=QUERYSECRET0123456789&x", uint8(10))
	f.Add("pa55word-xyz", uint8(5))
	u, err := url.Parse(raw)
	if err != nil {
		f.Fatal(err)
	}
	parts := urlsecret.Parts(raw, u)
	f.Fuzz(func(t *testing.T, body string, n uint8) {
		s := urlsecret.Snippet(strings.NewReader(body), int(n), parts)
		if len(s) > int(n) || !utf8.ValidString(s) {
			t.Fatalf("Snippet(%q, %d) = %q", body, n, s)
		}
		for _, secret := range []string{"pa55word-xyz", token, "QUERYSECRET0123456789"} {
			if strings.Contains(s, secret) {
				t.Fatalf("Snippet(%q, %d) = %q, which holds the secret %q", body, n, s, secret)
			}
		}
	})
}
