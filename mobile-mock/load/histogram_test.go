package load

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEveryValueFallsInABucketThatContainsIt(t *testing.T) {
	for _, us := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 4095, 4096, 123_456, 1 << 40} {
		lo, hi := bucketBounds(bucketOf(us))
		if us < lo || us > hi {
			t.Errorf("%dµs is put in bucket [%d, %d]", us, lo, hi)
		}
		if us >= linearLimit && float64(hi-lo+1)/float64(lo) > 1.0/subBuckets+1e-9 {
			t.Errorf("bucket [%d, %d] is wider than 1/%d of its value", lo, hi, subBuckets)
		}
	}
	for i := range 2000 { // buckets tile the line: each starts where the last ended
		_, hi := bucketBounds(i)
		if lo, _ := bucketBounds(i + 1); lo != hi+1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i, hi, i+1, lo)
		}
	}
}

func TestQuantilesAreWithinABucketOfTheExactOnes(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	samples := make([]time.Duration, 20_000)
	for i := range samples {
		samples[i] = time.Duration(rng.ExpFloat64() * float64(8*time.Millisecond))
		h.Record(samples[i])
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.95, 0.99, 0.999} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subBuckets+float64(time.Microsecond) {
			t.Errorf("p%g = %v, exact %v: want at or just above it (within one bucket)", q*100, got, exact)
		}
	}
	if s := h.Stats(); s.Count != uint64(len(samples)) || s.MaxMS != ms(samples[len(samples)-1]) {
		t.Errorf("stats %+v: count or max wrong", s)
	}
}

// The quantile is the nearest rank, ceil(q·n), never one below it: of 160 latencies whose two
// slowest are a second, p99 (the 159th) is a second, not the 158th's millisecond.
func TestQuantileIsTheNearestRankNotOneBelow(t *testing.T) {
	var h Histogram
	for i := range 160 {
		d := time.Millisecond
		if i >= 158 {
			d = time.Second
		}
		h.Record(d)
	}
	if got := h.Quantile(0.99); got < time.Second {
		t.Fatalf("p99 of 158 × 1 ms and 2 × 1 s = %v; want 1 s (the 159th)", got)
	}
}

func TestHistogramSVGIsWellFormedWithAndWithoutSamples(t *testing.T) {
	var full Histogram
	for i := range 500 {
		full.Record(time.Duration(1+i%97) * 300 * time.Microsecond)
	}
	for name, res := range map[string]*Result{
		"samples": {Shoppers: 16, WindowSeconds: 20, checkout: &full, toTicket: &full, CheckoutLatency: full.Stats(), ConfirmedToTicket: full.Stats()},
		"empty":   {Shoppers: 1, WindowSeconds: 1, HotSKU: "LATTE-16", checkout: &Histogram{}, toTicket: &Histogram{}},
	} {
		var buf bytes.Buffer
		if err := res.renderSVG(&buf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		svg := buf.String()
		dec := xml.NewDecoder(strings.NewReader(svg))
		for {
			_, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: the SVG is not well-formed XML: %v", name, err)
			}
		}
		if name == "samples" && !strings.Contains(svg, "p99") {
			t.Errorf("%s: no p99 mark", name)
		}
	}
}
