package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A writer skips its NOTIFY when another transaction of this process claimed the slot less than
// NotifyGap ago (see NotifyGap: "an event thus waits at most about one gap"). That other
// transaction's NOTIFY is sent only if, and when, it commits: here it rolls back (a validation
// failure after the enqueue, a serialization failure, a lost lock race), so nobody wakes the idle
// relay for the event that did commit, and it waits for the relay's next poll.
func TestAnEventWhoseNotifySlotWasTakenByARolledBackWriterIsStillRelayedPromptly(t *testing.T) {
	e := setup(t)
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))
	waitListening(t, e.pool)
	ctx := context.Background()
	time.Sleep(2 * outbox.NotifyGap) // let an earlier test's NOTIFY slot pass: this one NOTIFYs
	// The relay has relayed this source's events before (a relay learns its sources from what
	// it relays; the first event of a source in a process always NOTIFYs).
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("earlier"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitForStreamCount(t, e.js, 1, 10*time.Second)
	time.Sleep(2 * time.Second) // past its fast looks after that round: the relay is idle

	slotTakenByARollback(t, e)
}

// slotTakenByARollback has writer A enqueue first (it claims the NOTIFY slot) and roll back,
// and writer B enqueue within the gap and commit; B's event must be relayed within about one
// gap (2 s is over a hundred: production polls every 1 s, these relays every minute). Both
// transactions are open before either enqueues, so that the second enqueue comes within the
// gap even on a slow machine.
func slotTakenByARollback(t *testing.T, e env) {
	t.Helper()
	ctx := context.Background()
	a, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Rollback(ctx) }()
	b, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Rollback(ctx) }()
	if _, err := outbox.Enqueue(ctx, a, productCreated, wrapperspb.String("abandoned")); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Enqueue(ctx, b, productCreated, wrapperspb.String("committed")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitForStreamCount(t, e.js, 2, 2*time.Second)
	t.Logf("published %v after its commit", time.Since(start))
}
