package auth

import "testing"

// Refusals read as English: "needs an admin token; this is a customer token".
func TestATokenTakesTheRightArticle(t *testing.T) {
	for kind, want := range map[string]string{
		"admin": "an admin token", "anonymous": "an anonymous token", "customer": "a customer token", "staff": "a staff token",
	} {
		if got := AToken(kind); got != want {
			t.Errorf("AToken(%q) = %q, want %q", kind, got, want)
		}
	}
}
