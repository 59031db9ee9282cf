package urlsecret_test

import (
	"errors"
	"io"
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

// A whole token at the very end of what was read is cut out whole wherever the answer puts it,
// even where its last byte could begin another of the URL's parts.
func TestATokenEndingTheReadIsCutWhole(t *testing.T) {
	hide := parts(t)
	echo := "POST /services/T000/" + token + "\n"
	for pad := range len(echo) {
		answer := strings.Repeat("x", pad) + strings.Repeat(echo, 20)
		if got := urlsecret.Snippet(strings.NewReader(answer), 200, hide); len(secretsIn(got)) > 0 {
			t.Errorf("shifted by %d: the snippet %q quotes %q", pad, got, secretsIn(got))
		}
	}
}

// failingAfter ends its reader with an error instead of EOF: a timeout or a reset mid-answer.
type failingAfter struct{ r io.Reader }

func (f failingAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		err = errors.New("connection reset by peer")
	}
	return n, err
}

// A read ended by an error may have stopped inside a secret: its beginning is cut too.
func TestAReadEndedByAnErrorQuotesNoSecretsBeginning(t *testing.T) {
	got := urlsecret.Snippet(failingAfter{strings.NewReader("Cannot POST /services/T000/SLACKSECRETabcdefgh")}, 200, parts(t))
	if found := secretsIn(got); len(found) > 0 || !strings.Contains(got, "Cannot POST") {
		t.Fatalf("the snippet %q quotes %q, or lost the answer", got, found)
	}
}

// A token holding an escaped slash is cut out whole when echoed alone.
func TestATokenWithAnEscapedSlashIsCutWhole(t *testing.T) {
	raw := "https://hooks.example.com/h/AbC%2FdEfGhIjKlMnOpQ"
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	got := urlsecret.Snippet(strings.NewReader("invalid token AbC%2FdEfGhIjKlMnOpQ"), 200, urlsecret.Parts(raw, u))
	if strings.Contains(got, "AbC") || strings.Contains(got, "MnOpQ") {
		t.Fatalf("the snippet %q quotes the token", got)
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
