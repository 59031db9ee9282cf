package fulfilment

import (
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
