package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/coalesce"
)

// gate is a run function that records its batches and holds each until released.
type gate struct {
	mu      sync.Mutex
	batches [][]int
	started chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan struct{}, 100), release: make(chan struct{}, 100)}
}

func (g *gate) run(_ context.Context, reqs []int) []coalesce.Result[string] {
	g.mu.Lock()
	g.batches = append(g.batches, slices.Clone(reqs))
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.release
	out := make([]coalesce.Result[string], len(reqs))
	for i, r := range reqs {
		if r < 0 {
			out[i].Err = fmt.Errorf("refused %d", r)
			continue
		}
		out[i].Value = fmt.Sprint("done ", r)
	}
	return out
}

func TestRequestsArrivingDuringABatchGoTogetherInTheNextAndEachGetsItsOwnResult(t *testing.T) {
	g := newGate()
	b := coalesce.New(3, g.run)
	results := make([]string, 6)
	errs := make([]error, 6)
	var wg sync.WaitGroup
	do := func(i int) {
		wg.Go(func() {
			req := i
			if i == 4 {
				req = -4
			}
			results[i], errs[i] = b.Do(t.Context(), req)
		})
	}
	do(0)
	<-g.started // the first batch runs, alone: a lone request waits for nobody
	for i := 1; i < 6; i++ {
		do(i)
	}
	waitQueued(t, b, 5)
	g.release <- struct{}{}
	<-g.started
	g.release <- struct{}{}
	<-g.started
	g.release <- struct{}{}
	wg.Wait()

	sizes := []int{len(g.batches[0]), len(g.batches[1]), len(g.batches[2])}
	if len(g.batches) != 3 || !slices.Equal(sizes, []int{1, 3, 2}) || g.batches[0][0] != 0 {
		t.Fatalf("batches %v; want [0], then the five queued meanwhile in batches of at most 3", g.batches)
	}
	for i := range 6 {
		switch {
		case i == 4 && (errs[i] == nil || errs[i].Error() != "refused -4"):
			t.Errorf("request 4: %q, %v; want its own refusal", results[i], errs[i])
		case i != 4 && (errs[i] != nil || results[i] != fmt.Sprint("done ", i)):
			t.Errorf("request %d: %q, %v; want its own result", i, results[i], errs[i])
		}
	}
}

func TestACallerGoneBeforeItsBatchBeganIsLeftOut(t *testing.T) {
	g := newGate()
	b := coalesce.New(10, g.run)
	first := make(chan error, 1)
	go func() { _, err := b.Do(t.Context(), 1); first <- err }()
	<-g.started

	ctx, cancel := context.WithCancel(t.Context())
	gone := make(chan error, 1)
	go func() { _, err := b.Do(ctx, 2); gone <- err }()
	stays := make(chan string, 1)
	go func() { v, _ := b.Do(t.Context(), 3); stays <- v }()
	waitQueued(t, b, 2)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v; want context.Canceled", err)
	}
	g.release <- struct{}{}
	<-g.started
	g.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if v := <-stays; v != "done 3" {
		t.Fatalf("the caller that stayed got %q", v)
	}
	if len(g.batches) != 2 || !slices.Equal(g.batches[1], []int{3}) {
		t.Fatalf("batches %v; want the cancelled request left out of the second", g.batches)
	}
}

func TestManyConcurrentCallersAllGetTheirResults(t *testing.T) {
	var mu sync.Mutex
	batches := 0
	b := coalesce.New(16, func(_ context.Context, reqs []int) []coalesce.Result[int] {
		mu.Lock()
		batches++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		out := make([]coalesce.Result[int], len(reqs))
		for i, r := range reqs {
			out[i].Value = r * 2
		}
		return out
	})
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Go(func() {
			if v, err := b.Do(t.Context(), i); err != nil || v != 2*i {
				t.Errorf("request %d: %d, %v", i, v, err)
			}
		})
	}
	wg.Wait()
	if batches >= 500 {
		t.Fatalf("%d batches for 500 concurrent requests; want them run together", batches)
	}
	t.Logf("500 concurrent requests in %d batches", batches)
}

// waitQueued waits until n requests wait for a batch.
// secondBatch calls b.Do with requests 0 to n-1, request bad as -bad: request 0 alone in a
// first batch, which run holds (signalling started) until release, and the others queued
// meanwhile, to go together as the second. It returns each request's result and error.
func secondBatch(t *testing.T, b *coalesce.Batcher[int, string], n, bad int, started, release chan struct{}) ([]string, []error) {
	t.Helper()
	results, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	do := func(i int) {
		wg.Go(func() {
			req := i
			if i == bad {
				req = -bad
			}
			results[i], errs[i] = b.Do(t.Context(), req)
		})
	}
	do(0)
	<-started
	for i := 1; i < n; i++ {
		do(i)
	}
	waitQueued(t, b, n-1)
	close(release)
	wg.Wait()
	return results, errs
}

func waitQueued(t *testing.T, b interface{ Queued() int }, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.Queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", b.Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A batch that fails as a whole (FailAll) has each of its requests run again alone: the one at
// fault gets its own error, the others their results, and a lone failing request its error
// without another try.
func TestABatchThatFailsAsAWholeHasEachRequestRunAlone(t *testing.T) {
	var (
		mu      sync.Mutex
		batches [][]int
	)
	started, release := make(chan struct{}, 1), make(chan struct{})
	run := func(_ context.Context, reqs []int) []coalesce.Result[string] {
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, slices.Clone(reqs))
		mu.Unlock()
		if first {
			started <- struct{}{}
			<-release // the others queue meanwhile, and go as the next batch
		}
		if slices.ContainsFunc(reqs, func(r int) bool { return r < 0 }) {
			return coalesce.FailAll[string](len(reqs), fmt.Errorf("statement refused (%d requests)", len(reqs)))
		}
		out := make([]coalesce.Result[string], len(reqs))
		for i, r := range reqs {
			out[i].Value = fmt.Sprint("done ", r)
		}
		return out
	}
	const n = 12
	results, errs := secondBatch(t, coalesce.New(16, run), n, 7, started, release)

	for i := range n {
		switch {
		case i == 7 && (errs[i] == nil || errs[i].Error() != "statement refused (1 requests)"):
			t.Errorf("the faulty request: %q, %v; want the error of its own statement", results[i], errs[i])
		case i != 7 && (errs[i] != nil || results[i] != fmt.Sprint("done ", i)):
			t.Errorf("request %d: %q, %v; want its result", i, results[i], errs[i])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// [0], then the 11 others together (failed), then each of them alone.
	if len(batches) != 2+n-1 || len(batches[1]) != n-1 {
		t.Errorf("batches %v; want [0], the other %d together, then each of those alone", batches, n-1)
	}
}

// A batch that panics fails its requests, not the process: the batch runs on a goroutine no
// server's recovery reaches. Its requests are not run again (the batch may have committed
// before it panicked); each gets an error that carries the panic, and the next batch runs.
func TestABatchThatPanicsFailsItsRequestsNotTheProcess(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	var (
		first sync.Once
		runs  atomic.Int32
	)
	run := func(_ context.Context, reqs []int) []coalesce.Result[string] {
		first.Do(func() {
			started <- struct{}{}
			<-release
		})
		runs.Add(int32(len(reqs)))
		out := make([]coalesce.Result[string], len(reqs))
		for i, r := range reqs {
			if r < 0 {
				panic(fmt.Sprintf("bug on %d", r))
			}
			out[i].Value = fmt.Sprint("done ", r)
		}
		return out
	}
	b := coalesce.New(16, run)
	const n = 8
	results, errs := secondBatch(t, b, n, 5, started, release)
	if errs[0] != nil || results[0] != "done 0" {
		t.Errorf("the first batch: %q, %v; want its result", results[0], errs[0])
	}
	for i := 1; i < n; i++ {
		if errs[i] == nil || !strings.Contains(errs[i].Error(), "batch panicked: bug on -5") {
			t.Errorf("request %d of the batch that panicked: %q, %v; want the panic as its error", i, results[i], errs[i])
		}
	}
	if got := runs.Load(); got != n {
		t.Errorf("requests run %d times; want %d (none run again after the panic)", got, n)
	}
	if res, err := b.Do(t.Context(), 9); err != nil || res != "done 9" {
		t.Errorf("a batch after the panic: %q, %v; want its result", res, err)
	}
}

// A caller that leaves while its batch runs gets its context's error, and what the batch
// decided for it is undone; one that stays gets its result and no undo, and a request the batch
// refused has nothing to undo.
func TestWhatABatchDecidesForACallerThatLeftIsUndone(t *testing.T) {
	g := newGate()
	b := coalesce.New(10, g.run)
	undone := make(chan string, 10)
	undo := func(v string) { undone <- v }

	ctx, cancel := context.WithCancel(t.Context())
	left := make(chan error, 1)
	go func() { _, err := b.DoUndo(ctx, 1, undo); left <- err }()
	<-g.started // its batch has begun: the request will be decided
	refusedCtx, cancelRefused := context.WithCancel(t.Context())
	refused := make(chan error, 1)
	go func() { _, err := b.DoUndo(refusedCtx, -2, undo); refused <- err }()
	stays := make(chan string, 1)
	go func() { v, _ := b.DoUndo(t.Context(), 3, undo); stays <- v }()
	waitQueued(t, b, 2)
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that left got %v; want context.Canceled", err)
	}
	g.release <- struct{}{}
	if v := <-undone; v != "done 1" {
		t.Fatalf("undone %q; want the left caller's result", v)
	}
	<-g.started // the second batch: -2 and 3 together
	cancelRefused()
	if err := <-refused; !errors.Is(err, context.Canceled) {
		t.Fatalf("the refused caller that left got %v", err)
	}
	g.release <- struct{}{}
	if v := <-stays; v != "done 3" {
		t.Fatalf("the caller that stayed got %q", v)
	}
	select {
	case v := <-undone:
		t.Fatalf("undone %q: only a result decided for a caller that left is undone", v)
	case <-time.After(50 * time.Millisecond):
	}
}

// A batcher made with a size below one answers its requests, one at a time. Before, its
// batches of none were taken for an empty queue and every caller waited for ever.
func TestABatcherOfSizeZeroStillAnswers(t *testing.T) {
	b := coalesce.New(0, func(_ context.Context, reqs []int) []coalesce.Result[int] {
		out := make([]coalesce.Result[int], len(reqs))
		for i, r := range reqs {
			out[i].Value = r
		}
		return out
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if v, err := b.Do(ctx, 7); err != nil || v != 7 {
		t.Fatalf("Do on a batcher of size 0 = %d, %v; want 7", v, err)
	}
}
