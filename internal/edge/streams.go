package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// StreamLimit bounds the streams one key (a token's subject) may hold open at once: each holds
// a goroutine here and work behind it (a watch polls its order), and a rate limit counts only
// their openings.
type StreamLimit struct {
	max  int
	per  string // what a key is, for the refusal: "with this token"
	mu   sync.Mutex
	open map[string]int
}

// NewStreamLimit allows max open streams per key; per says what a key is ("with this token",
// "from this address").
func NewStreamLimit(max int, per string) *StreamLimit {
	return &StreamLimit{max: max, per: per, open: map[string]int{}}
}

// streamRetry is the retry delay a refused stream is given: a place frees only when one of
// the caller's streams ends, whenever that is; the delay spaces a client's attempts (as every
// other refusal of the edge does) rather than promising a place.
const streamRetry = 2 * time.Second

// Open counts a stream of key, or refuses it with ResourceExhausted when key has max open.
// done ends it.
func (s *StreamLimit) Open(key string) (done func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[key] >= s.max {
		return nil, RateLimited(fmt.Sprintf("open streams (%d at once %s)", s.max, s.per), streamRetry)
	}
	s.open[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[key]--; s.open[key] == 0 {
				delete(s.open, key)
			}
		})
	}, nil
}

var errTokenExpired = errors.New("the token expired")

// UntilExpiry runs a stream's handler until the token that opened it expires, then ends it with
// Unauthenticated, so the client opens it again with a fresh token: a stream must not outlive
// its caller's right to it; one stuck in a send has its writes cut (its WriteControl) a grace
// later. A zero expires means the token does not expire.
//
// The expiry cancels the stream rather than setting a deadline: gRPC would send a deadline on
// to the service (grpc-timeout), whose own timer could then end the stream first, cleanly or as
// DeadlineExceeded, before this one had fired, and the client would read that as the watch
// being over or retry with its dead token.
func UntilExpiry(ctx context.Context, expires time.Time, run func(context.Context) error) error {
	if expires.IsZero() {
		return run(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(time.Until(expires), func() {
		cancel(errTokenExpired)
		WriteControlOf(ctx).CutLater() // a send stuck on a client that reads nothing
	})
	defer timer.Stop()
	err := run(ctx)
	if errors.Is(context.Cause(ctx), errTokenExpired) {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("the token expired; open the stream again with a fresh one"))
	}
	return err
}
