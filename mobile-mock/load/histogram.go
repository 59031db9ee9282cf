package load

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Histogram records latencies in log-linear buckets, HDR-style: exact below 64µs, then 32
// buckets per power of two, so every recorded value is known to within about 3% whatever its
// size, in constant memory. It is safe for concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts []uint64
	n      uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

const (
	subBucketBits = 5
	subBuckets    = 1 << subBucketBits // per power of two
	linearLimit   = 2 * subBuckets     // values below are their own bucket (µs)
)

// bucketOf returns the bucket of a value in microseconds.
func bucketOf(us uint64) int {
	if us < linearLimit {
		return int(us)
	}
	shift := bits.Len64(us) - (subBucketBits + 1) // us>>shift is in [32, 64)
	return linearLimit + (shift-1)*subBuckets + int(us>>shift) - subBuckets
}

// bucketBounds returns the lowest and highest microsecond value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < linearLimit {
		return uint64(i), uint64(i)
	}
	shift := (i-linearLimit)/subBuckets + 1
	m := uint64((i-linearLimit)%subBuckets + subBuckets)
	lo = m << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one latency; negative ones (clock skew between machines) count as zero.
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	i := bucketOf(uint64(d.Microseconds()))
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
	h.sum += d
}

// Count is how many latencies were recorded.
func (h *Histogram) Count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Quantile returns the latency at or below which a fraction q (0-1) of the recorded ones lie:
// the highest value of the bucket it falls in (never above the largest recorded), so the
// figure errs on the slow side by at most one bucket. Zero when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quantile(q)
}

func (h *Histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n))) // nearest rank: never below the q-th fraction
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			return min(time.Duration(hi)*time.Microsecond+time.Microsecond-1, h.max)
		}
	}
	return h.max
}

// Stats summarises a histogram, in milliseconds.
type Stats struct {
	Count  uint64  `json:"count"`
	MinMS  float64 `json:"min_ms"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Stats returns the histogram's summary.
func (h *Histogram) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return Stats{}
	}
	return Stats{
		Count:  h.n,
		MinMS:  ms(h.min),
		MeanMS: ms(h.sum / time.Duration(h.n)),
		P50MS:  ms(h.quantile(0.50)),
		P90MS:  ms(h.quantile(0.90)),
		P95MS:  ms(h.quantile(0.95)),
		P99MS:  ms(h.quantile(0.99)),
		P999MS: ms(h.quantile(0.999)),
		MaxMS:  ms(h.max),
	}
}

// Bucket is a range of latencies and how many fell in it.
type Bucket struct {
	LowMS  float64 `json:"low_ms"`
	HighMS float64 `json:"high_ms"`
	Count  uint64  `json:"count"`
}

// Buckets returns the non-empty buckets, fastest first.
func (h *Histogram) Buckets() []Bucket {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Bucket
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, hi := bucketBounds(i)
		out = append(out, Bucket{LowMS: float64(lo) / 1000, HighMS: float64(hi+1) / 1000, Count: c})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
