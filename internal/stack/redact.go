package stack

import (
	"net/url"
	"strings"
)

// RedactURL hides the credentials of a URL, or of each URL of a comma-separated list (a NATS
// server list), for logs and messages: a password becomes xxxxx, and so does a user with no
// password (a NATS token).
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p // as nats.go reads a URL without a scheme
		}
		u, err := url.Parse(p)
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "(a URL with credentials, not shown)"
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if _, hasPassword := u.User.Password(); hasPassword {
			parts[i] = u.Redacted()
		} else {
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
