package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limiter is a token bucket per key (a caller's token subject, a client address): each key may
// make Rate calls a second on average, Burst at once. A key whose bucket has filled up again is
// forgotten (a full bucket is what a new key gets), so memory holds only the keys that called
// within the last Burst/Rate seconds or are in debt; and it never holds more than maxKeys of
// them: while that many are busy, a key not yet known is refused rather than remembered.
type Limiter struct {
	limit   rate.Limit
	burst   int
	maxKeys int

	mu        sync.Mutex
	buckets   map[string]*bucket
	swept     time.Time
	fullSwept time.Time // the last sweep forced by a full map, at most one a second
}

type bucket struct {
	lim      *rate.Limiter
	attempts int // Attempts under way
}

// defaultMaxKeys bounds a Limiter's map: about 20 MB at most.
const defaultMaxKeys = 100_000

// sweepEvery is how often a Limiter forgets refilled keys in passing.
const sweepEvery = time.Minute

// NewLimiter allows perSecond calls a second per key with bursts of burst.
func NewLimiter(perSecond float64, burst int) *Limiter {
	return &Limiter{limit: rate.Limit(perSecond), burst: burst, maxKeys: defaultMaxKeys, buckets: map[string]*bucket{}}
}

// bucketLocked returns key's bucket, making one if there is room; nil if the map is full of
// busy keys. l.mu is held.
func (l *Limiter) bucketLocked(key string, now time.Time) *bucket {
	if now.Sub(l.swept) > sweepEvery {
		l.sweepLocked(now)
	}
	if b, ok := l.buckets[key]; ok {
		return b
	}
	if len(l.buckets) >= l.maxKeys {
		if now.Sub(l.fullSwept) < time.Second {
			return nil
		}
		l.fullSwept = now
		l.sweepLocked(now)
		if len(l.buckets) >= l.maxKeys {
			return nil
		}
	}
	b := &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
	l.buckets[key] = b
	return b
}

// sweepLocked forgets the keys whose buckets are full again. l.mu is held.
func (l *Limiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.attempts == 0 && b.lim.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
	l.swept = now
}

// Allow reports whether key may make a call now; if not, how long until it may.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now)
	if b == nil {
		return false, time.Second
	}
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

// peek reports whether key could make a call now, using up nothing; if not, how long until it
// could. A key not yet known could.
func (l *Limiter) peek(key string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return true, 0
	}
	if tokens := b.lim.TokensAt(now); tokens < 1 {
		return false, time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	}
	return true, 0
}

// attemptsAtOnce bounds, as a multiple of the burst, the attempts a key with no failures may
// have under way: a busy counter hands over a few orders at once, not dozens.
const attemptsAtOnce = 4

// Attempt starts an attempt charged only if it fails (a pickup code on its way to be checked).
// A key with no failures to pay off may make up to attemptsAtOnce times its burst at once: a
// busy counter is never slowed. Once it has some, attempts under way count against the calls
// it has left, so guesses sent all at once get no more tries than guesses sent one by one.
// done ends the attempt, charging a call if it failed.
func (l *Limiter) Attempt(key string) (done func(failed bool), ok bool, wait time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now)
	if b == nil {
		return nil, false, time.Second
	}
	tokens := b.lim.TokensAt(now)
	left := tokens - float64(b.attempts)
	if tokens < float64(l.burst) && left < 1 || b.attempts >= attemptsAtOnce*l.burst {
		return nil, false, time.Duration(max(1-left, 1) / float64(l.limit) * float64(time.Second))
	}
	b.attempts++
	return func(failed bool) {
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		b.attempts--
		if failed {
			b.lim.ReserveN(now, 1) // not cancelled: the debt is what slows the next attempts
		}
	}, true, 0
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

// ClientKey is the rate-limit key of a peer address ("host:port"): the IPv4 address, or the
// /64 of an IPv6 one, since one IPv6 client commonly holds a whole /64 and could otherwise call
// from a fresh address, with a fresh allowance, every time.
func ClientKey(peerAddr string) string {
	host, ip, ok := peerIP(peerAddr)
	if !ok {
		return host
	}
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}

// peerIP is the host of a peer address ("host:port", or a bare host) and, when it is an IP
// address, that address: IPv4-mapped IPv6 as IPv4, without a zone.
func peerIP(peerAddr string) (string, netip.Addr, bool) {
	host, _, err := net.SplitHostPort(peerAddr)
	if err != nil {
		host = peerAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host, netip.Addr{}, false
	}
	return host, ip.Unmap().WithZone(""), true
}

// LimitPerAddress is an interceptor that limits every call, unary or stream, by the caller's
// address (AddressLimiter): for procedures open to anyone, such as health and reflection. A stream
// counts as a call when it opens and again for every further message its client sends (one
// reflection stream can carry any number of requests), and each address may hold at most
// maxStreams open at once.
func LimitPerAddress(l *AddressLimiter, maxStreams int) connect.Interceptor {
	return limitPerAddress(l, maxStreams)
}

func limitPerAddress(l *AddressLimiter, maxStreams int) perAddress {
	return perAddress{l: l, streams: NewStreamLimit(maxStreams, "from this address"),
		siteStreams: NewStreamLimit(maxStreams*siteFactor, "from this network")}
}

type perAddress struct {
	l       *AddressLimiter
	streams *StreamLimit
	// siteStreams caps an IPv6 /48's open streams at siteFactor addresses' worth, as its rate
	// is capped: else one site, opening 16 from each of its 65,536 /64s, holds a million.
	siteStreams *StreamLimit
}

func (p perAddress) admit(peer connect.Peer) error {
	if ok, wait := p.l.Allow(peer.Addr); !ok {
		return RateLimited("calls from this address", wait)
	}
	return nil
}

// chargedKey marks the context of a call charged before its body (admitBeforeBody) to the
// AddressLimiter it holds.
type chargedKey struct{}

// admitBeforeBody charges a unary call to its address as soon as its headers are in (as an
// Admit for AdmitBeforeBody): charged only in WrapUnary, after the body, calls trickling their
// bodies from one address would each hold a handler up to bodyTimeout, as many as it liked.
func (p perAddress) admitBeforeBody(ctx context.Context, _ string, _ http.Header, peerAddr string) (context.Context, error) {
	if err := p.admit(connect.Peer{Addr: peerAddr}); err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, chargedKey{}, p.l), nil
}

func (p perAddress) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if ctx.Value(chargedKey{}) != p.l { // not charged before its body
			if err := p.admit(req.Peer()); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

func (p perAddress) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (p perAddress) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := p.admit(conn.Peer()); err != nil {
			return err
		}
		done, err := p.streams.Open(ClientKey(conn.Peer().Addr))
		if err != nil {
			return err
		}
		defer done()
		if site := siteKey(conn.Peer().Addr); site != "" {
			doneSite, err := p.siteStreams.Open(site)
			if err != nil {
				return err
			}
			defer doneSite()
		}
		return next(ctx, &chargedConn{StreamingHandlerConn: conn, charge: func() error { return p.admit(conn.Peer()) }})
	}
}

// chargedConn charges every message its client sends after the first (the opening paid for
// that one).
type chargedConn struct {
	connect.StreamingHandlerConn
	charge   func() error
	received bool
}

func (c *chargedConn) Receive(msg any) error {
	if c.received {
		if err := c.charge(); err != nil {
			return err
		}
	}
	c.received = true
	return c.StreamingHandlerConn.Receive(msg)
}
