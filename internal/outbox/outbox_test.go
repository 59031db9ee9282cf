package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var productCreated = streams.EventSubject("catalog", "product", "created")

type env struct {
	pool *pgxpool.Pool
	nats *server.Server
	js   jetstream.JetStream
}

func setup(t testing.TB) env {
	t.Helper()
	pool := testenv.Pool(t, "", nil)
	s := testenv.NATS(t)
	e := env{pool: pool, nats: s, js: newJS(t, s)}
	if err := streams.Ensure(t.Context(), e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func newJS(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(testenv.NATSConn(t, s), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// enqueue commits one transaction holding one event per value and returns
// the event ids in order.
func enqueue(t testing.TB, pool *pgxpool.Pool, values ...string) []string {
	t.Helper()
	var ids []string
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		for _, v := range values {
			id, err := outbox.Enqueue(context.Background(), tx, productCreated, wrapperspb.String(v))
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return ids
}

// runRelay runs r until the test ends.
func runRelay(t *testing.T, r *outbox.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Relay.Run: %v", err)
		}
	})
}

// published reads every message of the events stream, in stream order.
func published(t testing.TB, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	n := int(st.CachedInfo().State.Msgs)
	if n == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for len(msgs) < n {
		batch, err := cons.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		before := len(msgs)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) == before {
			t.Fatalf("read %d of %d stream messages", len(msgs), n)
		}
	}
	return msgs
}

func streamCount(js jetstream.JetStream) (int, error) {
	st, err := js.Stream(context.Background(), streams.EventsStream)
	if err != nil {
		return 0, err
	}
	return int(st.CachedInfo().State.Msgs), nil
}

func waitForStreamCount(t *testing.T, js jetstream.JetStream, want int, within time.Duration) {
	t.Helper()
	testenv.CheckFor(t, within, 20*time.Millisecond, func() error {
		n, err := streamCount(js)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("stream holds %d events, want %d", n, want)
		}
		return nil
	})
}

func outboxRows(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func msgIDs(msgs []jetstream.Msg) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Headers().Get(jetstream.MsgIDHeader)
	}
	return ids
}

func TestCommittedEventsArePublishedInOrderWithTheirIDs(t *testing.T) {
	e := setup(t)
	before := time.Now()
	ids := enqueue(t, e.pool, "espresso", "latte", "flat white")
	ids = append(ids, enqueue(t, e.pool, "mocha")...)
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}))

	waitForStreamCount(t, e.js, 4, 10*time.Second)
	msgs := published(t, e.js)
	if got := msgIDs(msgs); !slices.Equal(got, ids) {
		t.Fatalf("stream Nats-Msg-Ids %v, want enqueue order %v", got, ids)
	}
	for i, m := range msgs {
		if got := m.Headers().Get(outbox.EventTypeHeader); got != "google.protobuf.StringValue" {
			t.Errorf("event %d type header %q", i, got)
		}
		at, err := time.Parse(time.RFC3339Nano, m.Headers().Get(outbox.OccurredAtHeader))
		if err != nil || at.Before(before.Add(-time.Minute)) || at.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d occurred-at header %q (%v)", i, m.Headers().Get(outbox.OccurredAtHeader), err)
		}
		var v wrapperspb.StringValue
		if err := proto.Unmarshal(m.Data(), &v); err != nil || v.GetValue() != []string{"espresso", "latte", "flat white", "mocha"}[i] {
			t.Errorf("event %d payload %q, %v", i, v.GetValue(), err)
		}
		if m.Subject() != productCreated {
			t.Errorf("event %d subject %s", i, m.Subject())
		}
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := outboxRows(t, e.pool); n != 0 {
			return fmt.Errorf("%d rows left in the outbox after relaying", n)
		}
		return nil
	})
}

func TestRolledBackEventsAreNeverPublished(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("never happened")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	marker := enqueue(t, e.pool, "did happen")
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}))

	waitForStreamCount(t, e.js, 1, 10*time.Second)
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, marker) {
		t.Fatalf("stream holds %v, want only the committed event %v", got, marker)
	}
}

func TestNotifyWakesTheRelayLongBeforeItsPollInterval(t *testing.T) {
	e := setup(t)
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))

	// Wait until the relay is LISTENing, so that only a notification can
	// wake it for the event below.
	var channel string
	if err := e.pool.QueryRow(t.Context(), `SELECT `+outbox.ChannelSQL).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var n int
		err := e.pool.QueryRow(t.Context(),
			`SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND (query = format('LISTEN %I', $1::text) OR query = format('LISTEN "%s"', $1::text))`, channel).Scan(&n)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d connections listening on %s", n, channel)
		}
		return nil
	})

	// An earlier test's events may have used this process's NOTIFY slot (see NotifyGap): let
	// it pass so that this event's writer notifies.
	time.Sleep(outbox.NotifyGap)
	start := time.Now()
	enqueue(t, e.pool, "cold brew")
	waitForStreamCount(t, e.js, 1, 5*time.Second)
	t.Logf("published %v after commit", time.Since(start))
}

// Under a stream of small transactions, writers NOTIFY a few times, not once per event (each
// NOTIFY serialises commits server-wide), and yet every event is published promptly.
func TestEventStreamIsRelayedPromptlyWithFewNotifies(t *testing.T) {
	e := setup(t)
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))
	var channel string
	if err := e.pool.QueryRow(t.Context(), `SELECT `+outbox.ChannelSQL).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	listener, err := e.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(t.Context(), "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outbox.NotifyGap) // let an earlier test's NOTIFY slot pass

	const events = 200
	start := time.Now()
	for i := range events {
		enqueue(t, e.pool, fmt.Sprint("latte ", i))
	}
	waitForStreamCount(t, e.js, events, 10*time.Second)
	t.Logf("%d single-event transactions published %v after the first commit", events, time.Since(start))

	notifies := 0
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		_, err := listener.Conn().WaitForNotification(ctx)
		cancel()
		if err != nil {
			break
		}
		notifies++
	}
	if notifies == 0 || notifies > events/4 {
		t.Fatalf("%d NOTIFYs for %d events; want at least one and far fewer than one per event", notifies, events)
	}
	t.Logf("%d NOTIFYs for %d events", notifies, events)
}

// A relay told to stop publishes what was committed before it stops (within FinalFlush): on a
// shutdown, the events of the requests that finished in the grace go out now, not at the next
// start. Here the relay is idle, listening, and the event comes without a NOTIFY and an hour
// before its next poll: only the last flush publishes it.
func TestStoppingRelayPublishesWhatWasCommittedBeforeIt(t *testing.T) {
	e := setup(t)
	stop := runIdleRelay(t, e)
	insertUnnotified(t, e.pool)
	if err := stop(); err != nil {
		t.Fatalf("Relay.Run: %v", err)
	}
	if n := outboxRows(t, e.pool); n != 0 {
		t.Fatalf("the outbox holds %d rows after the relay stopped, want 0", n)
	}
	if n, err := streamCount(e.js); err != nil || n != 1 {
		t.Fatalf("the stream holds %d events (%v), want 1", n, err)
	}
}

// The relay lock may still be held when the relay is told to stop: by a round of its own that
// the stop cut short, until Postgres notices its connection is gone, or by another copy's
// round. The last flush waits for the lock (within FinalFlush) rather than skipping its round.
func TestStoppingRelayWaitsForTheLockToPublishWhatIsLeft(t *testing.T) {
	e := setup(t)
	stop := runIdleRelay(t, e)
	insertUnnotified(t, e.pool)

	holder, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_xact_lock(hashtext('handoff.outbox'), hashtext(current_schema()))`); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(300 * time.Millisecond)
	if err := holder.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Relay.Run: %v", err)
	}
	if n := outboxRows(t, e.pool); n != 0 {
		t.Fatalf("the outbox holds %d rows after the relay stopped, want 0", n)
	}
}

// runIdleRelay runs a relay that looks at the outbox only when notified (its poll is an hour
// away) and is listening; stop cancels it and returns what Run returned.
func runIdleRelay(t *testing.T, e env) (stop func() error) {
	t.Helper()
	r := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(cancel)
	waitListening(t, e.pool)
	return func() error { cancel(); return <-done }
}

// insertUnnotified writes an outbox row as Enqueue does, without its NOTIFY.
func insertUnnotified(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `INSERT INTO outbox (event_id, subject, event_type, payload)
		VALUES (gen_random_uuid(), $1, 'google.protobuf.StringValue', '')`, productCreated); err != nil {
		t.Fatal(err)
	}
}

func TestRelayCrashAfterPublishingRepublishesWithoutDuplicates(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	ids := enqueue(t, e.pool, "a", "b", "c", "d", "e")

	// The first relay publishes, then its database connection dies before
	// the rows are deleted: the crash window.
	crashing := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)})
	outbox.SetAfterPublish(crashing, func(ctx context.Context, conn *pgx.Conn) error {
		// Wait until the backend is gone: until then it holds the round's advisory lock, and
		// the fresh relay below would find the outbox taken.
		_, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1, 5000)`, conn.PgConn().PID())
		return err
	})
	if n, err := crashing.Flush(ctx); err == nil {
		t.Fatalf("crashing relay: Flush = %d, nil; want an error from its dead connection", n)
	}
	if n, _ := streamCount(e.js); n != len(ids) {
		t.Fatalf("after the crash the stream holds %d events, want %d (published before the crash)", n, len(ids))
	}
	if n := outboxRows(t, e.pool); n != len(ids) {
		t.Fatalf("after the crash the outbox holds %d rows, want %d (never marked)", n, len(ids))
	}

	// A fresh relay (another process) publishes them all again.
	fresh := outbox.NewRelay(e.pool, newJS(t, e.nats), outbox.RelayConfig{Logger: testenv.Logger(t)})
	if n, err := fresh.Flush(ctx); err != nil || n != len(ids) {
		t.Fatalf("fresh relay: Flush = %d, %v; want %d, nil", n, err, len(ids))
	}
	if n := outboxRows(t, e.pool); n != 0 {
		t.Fatalf("outbox holds %d rows after the fresh relay", n)
	}
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want each event exactly once: %v", got, ids)
	}
}

// A relay copy frozen mid-round (SIGSTOP, a paused VM, a partition) keeps its connection open,
// idle in the round's transaction, and with it the lock no other copy relays without: Postgres
// ends that session at its idle bound (pgdb.IdleInTransactionTimeout; 1 s here), and another
// copy relays what the frozen one had published, once each, and what came after.
func TestAFrozenRelayCopyHoldsTheOutboxOnlyUntilItsIdleBound(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	var schema string
	if err := e.pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	frozenPool, err := pgdb.Open(ctx, testenv.DatabaseURLWith(t, "idle_in_transaction_session_timeout", "1s"), schema, pgdb.WithLogger(testenv.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer frozenPool.Close()
	ids := enqueue(t, e.pool, "a", "b")

	frozen := outbox.NewRelay(frozenPool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)})
	frozenNow, thaw := make(chan struct{}), make(chan struct{})
	outbox.SetAfterPublish(frozen, func(context.Context, *pgx.Conn) error {
		close(frozenNow)
		<-thaw // frozen here, the round's transaction open
		return nil
	})
	frozenDone := make(chan error, 1)
	go func() {
		_, err := frozen.Flush(context.Background())
		frozenDone <- err
	}()
	<-frozenNow
	ids = append(ids, enqueue(t, e.pool, "c")...)

	other := outbox.NewRelay(e.pool, newJS(t, e.nats), outbox.RelayConfig{Logger: testenv.Logger(t)})
	testenv.CheckFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		if _, err := other.Flush(ctx); err != nil {
			return err
		}
		if n := outboxRows(t, e.pool); n != 0 {
			return fmt.Errorf("the outbox still holds %d rows", n)
		}
		return nil
	})
	close(thaw)
	if err := <-frozenDone; err == nil {
		t.Fatal("the frozen copy's round succeeded after its session was ended; want an error")
	}
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want each event exactly once: %v", got, ids)
	}
}

func TestTwoRelaysSideBySidePublishEveryEventOnceInOrder(t *testing.T) {
	e := setup(t)
	for range 2 {
		// Small batches and a fast poll so that the relays really contend.
		runRelay(t, outbox.NewRelay(e.pool, newJS(t, e.nats), outbox.RelayConfig{
			Logger: testenv.Logger(t), BatchSize: 7, PollInterval: 10 * time.Millisecond,
		}))
	}
	var ids []string
	for i := range 100 {
		ids = append(ids, enqueue(t, e.pool, fmt.Sprint(i), fmt.Sprint(i, "b"), fmt.Sprint(i, "c"))...)
	}
	waitForStreamCount(t, e.js, len(ids), 30*time.Second)
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatalf("stream order differs from commit order (or has gaps or duplicates):\n got  %v\n want %v", got, ids)
	}
}

func TestBacklogOfThousandsDrains(t *testing.T) {
	e := setup(t)
	const total = 5000
	values := make([]string, 1000)
	for i := range values {
		values[i] = fmt.Sprint("sku-", i)
	}
	var ids []string
	for range total / len(values) {
		ids = append(ids, enqueue(t, e.pool, values...)...)
	}
	start := time.Now()
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))
	waitForStreamCount(t, e.js, total, 60*time.Second)
	t.Logf("drained %d events in %v", total, time.Since(start))
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatal("backlog published out of order, with gaps or duplicates")
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := outboxRows(t, e.pool); n != 0 {
			return fmt.Errorf("%d rows left in the outbox", n)
		}
		return nil
	})
}

func TestEnqueueRefusesSubjectsNoStreamStores(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	for _, subject := range []string{
		"handoff.rpc.catalog.get_skus", // request/reply, never stored
		"handoff.catalog.*.created",    // a wildcard
		"handoff..created",
		"orders.created",
	} {
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			_, err := outbox.Enqueue(t.Context(), tx, subject, wrapperspb.String("x"))
			return err
		})
		if err == nil {
			t.Errorf("Enqueue on %q succeeded; want a refusal", subject)
		}
	}
	if n := outboxRows(t, pool); n != 0 {
		t.Fatalf("%d rows written for refused subjects", n)
	}
}

func TestDeterministicIDEnqueuesOneEventHoweverOftenItIsWritten(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	id := outbox.DeterministicID("order", "ord-1", "confirmed")
	if id != outbox.DeterministicID("order", "ord-1", "confirmed") || id == outbox.DeterministicID("order", "ord-1", "ready") {
		t.Fatal("DeterministicID is not a function of its parts")
	}
	subject := streams.EventSubject("fulfilment", "order", "confirmed")
	for range 2 {
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			return errors.Join(
				outbox.EnqueueWithID(t.Context(), tx, id, subject, wrapperspb.String("ord-1")),
				outbox.EnqueueWithID(t.Context(), tx, id, subject, wrapperspb.String("ord-1")),
			)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := outboxRows(t, pool); n != 1 {
		t.Fatalf("outbox holds %d rows for one deterministic id", n)
	}
}

func TestFailedPublishKeepsTheRowsUntilJetStreamTakesThem(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	if err := e.js.DeleteStream(ctx, streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	ids := enqueue(t, e.pool, "while the stream is gone")
	r := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), AckTimeout: 2 * time.Second})
	if n, err := r.Flush(ctx); err == nil || n != 0 {
		t.Fatalf("Flush without a stream = %d, %v; want 0 and an error", n, err)
	}
	if n := outboxRows(t, e.pool); n != 1 {
		t.Fatalf("outbox holds %d rows after a failed publish, want 1", n)
	}

	runRelay(t, r) // retries with backoff
	if err := streams.Ensure(ctx, e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	waitForStreamCount(t, e.js, 1, 20*time.Second)
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want %v", got, ids)
	}
}

func TestEnqueueBatchRecordsEventsInOrderOnceEach(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	var events []outbox.Event
	var ids []string
	for i := range 5 {
		id := outbox.DeterministicID("batch", fmt.Sprint(i))
		ids = append(ids, id)
		subject := productCreated
		if i%2 == 1 {
			subject = streams.TicketSubject("store-1", "new_order")
		}
		events = append(events, outbox.Event{ID: id, Subject: subject, Msg: wrapperspb.String(fmt.Sprint("v", i))})
	}
	for range 2 { // the second write of the same ids adds nothing
		if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return outbox.EnqueueBatch(ctx, tx, events) }); err != nil {
			t.Fatal(err)
		}
	}
	if n := outboxRows(t, e.pool); n != len(events) {
		t.Fatalf("outbox holds %d rows, want %d", n, len(events))
	}
	rows, err := e.pool.Query(ctx, `SELECT event_id::text FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(got, ids) {
		t.Fatalf("outbox order %v (%v), want %v", got, err, ids)
	}

	bad := append(slices.Clone(events), outbox.Event{ID: outbox.DeterministicID("bad"), Subject: "handoff.rpc.x.y", Msg: wrapperspb.String("x")})
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return outbox.EnqueueBatch(ctx, tx, bad) }); err == nil {
		t.Fatal("EnqueueBatch with a subject no stream stores succeeded")
	}
	// An event larger than a server may take would stop every event behind it: refused.
	huge := outbox.Event{ID: outbox.DeterministicID("huge"), Subject: productCreated, Msg: wrapperspb.Bytes(make([]byte, outbox.MaxPayload))}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return outbox.EnqueueBatch(ctx, tx, append(slices.Clone(events), huge)) }); err == nil {
		t.Fatal("EnqueueBatch with an event past MaxPayload succeeded")
	}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		return outbox.EnqueueWithID(ctx, tx, huge.ID, huge.Subject, huge.Msg)
	}); err == nil {
		t.Fatal("EnqueueWithID with an event past MaxPayload succeeded")
	}

	if n, err := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Flush(ctx); err != nil || n != len(events) {
		t.Fatalf("Flush = %d, %v; want %d", n, err, len(events))
	}
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, []string{ids[0], ids[2], ids[4]}) {
		t.Fatalf("events stream holds %v", got)
	}
}

// The largest event the outbox takes reaches a server with NATS's default max_payload (1 MiB,
// the test server's), headers and all, and so does the event behind it.
func TestTheLargestEventTakenIsPublished(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	largest := wrapperspb.Bytes(make([]byte, outbox.MaxPayload-8))
	if n := proto.Size(largest); n < outbox.MaxPayload-4 || n > outbox.MaxPayload {
		t.Fatalf("the event is %d bytes; want just within MaxPayload (%d)", n, outbox.MaxPayload)
	}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, productCreated, largest)
		return err
	}); err != nil {
		t.Fatalf("an event within MaxPayload was refused: %v", err)
	}
	enqueue(t, e.pool, "behind it")
	if n, err := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Flush(ctx); err != nil || n != 2 {
		t.Fatalf("Flush = %d, %v; want both events published", n, err)
	}
}

// allowAtomic sets whether the events stream takes atomic batches.
func allowAtomic(t *testing.T, js jetstream.JetStream, allowed bool) {
	t.Helper()
	st, err := js.Stream(t.Context(), streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowAtomicPublish = allowed
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
}

// Where the stream allows it, a round with enough events of one stream goes as one atomic
// batch (one disk sync in the server instead of one per event), still in order, once each,
// also when a crash makes the relay publish them again; a handful go one by one, and so do
// events of a stream that does not allow atomic batches.
func TestRelayPublishesAtomicBatchesOfBigRoundsWhereTheStreamAllowsThem(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	values := make([]string, 40)
	for i := range values {
		values[i] = fmt.Sprint("cortado ", i)
	}
	// A stream that does not allow atomic batches: one by one.
	allowAtomic(t, e.js, false)
	ids := enqueue(t, e.pool, values...)
	notAllowed := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)})
	if n, err := notAllowed.Flush(ctx); err != nil || n != len(values) {
		t.Fatalf("Flush = %d, %v; want %d, nil", n, err, len(values))
	}
	for i, m := range published(t, e.js) {
		if h := m.Headers().Get("Nats-Batch-Id"); h != "" {
			t.Fatalf("event %d went in atomic batch %s on a stream without them", i, h)
		}
	}
	allowAtomic(t, e.js, true)

	// Fresh events, as many as a busy round: published as an atomic batch, then the connection
	// dies before the rows are deleted.
	ids = append(ids, enqueue(t, e.pool, values...)...)
	crashing := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)})
	outbox.SetAfterPublish(crashing, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1, 5000)`, conn.PgConn().PID())
		return err
	})
	if _, err := crashing.Flush(ctx); err == nil {
		t.Fatal("crashing relay: Flush succeeded")
	}
	msgs := published(t, e.js)
	if got := msgIDs(msgs); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want %v", got, ids)
	}
	for i, m := range msgs[len(values):] {
		if m.Headers().Get("Nats-Batch-Id") == "" {
			t.Fatalf("event %d was not published in an atomic batch (headers %v)", i, m.Headers())
		}
	}

	// Again, with a few more: the batch holds duplicates, which JetStream refuses as a whole;
	// the relay then publishes one by one, and duplicates are dropped.
	ids = append(ids, enqueue(t, e.pool, "a", "b", "c")...)
	r := outbox.NewRelay(e.pool, newJS(t, e.nats), outbox.RelayConfig{Logger: testenv.Logger(t)})
	if n, err := r.Flush(ctx); err != nil || n != 43 {
		t.Fatalf("Flush = %d, %v; want 43, nil", n, err)
	}
	if got := msgIDs(published(t, e.js)); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want each event once in order: %v", got, ids)
	}

	// A handful goes one by one (an atomic batch costs more than that).
	ids = append(ids, enqueue(t, e.pool, "d", "e", "f", "g", "h")...)
	if n, err := r.Flush(ctx); err != nil || n != 5 {
		t.Fatalf("Flush = %d, %v; want 5, nil", n, err)
	}
	msgs = published(t, e.js)
	if got := msgIDs(msgs); !slices.Equal(got, ids) {
		t.Fatalf("stream holds %v, want %v", got, ids)
	}
	if h := msgs[len(msgs)-1].Headers().Get("Nats-Batch-Id"); h != "" {
		t.Fatalf("five events went as an atomic batch %s", h)
	}
	if n := outboxRows(t, e.pool); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

// Acks that never come (a stream leader election, lost quorum) are forgotten by the relay's
// own client after AckTimeout, as the relay forgets them: however many there were, the relay
// publishes again once the stream answers. This holds for a JetStream client built without a
// publish timeout, as given here: such a client keeps them pending until it reconnects, and
// past 4,000 pending every publish stalls.
// JetStream stalling mid-round (its server hung with the connection open) holds the round's
// transaction open only AckTimeout, for all the round's waits together: the stream check, the
// atomic batch's commit and the acknowledgements of the fallback one by one. Each had the whole
// bound of its own, three in a row with one stream, which a stall could take past the
// database's idle-in-transaction limit and get the session ended.
func TestAStalledJetStreamHoldsARoundOnlyItsAckTimeout(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	allowAtomic(t, e.js, true)
	values := make([]string, 30) // an atomic batch's worth
	for i := range values {
		values[i] = fmt.Sprint(i)
	}
	enqueue(t, e.pool, values...)
	fz := testenv.NewFreezer(t, strings.TrimPrefix(e.nats.ClientURL(), "nats://"))
	nc, err := nats.Connect("nats://"+fz.Addr(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const ackTimeout = time.Second
	r := outbox.NewRelay(e.pool, js, outbox.RelayConfig{Logger: testenv.Logger(t), AckTimeout: ackTimeout})
	fz.Freeze()
	began := time.Now()
	n, err := r.Flush(ctx)
	took := time.Since(began)
	if err == nil || n != 0 {
		t.Fatalf("Flush with JetStream hung = %d, %v; want nothing relayed and an error", n, err)
	}
	if took >= ackTimeout*7/4 { // each wait with its own bound, 2 s or more
		t.Fatalf("the round took %s with JetStream hung; want about its AckTimeout, %s", took.Round(time.Millisecond), ackTimeout)
	}
	if left := outboxRows(t, e.pool); left != len(values) {
		t.Fatalf("the outbox holds %d rows after the failed round, want all %d", left, len(values))
	}
}

// One event the stream refuses every time (larger than its messages may be) does not hold back
// the events committed after it for longer and longer: a round that relayed some of its events
// is tried again soon, whatever failed in it.
func TestAnEventRefusedEveryTimeDoesNotSlowTheOthersMoreAndMore(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	st, err := e.js.Stream(ctx, streams.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 4 << 10
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.Bytes(make([]byte, 8<<10)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LockedBuffer
	r := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil)), PollInterval: 50 * time.Millisecond})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { stop(); <-done }()
	// Events keep coming while the refused one is retried, round after failed round.
	var slowest time.Duration
	for i := range 12 {
		time.Sleep(250 * time.Millisecond)
		written := time.Now()
		enqueue(t, e.pool, fmt.Sprint(i))
		for outboxRows(t, e.pool) > 1 {
			if time.Since(written) > 20*time.Second {
				t.Fatalf("event %d not relayed in 20s", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		slowest = max(slowest, time.Since(written))
	}
	if slowest > 1500*time.Millisecond {
		t.Fatalf("an event committed behind the refused one took %s to be relayed; want its round soon, not after a backoff grown by each failure", slowest.Round(time.Millisecond))
	}
	// The stream's refusal is one it gives every time: said, not backed off for.
	if got := logs.String(); strings.Contains(got, "round failed") || !strings.Contains(got, "NATS refuses") {
		t.Fatalf("the relay's log:\n%s\nwant the refused event said to stay, and no failed rounds backing off", got)
	}
}

// pastMaxPayload is an outbox holding one event of 100 KiB, and a NATS server (its streams
// declared) whose max_payload is 64 KiB: the client refuses that event before sending it.
func pastMaxPayload(t *testing.T) (*pgxpool.Pool, jetstream.JetStream) {
	t.Helper()
	pool := testenv.Pool(t, "", nil)
	js := newJS(t, testenv.NATS(t, func(o *server.Options) { o.MaxPayload = 64 << 10 }))
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.Bytes(make([]byte, 100<<10)))
		return err
	}); err != nil {
		t.Fatalf("the outbox refused a 100 KiB event: %v", err)
	}
	return pool, js
}

// An event larger than the server's max_payload, which the client refuses before sending it,
// does not stop the events committed after it, whether they go one by one or, a round big
// enough, as an atomic batch the server refuses for it. The outbox takes events up to about
// 1 MiB; a server configured with less is only warned about at start.
func TestAnEventPastTheServersMaxPayloadDoesNotStopTheOthers(t *testing.T) {
	for _, behind := range []int{3, 40} {
		t.Run(fmt.Sprint(behind, " behind"), func(t *testing.T) {
			pool, js := pastMaxPayload(t)
			ctx := t.Context()
			values := make([]string, behind)
			for i := range values {
				values[i] = fmt.Sprint(i)
			}
			enqueue(t, pool, values...)
			r := outbox.NewRelay(pool, js, outbox.RelayConfig{Logger: testenv.Logger(t), AckTimeout: 5 * time.Second})
			if _, err := r.Flush(ctx); !errors.Is(err, nats.ErrMaxPayload) {
				t.Fatalf("a round with an event past max_payload: %v; want it reported as nats.ErrMaxPayload", err)
			}
			if n, err := streamCount(js); err != nil || n != behind {
				t.Fatalf("the stream holds %d events (%v); want the %d committed behind the oversized one", n, err, behind)
			}
			if n := outboxRows(t, pool); n != 1 {
				t.Fatalf("%d rows left in the outbox; want the oversized event's alone, kept for an operator", n)
			}
		})
	}
}

// A relay whose only failing rows are ones NATS refuses every time (past the server's
// max_payload) does not back off for them: an event committed behind one while the relay is
// otherwise idle goes out at once, and the refusal is logged once, as an error, not every
// round. It used to sleep its failure backoff, growing to MaxBackoff and deaf to NOTIFY
// meanwhile, so every later event waited up to 10 s for as long as the refused one stayed.
func TestARelayDoesNotBackOffForAnEventNATSRefusesEveryTime(t *testing.T) {
	pool, js := pastMaxPayload(t)
	ctx := t.Context()
	var logs testenv.LockedBuffer
	r := outbox.NewRelay(pool, js, outbox.RelayConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil)), PollInterval: 200 * time.Millisecond})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { stop(); <-done }()

	time.Sleep(3 * time.Second) // rounds keep finding the refused event
	if got := logs.String(); strings.Contains(got, "round failed") || strings.Count(got, "NATS refuses") != 1 {
		t.Fatalf("the relay's log over 3 s of rounds refusing one event:\n%s\nwant one error saying it stays, and no failed rounds backing off", got)
	}
	for i := range 3 {
		written := time.Now()
		enqueue(t, pool, fmt.Sprint("behind-", i))
		for outboxRows(t, pool) > 1 {
			if time.Since(written) > 10*time.Second {
				t.Fatal("an event behind the refused one not relayed in 10 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(written); took > time.Second {
			t.Fatalf("event %d behind the refused one took %s to be relayed; want it at once (NOTIFY)", i, took.Round(time.Millisecond))
		}
		time.Sleep(time.Second)
	}
}

func TestRelayPublishesAgainAfterManyAcksThatNeverCame(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	// The events stream is away, and a subscriber takes its subjects and answers nothing: no
	// "no responders" error, no ack.
	if err := e.js.DeleteStream(ctx, streams.EventsStream); err != nil {
		t.Fatal(err)
	}
	sink := testenv.NATSConn(t, e.nats)
	if _, err := sink.Subscribe(productCreated, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	const rows = 300
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		for i := range rows {
			if _, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(testenv.NATSConn(t, e.nats))
	if err != nil {
		t.Fatal(err)
	}
	r := outbox.NewRelay(e.pool, js, outbox.RelayConfig{BatchSize: rows, AckTimeout: 250 * time.Millisecond})
	for range 15 { // 4,500 publishes whose acks never come
		if n, err := r.Flush(ctx); err == nil || n != 0 {
			t.Fatalf("flush with no acks: relayed %d, %v; want nothing and an error", n, err)
		}
	}
	// The stream is back.
	if err := streams.Ensure(ctx, e.js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Flush(ctx); err != nil || n != rows {
		t.Fatalf("flush once the stream answers: relayed %d, %v; want all %d", n, err, rows)
	}
}

// An event NATS refuses every time and a relay that does not run both leave the outbox's
// oldest event growing old (HandoffOutboxNotRelayed); the refusals are counted, by schema, so
// an operator can tell them apart. The series is served at 0 from the relay's first round,
// for increase() to see the first refusal.
func TestEventsNATSRefusesAreCountedBySchema(t *testing.T) {
	refusals := func(schema string) (float64, bool) {
		v, ok := testenv.CounterSums(t, "handoff_outbox_refused_events_total", map[string]string{"schema": schema}, "schema")[schema]
		return v, ok
	}
	schemaOf := func(pool *pgxpool.Pool) string {
		var s string
		if err := pool.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// A relay with nothing refused serves the series at 0.
	e := setup(t)
	enqueue(t, e.pool, "fine")
	if _, err := outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t)}).Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, ok := refusals(schemaOf(e.pool)); !ok || n != 0 {
		t.Fatalf("after a round with nothing refused: handoff_outbox_refused_events_total %v (served: %v); want served at 0", n, ok)
	}

	// An event past the server's max_payload, tried in two rounds: two refusals.
	pool, js := pastMaxPayload(t)
	schema := schemaOf(pool)
	before, _ := refusals(schema)
	r := outbox.NewRelay(pool, js, outbox.RelayConfig{Logger: testenv.Logger(t), AckTimeout: 5 * time.Second})
	for range 2 {
		if _, err := r.Flush(t.Context()); !errors.Is(err, nats.ErrMaxPayload) {
			t.Fatalf("a round with an event past max_payload: %v; want nats.ErrMaxPayload", err)
		}
	}
	if after, _ := refusals(schema); after-before != 2 {
		t.Fatalf("two rounds refused the event: handoff_outbox_refused_events_total{schema=%q} grew by %v; want 2", schema, after-before)
	}
}
