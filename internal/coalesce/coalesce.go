// Package coalesce runs the like requests of concurrent callers together: while one batch is
// being written, the requests that arrive queue up and go as the next batch. Under load N
// callers then cost one statement (one round trip, one commit) instead of N; a lone caller
// waits for nobody, and nothing waits for a timer.
package coalesce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Batcher hands the requests of concurrent Do calls to run in batches, one batch at a time.
type Batcher[Req, Res any] struct {
	run func(ctx context.Context, reqs []Req) []Result[Res]
	max int

	mu      sync.Mutex
	queue   []*call[Req, Res]
	running bool
}

// Result is what run decided for one request.
type Result[Res any] struct {
	Value Res
	Err   error
}

type call[Req, Res any] struct {
	ctx  context.Context
	req  Req
	done chan Result[Res]
	// undo, when set (DoUndo), takes back what a batch decided for a caller that has gone;
	// state says whether the answer or the caller's leaving came first.
	undo  func(Res)
	state atomic.Int32
}

// A call with undo is answered or left, whichever comes first.
const (
	callWaiting int32 = iota
	callAnswered
	callLeft
)

// answer gives c its batch's result, or, its caller gone, undoes what the batch decided.
func (c *call[Req, Res]) answer(r Result[Res]) {
	if c.undo != nil && !c.state.CompareAndSwap(callWaiting, callAnswered) {
		if r.Err == nil {
			go c.undo(r.Value) // off the batch's goroutine: the next batch does not wait for it
		}
		return
	}
	c.done <- r
}

// New returns a batcher that calls run with at most size requests at a time. run must return
// one result per request, in their order. It gets a context of its own, without deadline,
// since a batch outlives any one caller who gives up: it should bound itself.
func New[Req, Res any](size int, run func(ctx context.Context, reqs []Req) []Result[Res]) *Batcher[Req, Res] {
	// A batch of none would be taken for an empty queue, and every request left unanswered.
	return &Batcher[Req, Res]{run: run, max: max(size, 1)}
}

// ErrRunAlone is the result run gives the requests of a batch that failed as a whole (see
// FailAll): one request's fault (a row the database refuses) fails the statement they shared.
// Do then runs each such request again in a batch of its own, which gives a failing one its
// own error and lets the others through.
var ErrRunAlone = errors.New("coalesce: batch failed; run the request alone")

// FailAll is run's answer to a batch of n requests that failed as a whole with err:
// ErrRunAlone for each of several, err itself for a lone one (it has nobody else to blame).
func FailAll[Res any](n int, err error) []Result[Res] {
	if n > 1 {
		err = ErrRunAlone
	}
	out := make([]Result[Res], n)
	for i := range out {
		out[i].Err = err
	}
	return out
}

// Do queues req, starts a batch if none is running, and waits for req's result. A caller whose
// ctx ends gets ctx's error; its request is still decided if its batch had begun. A request
// its batch answered ErrRunAlone is run again by itself, with run's context of its own.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	return b.DoUndo(ctx, req, nil)
}

// DoUndo is Do for a request whose effect must not outlast a caller that does not learn of it
// (a claim that would otherwise hold until it lapses): when ctx ends before the answer, and the
// batch then decides the request all the same (a result without error), undo is called with
// that result, on a goroutine of its own. A caller that gets the result gets no undo. A result
// without error may still say nothing was done (a zero value, say): undo must tell.
func (b *Batcher[Req, Res]) DoUndo(ctx context.Context, req Req, undo func(Res)) (Res, error) {
	res, err := b.together(ctx, req, undo)
	if !errors.Is(err, ErrRunAlone) {
		return res, err
	}
	r := b.runSafely(context.WithoutCancel(ctx), []Req{req})
	if len(r) != 1 {
		var zero Res
		return zero, errMissing
	}
	if undo != nil && r[0].Err == nil && ctx.Err() != nil {
		go undo(r[0].Value)
		var zero Res
		return zero, ctx.Err()
	}
	return r[0].Value, r[0].Err
}

// together runs req in the next batch.
func (b *Batcher[Req, Res]) together(ctx context.Context, req Req, undo func(Res)) (Res, error) {
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan Result[Res], 1), undo: undo}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := !b.running
	b.running = true
	b.mu.Unlock()
	if start {
		go b.drain()
	}
	select {
	case r := <-c.done:
		return r.Value, r.Err
	case <-ctx.Done():
		if c.undo != nil && !c.state.CompareAndSwap(callWaiting, callLeft) {
			r := <-c.done // answered as the caller was leaving: the result stands
			return r.Value, r.Err
		}
		var zero Res
		return zero, ctx.Err()
	}
}

// Queued is how many requests wait for a batch (not those in the running one).
func (b *Batcher[Req, Res]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// drain runs the queue, batch after batch, until it is empty.
func (b *Batcher[Req, Res]) drain() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.running = false
			b.queue = nil
			b.mu.Unlock()
			return
		}
		calls := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		b.runBatch(calls)
	}
}

func (b *Batcher[Req, Res]) runBatch(calls []*call[Req, Res]) {
	live := make([]*call[Req, Res], 0, len(calls))
	reqs := make([]Req, 0, len(calls))
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.answer(Result[Res]{Err: err}) // gone before its batch began: nothing to decide
			continue
		}
		live = append(live, c)
		reqs = append(reqs, c.req)
	}
	if len(live) == 0 {
		return
	}
	results := b.runSafely(context.Background(), reqs)
	for i, c := range live {
		if i < len(results) {
			c.answer(results[i])
		} else {
			c.answer(Result[Res]{Err: errMissing})
		}
	}
}

// runSafely calls run, turning a panic into every request's error. A batch runs on a
// goroutine of its own, out of reach of the servers' recovery: a panic there would take the
// whole process down, with every request in flight. The requests are not run again one by one
// (as for ErrRunAlone): run may have panicked after committing, and deciding committed work
// again could apply it twice. The panic is logged with its stack (slog's default logger, the
// process's), and each request's error carries it.
func (b *Batcher[Req, Res]) runSafely(ctx context.Context, reqs []Req) (results []Result[Res]) {
	defer func() {
		if p := recover(); p != nil {
			stack := debug.Stack()
			slog.Error("coalesce: a batch panicked; its requests fail", "requests", len(reqs), "panic", p, "stack", string(stack))
			err := fmt.Errorf("coalesce: batch panicked: %v", p)
			results = make([]Result[Res], len(reqs))
			for i := range results {
				results[i].Err = err
			}
		}
	}()
	return b.run(ctx, reqs)
}

type missingError struct{}

func (missingError) Error() string { return "coalesce: the batch gave no result for this request" }

var errMissing error = missingError{}
