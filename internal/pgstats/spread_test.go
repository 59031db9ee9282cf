package pgstats

import (
	"testing"
	"time"
)

// Rounds are spread around the interval, so services started together drift apart.
func TestSpreadWaitsAboutTheIntervalButNotAlwaysTheSame(t *testing.T) {
	const interval = 5 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := spread(interval)
		if d < interval/2 || d >= interval*3/2 {
			t.Fatalf("spread(%v) = %v, want within [%v, %v)", interval, d, interval/2, interval*3/2)
		}
		seen[d] = true
	}
	if len(seen) < 900 {
		t.Errorf("1,000 waits took %d values: not spread", len(seen))
	}
}
