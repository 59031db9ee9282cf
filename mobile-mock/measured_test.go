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

// A load run of a duration in which not one checkout could be made (the cart service refusing
// every CreateCart: an edge down, a rate limit) measured nothing, like the run whose every
// Checkout failed: it exits 1 saying so. It exited 0: a run with no checkout at all counted as
// measured.
func TestADurationLoadWithNoCheckoutAtAllExitsOne(t *testing.T) {
	ready, flags := startHandoff(t)
	var refused atomic.Int64
	gw := proxyTo(t, ready.GatewayAddr, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasSuffix(r.URL.Path, "/CreateCart") {
			refused.Add(1)
			http.Error(w, "carts are down", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
	args := []string{"load", "-quiet", "-basket", "-shoppers", "2", "-duration", "2s", "-inventory", ready.ServiceAddrs[stack.TargetInventory]}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append(args, withGateway(flags, gw)...), noEnv, &stdout, &stderr)
	t.Logf("exit %d, %d CreateCart refused\n%s%s", code, refused.Load(), stdout.String(), stderr.String())
	if refused.Load() == 0 {
		t.Fatal("no CreateCart reached the proxy; the scenario did not happen")
	}
	if code != 1 || !strings.Contains(stderr.String(), "measured nothing") {
		t.Errorf("load -duration 2s with every CreateCart refused (0 checkouts, 0 orders) exited %d, %q; want 1 saying it measured nothing", code, stderr.String())
	}
}

// noTicketFeed is a way to the system on which every StreamTickets fails as if the pos-adapter's
// feed were down (Unavailable); every other call goes through.
type noTicketFeed struct {
	http.RoundTripper
	refused atomic.Int64
}

func (c *noTicketFeed) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/StreamTickets") {
		c.refused.Add(1)
		return nil, errors.New("connection refused (the test's ticket feed is down)")
	}
	return c.RoundTripper.RoundTrip(req)
}

// A run in which no ticket ever reaches a terminal (the feed down: what the load exists to
// measure, orders/s, is 0, and every order times out CONFIRMED) measured nothing: `mobile-mock
// load` must not exit 0 (it does when Sound, not Interrupted, Measured and not GaveUp). And the
// failing feed is among the errors: Follow retried it silently.
func TestALoadInWhichNoTicketReachesATerminalIsNotASuccess(t *testing.T) {
	ready, flags := startHandoff(t)
	feed := &noTicketFeed{RoundTripper: newTransport()}
	cfg := loadConfig(t, ready, flags, feed)
	cfg.Shoppers, cfg.Duration, cfg.Basket, cfg.MaxInFlight, cfg.OrderTimeout, cfg.HotSKU = 1, time.Second, true, 1, 2*time.Second, "LATTE-16"
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("%d StreamTickets refused\n%s", feed.refused.Load(), summaryOf(res))
	if res.Confirmed == 0 || res.OrdersWithTicket != 0 {
		t.Fatalf("scenario did not happen: %d confirmed, %d with a ticket", res.Confirmed, res.OrdersWithTicket)
	}
	exit0 := res.Sound() && !res.Interrupted && res.Measured() && res.GaveUp == ""
	if exit0 {
		t.Errorf("orders/s %.1f: %d confirmed, none of their tickets reached a terminal, errors %v; yet the command would exit 0", res.OrdersPerSecond, res.Confirmed, res.Errors)
	}
	if res.Errors["StreamTickets unavailable"] == 0 {
		t.Errorf("%d StreamTickets calls failed, errors %v: the feed's failures are not among the errors", feed.refused.Load(), res.Errors)
	}
}
