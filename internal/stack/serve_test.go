package stack

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// On shutdown the background loops (the outbox relays) run until every server has drained, so
// that what the requests finishing in the grace write is still published; on a failure they
// stop at once.
func TestLoopsOutliveTheServersDrain(t *testing.T) {
	var drained, loopEnded atomic.Int64
	s := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll}}
	s.addServer(func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond) // the grace: requests finishing
		drained.Store(time.Now().UnixNano())
		return nil
	})
	s.addLoop("relay", func(ctx context.Context) error {
		<-ctx.Done()
		loopEnded.Store(time.Now().UnixNano())
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if loopEnded.Load() < drained.Load() {
		t.Fatalf("the loop stopped %v before the server had drained", time.Duration(drained.Load()-loopEnded.Load()))
	}

	// A failing server stops the loops at once, without a shutdown.
	failing := &system{log: slog.New(slog.DiscardHandler), cfg: Config{Target: TargetAll}}
	failing.addServer(func(context.Context) error { return errors.New("listener broke") })
	failing.addLoop("relay", func(ctx context.Context) error { <-ctx.Done(); return nil })
	errc := make(chan error, 1)
	go func() { errc <- failing.serve(t.Context(), nil) }()
	select {
	case err := <-errc:
		if err == nil || err.Error() != "listener broke" {
			t.Fatalf("serve with a failing server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failing server did not stop the loops")
	}
}
