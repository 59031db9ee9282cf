package edge

import (
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limiter is a token bucket per key (a caller's token subject, a client address): each key may
// make Rate calls a second on average, Burst at once. Idle keys are forgotten, so memory is
// bounded by the callers of the last few minutes.
type Limiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter allows perSecond calls a second per key with bursts of burst.
func NewLimiter(perSecond float64, burst int) *Limiter {
	return &Limiter{limit: rate.Limit(perSecond), burst: burst, idle: 10 * time.Minute, buckets: map[string]*bucket{}}
}

// Allow reports whether key may make a call now; if not, how long until it may.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > l.idle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > l.idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused call must not use up a token
		return false, d
	}
	return true, 0
}

// Blocked reports whether key has no call left now, without using one, and how long until it
// has: for limits charged only for failures (Charge), such as wrong pickup codes.
func (l *Limiter) Blocked(key string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return false, 0
	}
	if tokens := b.lim.TokensAt(now); tokens < 1 {
		return true, time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	}
	return false, 0
}

// Charge uses one of key's calls (after a failed attempt), even if none is left.
func (l *Limiter) Charge(key string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	b.lim.ReserveN(now, 1) // not cancelled: the debt is what slows the next attempts
}

// RateLimited is the ResourceExhausted error for a caller over its limit, with RetryInfo so
// well-behaved clients know when to come back.
func RateLimited(what string, retryAfter time.Duration) error {
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("rate limit: too many %s; retry in %s", what, retryAfter.Round(time.Millisecond)))
	if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); derr == nil {
		err.AddDetail(d)
	}
	return err
}
