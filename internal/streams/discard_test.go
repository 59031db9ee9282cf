package streams_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// operatorLimits sets, on the events stream, a size limit with the discard policy an operator
// picks so that a full stream refuses new events (which the outbox then keeps, and alerts on:
// HandoffOutboxNotRelayed names "a full stream") rather than deleting events consumers have not
// read yet.
func operatorLimits(t *testing.T, js jetstream.JetStream, edit func(*jetstream.StreamConfig)) {
	t.Helper()
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	edit(&cfg)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("operator's edit: %v", err)
	}
}

// Ensure keeps an operator's MaxMsgs/MaxBytes but puts the discard policy back to DiscardOld:
// the limit the operator set to refuse events now deletes the oldest ones instead, read or not.
// An event Postgres committed and the relay saw acknowledged is then gone before the consumer
// behind reads it, and nothing (no failed publish, no backlog, no terminated event) says so.
func TestEnsureKeepsTheOperatorsDiscardPolicyWithTheLimitsItKeeps(t *testing.T) {
	s := testenv.NATS(t)
	ctx := t.Context()
	js, err := jetstream.New(testenv.NATSConn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	operatorLimits(t, js, func(c *jetstream.StreamConfig) { c.MaxMsgs, c.Discard = 3, jetstream.DiscardNew })

	// A consumer that is behind (not reading now).
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.EventsStream, jetstream.ConsumerConfig{
		Durable: "behind", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}

	// A process starts (a deploy, a restart).
	if err := streams.Ensure(ctx, js, streams.Config{Logger: testenv.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, streams.EventsStream)
	if got := st.CachedInfo().Config; got.MaxMsgs != 3 {
		t.Fatalf("max msgs %d, want the operator's 3", got.MaxMsgs)
	}

	var refused int
	for i := 1; i <= 5; i++ {
		m := nats.NewMsg(streams.EventSubject("fulfilment", "order", "confirmed"))
		m.Data = []byte(fmt.Sprint("event ", i))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("id-", i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			refused++ // the relay would keep the row and retry, and the backlog alert fire
		}
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(2e9))
	if err != nil {
		t.Fatal(err)
	}
	var first string
	n := 0
	for m := range batch.Messages() {
		if n == 0 {
			first = string(m.Data())
		}
		n++
	}
	st, _ = js.Stream(ctx, streams.EventsStream)
	t.Logf("discard policy after the start: %v; publishes refused: %d; consumer read %d, first %q", st.CachedInfo().Config.Discard, refused, n, first)
	if first != "event 1" {
		t.Errorf("the consumer behind never gets event 1 (it reads %d events from %q): acknowledged to the relay, then deleted unread; the operator's DiscardNew was replaced by %v",
			n, first, st.CachedInfo().Config.Discard)
	}
}

// With per-subject limits an operator may ask JetStream to refuse per subject
// (DiscardNewPerSubject, which requires DiscardNew). Ensure keeps the flag and the limit but sets
// DiscardOld, a combination the server refuses: every process then fails to start.
func TestEnsureStartsOnAStreamWithPerSubjectDiscardNew(t *testing.T) {
	s := testenv.NATS(t)
	js, err := jetstream.New(testenv.NATSConn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	operatorLimits(t, js, func(c *jetstream.StreamConfig) {
		c.MaxMsgsPerSubject, c.Discard, c.DiscardNewPerSubject = 100000, jetstream.DiscardNew, true
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10e9)
	defer cancel()
	if err := streams.Ensure(ctx, js, streams.Config{Logger: testenv.Logger(t)}); err != nil {
		t.Fatalf("a start on the operator's stream: %v", err)
	}
}
