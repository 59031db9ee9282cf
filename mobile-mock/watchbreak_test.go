package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/mobile-mock/load"
)

// The shopper's WatchOrder stream may break mid-order: a gateway or fulfilment copy draining
// ends its server streams with Unavailable so that clients call again, and a proxy or the
// network may cut one. The demo returned an error on the first break and never opened the
// watch again, so it exited 1 on an order the store went on to work (or had already handed
// over: "HandOver → COLLECTED", then exit 1). Here the gateway's proxy cuts the open watch as
// the terminal's AcceptOrder (the shopper must then learn of READY on a watch opened again) or
// its HandOver goes out.
func TestTheDemoOpensItsOrderWatchAgainWhenItBreaks(t *testing.T) {
	for _, at := range []string{"/AcceptOrder", "/HandOver"} {
		t.Run(strings.TrimPrefix(at, "/"), func(t *testing.T) {
			ready, flags := startHandoff(t)
			var (
				watchCancel atomic.Pointer[context.CancelFunc]
				watches     atomic.Int64
				cut         atomic.Bool
			)
			gw := proxyTo(t, ready.GatewayAddr, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				if strings.HasSuffix(r.URL.Path, "/WatchOrder") {
					watches.Add(1)
					ctx, cancel := context.WithCancel(r.Context())
					defer cancel()
					watchCancel.Store(&cancel)
					next.ServeHTTP(w, r.WithContext(ctx))
					return
				}
				next.ServeHTTP(w, r)
			})
			pos := proxyTo(t, ready.POSAdapterAddr, func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				if strings.HasSuffix(r.URL.Path, at) && cut.CompareAndSwap(false, true) {
					if c := watchCancel.Load(); c != nil {
						(*c)() // the shopper's stream breaks as the store acts
					}
					time.Sleep(500 * time.Millisecond)
				}
				next.ServeHTTP(w, r)
			})
			f := withGateway(flags, gw)
			f[slices.Index(f, "-pos")+1] = pos
			ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, append([]string{"demo"}, f...), noEnv, &stdout, &stderr)
			t.Logf("exit %d, %d WatchOrder streams\n%s%s", code, watches.Load(), stdout.String(), stderr.String())
			if !cut.Load() {
				t.Fatalf("no %s went out; the scenario did not happen", at)
			}
			if code != 0 || !strings.Contains(stdout.String(), "COLLECTED at") {
				t.Fatalf("the shopper's watch broke at %s: the demo exited %d (%d WatchOrder streams opened), want 0 with the order COLLECTED: %s",
					at, code, watches.Load(), stderr.String())
			}
			if at == "/AcceptOrder" && watches.Load() < 2 {
				t.Errorf("the order went on to READY and COLLECTED with %d WatchOrder stream(s): the broken one was not opened again", watches.Load())
			}
		})
	}
}

// breakingWatches is a way to the system on which the first cuts WatchOrder streams break
// just after their first message (the order's state as the stream opens, never a final one:
// the shopper hands a READY order over), as a gateway or fulfilment copy draining ends them so
// that clients call again. Cut there, every one of them leaves an order its shopper must go on
// watching.
type breakingWatches struct {
	http.RoundTripper
	mu     sync.Mutex
	cuts   int // streams still to cut
	broken int // streams cut
}

func (b *breakingWatches) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := b.RoundTripper.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/WatchOrder") {
		return res, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cuts > 0 {
		b.cuts--
		res.Body = &cutAfterFirstMessage{ReadCloser: res.Body, cut: func() {
			b.mu.Lock()
			b.broken++
			b.mu.Unlock()
		}}
	}
	return res, err
}

// cutAfterFirstMessage is a gRPC-web response body that ends with an error right after its
// first message (a 5-byte prefix giving its length, then the message).
type cutAfterFirstMessage struct {
	io.ReadCloser
	cut    func()
	prefix []byte
	left   int  // bytes of the first message still to pass; -1 until its prefix is read
	done   bool // the first message has passed
}

func (c *cutAfterFirstMessage) Read(p []byte) (int, error) {
	if c.done {
		return 0, errors.New("stream cut (test)")
	}
	if c.prefix == nil {
		c.left = -1
	}
	if c.left >= 0 && len(p) > c.left {
		p = p[:c.left] // no byte past the first message
	}
	n, err := c.ReadCloser.Read(p)
	for k, b := range p[:n] {
		if c.left < 0 {
			c.prefix = append(c.prefix, b)
			if len(c.prefix) == 5 {
				c.left = int(binary.BigEndian.Uint32(c.prefix[1:]))
			}
		} else {
			c.left--
		}
		if c.left == 0 {
			n = k + 1 // what came after the first message is cut off with the stream
			break
		}
	}
	if c.left == 0 {
		c.done = true
		_ = c.ReadCloser.Close()
		c.cut()
	}
	return n, err
}

// The load's shoppers open a WatchOrder that breaks again, and go on to collect the order.
// They counted the break as an error and gave the order up: it was left READY on the system,
// never handed over, its stock held until its pickup window ended.
func TestLoadShoppersOpenABrokenOrderWatchAgain(t *testing.T) {
	ready, flags := startHandoff(t)
	watches := &breakingWatches{RoundTripper: newTransport(), cuts: 2}
	cfg := loadConfig(t, ready, flags, watches)
	cfg.Shoppers, cfg.Orders, cfg.MaxInFlight, cfg.Basket, cfg.OrderTimeout = 1, 2, 1, true, 8*time.Second
	res, err := load.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", summaryOf(res))
	watches.mu.Lock()
	broken := watches.broken
	watches.mu.Unlock()
	if res.Confirmed == 0 || broken == 0 {
		t.Fatalf("%d orders confirmed, %d watches broken; the scenario did not happen", res.Confirmed, broken)
	}
	if res.Collected != res.Confirmed {
		t.Fatalf("%d orders confirmed and taken in hand by the terminals, %d collected, errors %v: a watch that broke was not opened again and its order was given up",
			res.Confirmed, res.Collected, res.Errors)
	}
	// Each break is told in the summary, apart from the failures that end an order.
	var reopened uint64
	for k, n := range res.Errors {
		if !strings.HasPrefix(k, "WatchOrder (opened again) ") {
			t.Errorf("errors %v: %q is not a watch opened again", res.Errors, k)
		}
		reopened += n
	}
	if reopened != uint64(broken) {
		t.Errorf("%d watches cut, %d counted as opened again (errors %v); want each", broken, reopened, res.Errors)
	}
}
