package fulfilment

import (
	"fmt"
	"testing"
	"time"
)

// Streams poll a fifth either side of WatchPoll, spread out: streams opened together do not
// all read their orders in the same instant every 15 s.
func TestWatchPollsAreSpreadAroundTheInterval(t *testing.T) {
	const d = 15 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := jittered(d)
		if j < d*4/5 || j > d*6/5 {
			t.Fatalf("jittered(%v) = %v, outside %v..%v", d, j, d*4/5, d*6/5)
		}
		seen[j] = true
	}
	if len(seen) < 100 {
		t.Fatalf("1000 polls took %d distinct intervals: not spread", len(seen))
	}
}

// After a NATS reconnect every stream reads its order again, spread out: two thousand streams
// are woken over about two seconds, not all at once, and every one of them within rereadSpread.
func TestStreamsReadTheirOrdersAgainSpreadOutAfterAReconnect(t *testing.T) {
	h := newWatchHub()
	const n = 2000
	ws := make([]*watcher, n)
	for i := range ws {
		w, stop := h.subscribe(fmt.Sprint("order-", i))
		defer stop()
		ws[i] = w
	}
	woken := func() int {
		c := 0
		for _, w := range ws {
			if len(w.wake) == 1 {
				c++
			}
		}
		return c
	}
	h.rereadAll()
	time.Sleep(20 * time.Millisecond)
	if c := woken(); c > n/2 {
		t.Fatalf("%d of %d streams woken within 20 ms of the reconnect: not spread", c, n)
	}
	deadline := time.Now().Add(rereadSpread + 5*time.Second)
	for woken() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d streams woken %v after the reconnect", woken(), n, rereadSpread+5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range ws {
		if _, reread := w.take(); !reread {
			t.Fatal("a stream woken without being told to read its order again")
		}
	}
}
