package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var orderConfirmed = streams.EventSubject("fulfilment", "order", "confirmed")

type env struct {
	pool *pgxpool.Pool
	nats *server.Server
	js   jetstream.JetStream
}

// setup gives a fresh schema with an effects table (what a handler changes)
// and a NATS server with the Handoff streams.
func setup(t *testing.T) env {
	t.Helper()
	pool := testenv.Pool(t, "", nil)
	if _, err := pool.Exec(t.Context(), `CREATE TABLE effects (event_id text NOT NULL, value text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	s := testenv.NATS(t)
	e := env{pool: pool, nats: s, js: newJS(t, s)}
	if err := streams.Ensure(t.Context(), e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func newJS(t *testing.T, s *server.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(testenv.NATSConn(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publish sends an event the way the outbox relay does (no id: like a
// publisher that is not the outbox).
func publish(t testing.TB, js jetstream.JetStream, subject, id, value string) {
	t.Helper()
	data, _ := proto.Marshal(wrapperspb.String(value))
	m := nats.NewMsg(subject)
	m.Data = data
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	m.Header.Set(outbox.EventTypeHeader, "google.protobuf.StringValue")
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
}

// recordEffect is a handler whose effect is one row per handled event.
func recordEffect(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var v wrapperspb.StringValue
	if err := inbox.Decode(msg, &v); err != nil {
		return err
	}
	id, err := inbox.EventID(msg)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO effects (event_id, value) VALUES ($1, $2)`, id, v.GetValue())
	return err
}

func config(t *testing.T, durable string) inbox.Config {
	return inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        durable,
		FilterSubjects: []string{"handoff.fulfilment.>"},
		Backoff:        []time.Duration{20 * time.Millisecond},
		Logger:         testenv.Logger(t),
	}
}

// run consumes until stop is called or the test ends.
func run(t *testing.T, pool *pgxpool.Pool, js jetstream.JetStream, cfg inbox.Config, h inbox.Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inbox.Run(ctx, pool, js, cfg, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("inbox.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func effects(t testing.TB, pool *pgxpool.Pool) (rows, distinct int) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id) FROM effects`).Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

func waitForEffects(t *testing.T, pool *pgxpool.Pool, want int) {
	t.Helper()
	testenv.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if rows, _ := effects(t, pool); rows != want {
			return fmt.Errorf("%d effects, want %d", rows, want)
		}
		return nil
	})
}

// waitSettled waits until the consumer has acked (or terminated) everything
// delivered to it and nothing is waiting: the server will not redeliver.
func waitSettled(t *testing.T, js jetstream.JetStream, durable string, delivered uint64) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	testenv.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		cons, err := js.Consumer(context.Background(), streams.EventsStream, durable)
		if err != nil {
			return err
		}
		info, err = cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream < delivered {
			return fmt.Errorf("consumer %s: %d pending, %d unacked, ack floor %d (want %d)",
				durable, info.NumPending, info.NumAckPending, info.AckFloor.Stream, delivered)
		}
		return nil
	})
	return info
}

func TestRedeliveryAfterConsumerResetChangesNothing(t *testing.T) {
	e := setup(t)
	var calls atomic.Int32
	handler := func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		calls.Add(1)
		return recordEffect(ctx, tx, msg)
	}
	for i := range 5 {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), fmt.Sprint("order-", i))
	}
	stop := run(t, e.pool, e.js, config(t, "effects"), handler)
	waitForEffects(t, e.pool, 5)
	waitSettled(t, e.js, "effects", 5)
	stop()

	// Acks lost / consumer replayed: JetStream delivers all five again.
	if err := e.js.DeleteConsumer(t.Context(), streams.EventsStream, "effects"); err != nil {
		t.Fatal(err)
	}
	run(t, e.pool, e.js, config(t, "effects"), handler)
	info := waitSettled(t, e.js, "effects", 5)
	if info.Delivered.Consumer != 5 {
		t.Fatalf("replayed consumer delivered %d messages, want 5", info.Delivered.Consumer)
	}
	if rows, distinct := effects(t, e.pool); rows != 5 || distinct != 5 {
		t.Fatalf("after redelivery: %d effects (%d distinct), want 5", rows, distinct)
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("handler ran %d times for 5 events delivered twice; duplicates must be skipped before it", n)
	}
}

// storedTwice publishes event id on subject twice into a new stream with the shortest duplicate
// window the server allows, the second time once the window has passed, so both copies are
// stored, as after an outbox's publish again past the 2 minutes of a real stream.
func storedTwice(t *testing.T, e env, stream, subject, id string) {
	t.Helper()
	if _, err := e.js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: stream, Subjects: []string{subject}, Duplicates: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	publish(t, e.js, subject, id, "order-1")
	testenv.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, id)
		ack, err := e.js.PublishMsg(t.Context(), m)
		if err != nil {
			return err
		}
		if ack.Duplicate {
			return errors.New("still inside the duplicate window")
		}
		return nil
	})
}

// bothCopiesAcked waits until the durable consumer has acknowledged both of storedTwice's copies.
func bothCopiesAcked(t *testing.T, e env, stream, durable string) {
	t.Helper()
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		cons, err := e.js.Consumer(t.Context(), stream, durable)
		if err != nil {
			return err
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.AckFloor.Stream != 2 {
			return fmt.Errorf("ack floor %d, want both copies acked", info.AckFloor.Stream)
		}
		return nil
	})
}

func TestSameEventPublishedAgainBeyondTheDuplicateWindowTakesEffectOnce(t *testing.T) {
	e := setup(t)
	storedTwice(t, e, "SHORT_WINDOW", "test.short.order", "evt-1")

	cfg := config(t, "short")
	cfg.Stream, cfg.FilterSubjects = "SHORT_WINDOW", nil
	var calls atomic.Int32
	run(t, e.pool, e.js, cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO effects (event_id, value) VALUES ('evt-1', 'x')`)
		return err
	})
	bothCopiesAcked(t, e, "SHORT_WINDOW", "short")
	if rows, _ := effects(t, e.pool); rows != 1 || calls.Load() != 1 {
		t.Fatalf("two copies of one event: %d effects, handler ran %d times; want 1 and 1", rows, calls.Load())
	}
}

func TestHandlerErrorIsRetriedUntilOneEffect(t *testing.T) {
	e := setup(t)
	var attempts atomic.Int32
	run(t, e.pool, e.js, config(t, "flaky"), func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		// The effect is written before failing: the rollback must undo it.
		if err := recordEffect(ctx, tx, msg); err != nil {
			return err
		}
		if attempts.Add(1) < 3 {
			return errors.New("inventory briefly unavailable")
		}
		return nil
	})
	publish(t, e.js, orderConfirmed, "evt-1", "order-1")
	waitSettled(t, e.js, "flaky", 1)
	if rows, _ := effects(t, e.pool); rows != 1 || attempts.Load() != 3 {
		t.Fatalf("%d effects after %d attempts; want 1 after 3", rows, attempts.Load())
	}
}

func TestPermanentErrorTerminatesTheMessageWithoutRetry(t *testing.T) {
	e := setup(t)
	var attempts atomic.Int32
	run(t, e.pool, e.js, config(t, "strict"), func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		var v wrapperspb.StringValue
		if err := inbox.Decode(msg, &v); err != nil {
			return err
		}
		if v.GetValue() == "poison" {
			attempts.Add(1)
			if err := recordEffect(ctx, tx, msg); err != nil {
				return err
			}
			return inbox.Permanent(fmt.Errorf("order %s can never exist", v.GetValue()))
		}
		return recordEffect(ctx, tx, msg)
	})
	publish(t, e.js, orderConfirmed, "evt-poison", "poison")
	publish(t, e.js, orderConfirmed, "evt-good", "good")
	info := waitSettled(t, e.js, "strict", 2)
	if info.NumRedelivered != 0 || attempts.Load() != 1 {
		t.Fatalf("poison event: %d attempts, %d redelivered; want 1 and 0", attempts.Load(), info.NumRedelivered)
	}
	if rows, _ := effects(t, e.pool); rows != 1 {
		t.Fatalf("%d effects, want only the good event's", rows)
	}
	var recorded int
	_ = e.pool.QueryRow(t.Context(), `SELECT count(*) FROM processed_events WHERE event_id = 'evt-poison'`).Scan(&recorded)
	if recorded != 0 {
		t.Fatal("terminated event recorded as processed")
	}
}

func TestTwoConsumersOnOneDurableShareTheWorkWithoutDoubleEffects(t *testing.T) {
	e := setup(t)
	var handledBy [2]atomic.Int32
	for i := range handledBy {
		cfg := config(t, "shared")
		cfg.Concurrency = 4
		// Each copy has its own NATS connection, as separate processes would.
		run(t, e.pool, newJS(t, e.nats), cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
			handledBy[i].Add(1)
			return recordEffect(ctx, tx, msg)
		})
	}
	// Both copies are pulling before anything is published.
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		cons, err := e.js.Consumer(t.Context(), streams.EventsStream, "shared")
		if err != nil {
			return err
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumWaiting < 2 {
			return fmt.Errorf("%d pull requests waiting, want both copies", info.NumWaiting)
		}
		return nil
	})
	const total = 300
	for i := range total {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), fmt.Sprint("order-", i))
	}
	waitSettled(t, e.js, "shared", total)
	if rows, distinct := effects(t, e.pool); rows != total || distinct != total {
		t.Fatalf("%d effects (%d distinct), want %d", rows, distinct, total)
	}
	if handledBy[0].Load() == 0 || handledBy[1].Load() == 0 {
		t.Fatalf("handled per copy: %d, %d; want both to share", handledBy[0].Load(), handledBy[1].Load())
	}
}

func TestMessageWithoutMsgIDIsIdentifiedByStreamSequence(t *testing.T) {
	e := setup(t)
	run(t, e.pool, e.js, config(t, "anon"), recordEffect)
	publish(t, e.js, orderConfirmed, "", "order-1")
	waitForEffects(t, e.pool, 1)
	var id string
	if err := e.pool.QueryRow(t.Context(), `SELECT event_id FROM processed_events WHERE consumer = 'anon'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if id != streams.EventsStream+":1" {
		t.Fatalf("event id %q, want %s:1", id, streams.EventsStream)
	}
}

func TestDecodeOfTheWrongTypeIsPermanent(t *testing.T) {
	e := setup(t)
	var decodeErr atomic.Value
	run(t, e.pool, e.js, config(t, "typed"), func(_ context.Context, _ pgx.Tx, msg jetstream.Msg) error {
		err := inbox.Decode(msg, &wrapperspb.Int64Value{})
		decodeErr.Store(fmt.Sprint(err, " permanent=", inbox.IsPermanent(err)))
		return err
	})
	publish(t, e.js, orderConfirmed, "evt-1", "order-1")
	waitSettled(t, e.js, "typed", 1)
	if got := decodeErr.Load(); got == nil || got.(string) != "inbox: message on handoff.fulfilment.order.confirmed is a google.protobuf.StringValue, not a google.protobuf.Int64Value permanent=true" {
		t.Fatalf("Decode error: %v", got)
	}
}

func TestOutboxEventsReachTheInboxUnderTheirEventID(t *testing.T) {
	e := setup(t)
	var ids []string
	err := pgx.BeginFunc(t.Context(), e.pool, func(tx pgx.Tx) error {
		for i := range 3 {
			id, err := outbox.Enqueue(t.Context(), tx, orderConfirmed, wrapperspb.String(fmt.Sprint("order-", i)))
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Run(relayCtx)
	}()
	t.Cleanup(func() { stopRelay(); <-relayDone })

	run(t, e.pool, e.js, config(t, "e2e"), recordEffect)
	waitForEffects(t, e.pool, 3)
	for _, id := range ids {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM effects WHERE event_id = $1`, id).Scan(&n); err != nil || n != 1 {
			t.Fatalf("event %s: %d effects (%v), want 1", id, n, err)
		}
	}
}

// A consumer that stops takes its pull subscription off the server before Run returns:
// events published right after reach the next consumer at once, not after their ack wait
// (30s here) spent in a client that no longer listens.
func TestAStoppedConsumerLeavesNothingForTheServerToDeliverToIt(t *testing.T) {
	e := setup(t)
	cfg := config(t, "handover")
	cfg.AckWait = 30 * time.Second
	stop := run(t, e.pool, e.js, cfg, recordEffect)
	publish(t, e.js, orderConfirmed, "before", "v")
	waitForEffects(t, e.pool, 1)
	stop()

	cons, err := e.js.Consumer(t.Context(), streams.EventsStream, "handover")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumWaiting != 0 {
		t.Fatalf("%d pull requests still waiting on the server after Run returned; want none", info.NumWaiting)
	}
	for i := range 20 {
		publish(t, e.js, orderConfirmed, fmt.Sprintf("after-%d", i), "v")
	}
	run(t, e.pool, e.js, cfg, recordEffect)
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if rows, _ := effects(t, e.pool); rows != 21 {
			return fmt.Errorf("%d of 21 events handled; the rest wait out their ack wait", rows)
		}
		return nil
	})
}

// A handler cut short at shutdown on a message's last allowed delivery hands it back, and the
// next copy handles it: JetStream counts the delivery cut short, and made none after it, so the
// event was dropped, neither handled nor terminated (and nothing logged).
func TestAnEventHandedBackAtShutdownOnItsLastDeliveryIsHandledByTheNextCopy(t *testing.T) {
	e := setup(t)
	cfg := config(t, "last-delivery")
	cfg.MaxDeliver = 1
	started := make(chan struct{}, 1)
	stop := run(t, e.pool, e.js, cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // still at work when the process is told to stop
		return ctx.Err()
	})
	publish(t, e.js, orderConfirmed, "evt-last", "order-1")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never started")
	}
	stop()
	run(t, e.pool, e.js, cfg, recordEffect)
	testenv.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if rows, _ := effects(t, e.pool); rows != 1 {
			return fmt.Errorf("the event handed back on its last delivery has %d effects; want 1", rows)
		}
		return nil
	})
}

// The wait before a consumer is declared again starts from the shortest after a session that
// worked: blips spread over a process's life (a NATS restart, a cluster's election) each hold
// events back a moment, not the 10 s the wait grows to. Before, it never came down.
func TestTheWaitBeforeDeclaringAgainStartsOverAfterASessionThatWorked(t *testing.T) {
	e := setup(t)
	run(t, e.pool, e.js, config(t, "blips"), recordEffect)
	// Waiting for the session's pull request, not only the consumer, makes each deletion one
	// the server answers at once (a deletion between the declaration and the first pull is
	// noticed only by the missing heartbeats; TestASessionWhosePullsNobodyAnswersEndsWithinSeconds).
	exists := func() {
		t.Helper()
		testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			cons, err := e.js.Consumer(t.Context(), streams.EventsStream, "blips")
			if err != nil {
				return err
			}
			if info := cons.CachedInfo(); info.NumWaiting == 0 {
				return errors.New("no pull request waiting on the consumer yet")
			}
			return nil
		})
	}
	n := 0
	for range 9 {
		exists()
		if err := e.js.DeleteConsumer(t.Context(), streams.EventsStream, "blips"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", n), "v")
		n++
		waitForEffects(t, e.pool, n)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("blip %d, after sessions that handled events, held events back %s", n, took.Round(100*time.Millisecond))
		}
	}
}

// A consume session whose consumer is gone with nobody told (deleted while the session's first
// pull was on its way: the server neither answers the pull nor says the consumer was deleted)
// ends when the heartbeats it asked for do not come, and Run declares the consumer again. With
// nats.go's defaults (a 15 s heartbeat, missed twice) that took half a minute, events held back
// all the while; a deletion storm showed it about one time in four.
func TestASessionWhosePullsNobodyAnswersEndsWithinSeconds(t *testing.T) {
	e := setup(t)
	cfg := config(t, "unanswered")
	cons, err := e.js.CreateOrUpdateConsumer(t.Context(), streams.EventsStream, jetstream.ConsumerConfig{
		Durable: cfg.Durable, FilterSubjects: cfg.FilterSubjects, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.js.DeleteConsumer(t.Context(), streams.EventsStream, cfg.Durable); err != nil {
		t.Fatal(err)
	}
	// Something takes the pulls and answers none: without it the server would say no one
	// listens (no responders), which ends a session at once.
	nc := testenv.NATSConn(t, e.nats)
	swallow, err := nc.Subscribe(fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", streams.EventsStream, cfg.Durable), func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer swallow.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = inbox.ConsumeOnce(ctx, e.pool, cfg, cons)
	took := time.Since(start)
	if !errors.Is(err, jetstream.ErrNoHeartbeat) {
		t.Fatalf("the session ended with %v after %s; want the missing heartbeats", err, took.Round(100*time.Millisecond))
	}
	// 15 s: well above the 6 s it takes, well below the 30 s it took.
	if took > 15*time.Second {
		t.Fatalf("a session nobody answers ended after %s", took.Round(100*time.Millisecond))
	}
}
