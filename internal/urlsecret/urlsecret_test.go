package urlsecret_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/urlsecret"
)

const (
	raw   = "https://user:pa55word-xyz@hooks.example.com/services/T000/SLACKSECRETabcdefghijklmnop?token=QUERYSECRET0123456789"
	token = "SLACKSECRETabcdefghijklmnop"
)

// secretsIn reports the secrets of raw, or the beginnings of them 4 bytes long or more, found in s.
func secretsIn(s string) []string {
	var found []string
	for _, secret := range []string{"pa55word-xyz", token, "QUERYSECRET0123456789"} {
		for k := len(secret); k >= 4; k-- {
			if strings.Contains(s, secret[:k]) {
				found = append(found, secret[:k])
				break
			}
		}
	}
	return found
}

func parts(t *testing.T) []string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return urlsecret.Parts(raw, u)
}

func TestSnippetsQuoteNoneOfTheURLsSecrets(t *testing.T) {
	hide := parts(t)
	echo := "Cannot POST /services/T000/" + token + "?token=QUERYSECRET0123456789"
	for name, answer := range map[string]string{
		"the URL echoed once":                   "<html>" + echo + "</html>",
		"the URL echoed across the cut":         strings.Repeat("x", 180) + echo,
		"echoes brought within the cut":         strings.Repeat("POST /services/T000/"+token+"\n", 20),
		"a token alone, across the cut":         strings.Repeat("y", 195) + " " + token + " and more",
		"the password and the whole URL":        "auth failed for " + raw + " (pa55word-xyz)",
		"the query escaped and the token alone": "token=" + url.QueryEscape("QUERYSECRET0123456789") + " path " + token,
	} {
		t.Run(name, func(t *testing.T) {
			got := urlsecret.Snippet(strings.NewReader(answer), 200, hide)
			if found := secretsIn(got); len(found) > 0 {
				t.Fatalf("the snippet %q quotes %q", got, found)
			}
			if len(got) > 200 {
				t.Fatalf("the snippet is %d bytes, more than the 200 asked", len(got))
			}
			if got == "" {
				t.Fatal("nothing of the answer is quoted")
			}
		})
	}
	// What holds no secret is quoted as it is.
	if got := urlsecret.Snippet(strings.NewReader("  upstream timed out\n"), 200, hide); got != "upstream timed out" {
		t.Fatalf("a plain answer quoted as %q", got)
	}
}

func TestRedactedAndOrigin(t *testing.T) {
	u, _ := url.Parse(raw)
	if got := urlsecret.Origin(u); got != "https://hooks.example.com" {
		t.Fatalf("origin %q", got)
	}
	msg := `Post "` + raw + `": dial tcp: lookup hooks.example.com: no such host`
	got := urlsecret.Redacted(msg, parts(t))
	if found := secretsIn(got); len(found) > 0 || !strings.Contains(got, "no such host") {
		t.Fatalf("redacted %q: quotes %q, or lost the cause", got, found)
	}
}
