package stack

import "testing"

func TestRedactURLHidesPasswordsAndTokens(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
		"alice:s3cret@nats:4222":                     "nats://alice:xxxxx@nats:4222",
		"nats://user:s3cret@nats:4222":               "nats://user:xxxxx@nats:4222",
		"nats://t0ken@nats:4222":                     "nats://xxxxx@nats:4222",
		"nats://a:p1@n1:4222,nats://a:p2@n2:4222":    "nats://a:xxxxx@n1:4222,nats://a:xxxxx@n2:4222",
		"postgres://handoff:pw@db:5432/handoff?x=1":  "postgres://handoff:xxxxx@db:5432/handoff?x=1",
		"postgres://postgres@127.0.0.1:5432/handoff": "postgres://xxxxx@127.0.0.1:5432/handoff",
		"%%bad://user:pw@host":                       "(a URL with credentials, not shown)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
