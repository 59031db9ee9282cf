package main

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/mobile-mock/load"
)

// refusingCalls is a way to the system on which the first n calls to path are answered HTTP
// 503 (gRPC-web clients read it as Unavailable, as from an edge draining), without reaching
// the service; with cutFeeds, the ticket feeds open are then cut. Every other call goes through.
type refusingCalls struct {
	http.RoundTripper
	path     string
	n        int64
	cutFeeds bool
	refused  atomic.Int64
	mu       sync.Mutex
	feeds    []io.ReadCloser
}

func (c *refusingCalls) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, c.path) {
		if n := c.refused.Add(1); n <= c.n {
			if req.Body != nil {
				req.Body.Close()
			}
			if n == c.n && c.cutFeeds {
				c.mu.Lock()
				for _, body := range c.feeds {
					body.Close()
				}
				c.feeds = nil
				c.mu.Unlock()
			}
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("draining")), Request: req}, nil
		}
	}
	res, err := c.RoundTripper.RoundTrip(req)
	if err == nil && strings.HasSuffix(req.URL.Path, "/StreamTickets") {
		c.mu.Lock()
		c.feeds = append(c.feeds, res.Body)
		c.mu.Unlock()
	}
	return res, err
}

// A terminal of the load whose AcceptOrder or MarkReady fails once, as when the pos-adapter is
// briefly away, takes the order in hand all the same. The order was marked acted on before the
// call: the one failure was counted and never tried again (nor when the feed sent the ticket
// again), and the order stayed CONFIRMED until it timed out, never collected.
func TestALoadTerminalTriesAFailedActionAgain(t *testing.T) {
	ready, flags := startHandoff(t)
	for _, c := range []struct {
		name, rpc string
		refused   int64
		cutFeeds  bool
	}{
		{"AcceptOrder once", "AcceptOrder", 1, false},
		{"MarkReady once", "MarkReady", 1, false},
		// Every try of one ticket fails, then the feed breaks: the ticket, sent again, is
		// acted on again.
		{"AcceptOrder until the feed sends the ticket again", "AcceptOrder", 4, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			refusing := &refusingCalls{RoundTripper: newTransport(), path: "/" + c.rpc, n: c.refused, cutFeeds: c.cutFeeds}
			cfg := loadConfig(t, ready, flags, refusing)
			cfg.Shoppers, cfg.Orders, cfg.MaxInFlight, cfg.Basket, cfg.OrderTimeout = 1, 1, 1, true, 6*time.Second
			res, err := load.Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("summary:\n%s", summaryOf(res))
			if refusing.refused.Load() < c.refused || res.Confirmed != 1 {
				t.Fatalf("%d %s refused, %d confirmed; the scenario did not happen", refusing.refused.Load(), c.rpc, res.Confirmed)
			}
			if res.Collected != 1 || res.Errors[c.rpc+" unavailable"] != uint64(c.refused) {
				t.Errorf("%d %s refused: %d of 1 order collected, errors %v; want it collected, each failure counted", c.refused, c.rpc, res.Collected, res.Errors)
			}
		})
	}
}
