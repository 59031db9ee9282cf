package main

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
