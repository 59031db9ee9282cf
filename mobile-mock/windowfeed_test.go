package main

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/mobile-mock/load"
)

// lateTicketFeed is a way to the system on which every StreamTickets fails (the pos-adapter's
// feed down) until up is set; then the feeds come back and replay the tickets not acknowledged.
type lateTicketFeed struct {
	http.RoundTripper
	up      atomic.Bool
	refused atomic.Int64
}

func (c *lateTicketFeed) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/StreamTickets") && !c.up.Load() {
		c.refused.Add(1)
		return nil, errors.New("connection refused (the test's ticket feed is down)")
	}
	return c.RoundTripper.RoundTrip(req)
}

// A run of a duration whose ticket feed is down for its whole window, and back only while its
// last orders finish, has no order with its ticket at a terminal within the window: orders/s,
// what the load exists to measure, is 0 for want of the feed, as in a run whose feed never
// comes back (TestALoadInWhichNoTicketReachesATerminalIsNotASuccess). It measured nothing and
// must not exit 0; it did, because Unmeasured looked at the tickets received after the window
// too.
func TestALoadWhoseTicketsAllCameAfterItsWindowIsNotASuccess(t *testing.T) {
	ready, flags := startHandoff(t)
	feed := &lateTicketFeed{RoundTripper: newTransport()}
	cfg := loadConfig(t, ready, flags, feed)
	cfg.Shoppers, cfg.Duration, cfg.Basket, cfg.MaxInFlight, cfg.OrderTimeout, cfg.HotSKU = 1, time.Second, true, 1, 20*time.Second, "LATTE-16"
	cfg.Progress = func(p load.Progress) {
		if p.Elapsed >= 1500*time.Millisecond {
			feed.up.Store(true) // the window (1 s) is over; its orders are still open
		}
	}
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("%d StreamTickets refused\n%s", feed.refused.Load(), summaryOf(res))
	if res.Confirmed == 0 || res.OrdersWithTicket == 0 || res.OrdersPerSecond != 0 {
		t.Fatalf("scenario did not happen: %d confirmed, %d with a ticket (after the window), orders/s %.2f", res.Confirmed, res.OrdersWithTicket, res.OrdersPerSecond)
	}
	exit0 := res.Sound() && !res.Interrupted && res.Measured() && res.GaveUp == ""
	if exit0 {
		t.Errorf("orders/s %.1f: %d confirmed within the %.1fs window, no ticket at a terminal within it (%d after); errors %v; yet the command would exit 0",
			res.OrdersPerSecond, res.Confirmed, res.WindowSeconds, res.OrdersWithTicket, res.Errors)
	}
}

// A run whose window is shorter than any order's life (-duration 1ms) measures nothing and
// exits 1, but with no error counted it must not blame the errors or the ticket feed: it ended
// with "every order failed before it (see the errors)" while the errors were none.
func TestATooShortWindowIsNotBlamedOnErrors(t *testing.T) {
	ready, flags := startHandoff(t)
	var stdout, stderr bytes.Buffer
	args := []string{"load", "-quiet", "-basket", "-shoppers", "2", "-duration", "1ms", "-inventory", ready.ServiceAddrs[stack.TargetInventory]}
	code := run(t.Context(), append(args, flags...), noEnv, &stdout, &stderr)
	t.Logf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	if code != 1 {
		t.Fatalf("a 1 ms run exited %d, want 1 (it measured nothing)", code)
	}
	if !strings.Contains(stdout.String(), "errors            none") {
		t.Fatalf("errors were counted; the scenario did not happen")
	}
	if strings.Contains(stderr.String(), "see the errors") || !strings.Contains(stderr.String(), "try a longer -duration") {
		t.Errorf("the verdict does not say the window was too short:\n%s", stderr.String())
	}
}
