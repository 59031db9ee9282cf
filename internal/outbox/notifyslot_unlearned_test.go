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

// A relay is told of a writer of its process leaving out its NOTIFY from its start, whether or
// not it has relayed its schema's events yet: it may have just started, or the other copy's
// relay may have taken every round so far (the advisory lock is a try-lock, so a NOTIFY wakes
// both and one of them relays). A review of the first fix (f230d34), which told only relays
// that had relayed an event's source, found this one left waiting for its next poll.
func TestAnEventWhoseNotifySlotWasTakenByARolledBackWriterIsRelayedPromptlyByARelayThatHasNotRelayedItsSourceYet(t *testing.T) {
	e := setup(t)
	ctx := context.Background()

	// The other copy's relay relays this schema's events for a while, then that copy stops (a
	// rolling upgrade): this process's relay, started meanwhile, took none of its rounds.
	other, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}).Run(other)
	}()
	waitListening(t, e.pool)
	time.Sleep(2 * outbox.NotifyGap)
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("earlier"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitForStreamCount(t, e.js, 1, 10*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))
	waitListening(t, e.pool)
	time.Sleep(time.Second) // the relay is idle

	slotTakenByARollback(t, e)
}
