package edge_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/edge"
)

func TestACallersTimeoutIsReadAsConnectWouldApplyIt(t *testing.T) {
	cases := []struct {
		header, value string
		want          time.Duration // 0: none; -1: over a century
	}{
		{"Grpc-Timeout", "300m", 300 * time.Millisecond},
		{"Grpc-Timeout", "2S", 2 * time.Second},
		{"Grpc-Timeout", "1H", time.Hour},
		{"Grpc-Timeout", "99999999H", -1}, // past what a Duration holds: as far as one goes
		{"Grpc-Timeout", "5000000u", 5 * time.Second},
		{"Grpc-Timeout", "123456789S", 0}, // nine digits: not a grpc-timeout
		{"Grpc-Timeout", "10x", 0},
		{"Grpc-Timeout", "+5S", 0},
		{"Grpc-Timeout", "S", 0},
		{"Connect-Timeout-Ms", "250", 250 * time.Millisecond},
		{"Connect-Timeout-Ms", "99999999999", 0}, // eleven digits
		{"Connect-Timeout-Ms", "-5", 0},
	}
	for _, c := range cases {
		h := http.Header{}
		h.Set(c.header, c.value)
		before := time.Now()
		ctx, cancel := edge.CallerTimeout(context.Background(), h)
		deadline, ok := ctx.Deadline()
		cancel()
		switch {
		case c.want < 0:
			if !ok || deadline.Before(before.Add(100*365*24*time.Hour)) {
				t.Errorf("%s: %s gave deadline %v (%v); want one over a century away", c.header, c.value, deadline, ok)
			}
		case c.want == 0 && ok:
			t.Errorf("%s: %s gave a deadline %v away; want none (left to Connect to refuse)", c.header, c.value, deadline.Sub(before))
		case c.want != 0 && !ok:
			t.Errorf("%s: %s gave no deadline; want %v", c.header, c.value, c.want)
		case c.want != 0 && (deadline.Before(before.Add(c.want)) || deadline.After(time.Now().Add(c.want))):
			t.Errorf("%s: %s gave a deadline %v away; want %v", c.header, c.value, deadline.Sub(before), c.want)
		}
	}
}
