package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/streams"
)

// batchEffects records, per handled event, its value, the order it was applied in and the
// transaction it was applied in.
func batchEffects(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `CREATE TABLE batch_effects (
		n bigserial PRIMARY KEY, event_id text NOT NULL, value text NOT NULL, xid bigint NOT NULL DEFAULT txid_current())`); err != nil {
		t.Fatal(err)
	}
}

func recordBatchEffect(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var v wrapperspb.StringValue
	if err := inbox.Decode(msg, &v); err != nil {
		return err
	}
	id, err := inbox.EventID(msg)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO batch_effects (event_id, value) VALUES ($1, $2)`, id, v.GetValue())
	return err
}

// applied lists the values in the order they were applied, and how many transactions did it.
func applied(t *testing.T, pool *pgxpool.Pool) (values []string, txs int) {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT value FROM batch_effects ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	values, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `SELECT count(DISTINCT xid) FROM batch_effects`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	return values, txs
}

func batchConfig(t *testing.T, durable string) inbox.Config {
	cfg := config(t, durable)
	cfg.BatchSize = 16
	return cfg
}

func values(from, to int) []string {
	var v []string
	for i := from; i < to; i++ {
		v = append(v, fmt.Sprintf("order-%03d", i))
	}
	return v
}

func TestBatchAppliesWaitingMessagesTogetherInStreamOrder(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	const total = 60
	for i, v := range values(0, total) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), v)
	}
	var calls atomic.Int32
	run(t, e.pool, e.js, batchConfig(t, "batched"), func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		calls.Add(1)
		return recordBatchEffect(ctx, tx, msg)
	})
	waitSettled(t, e.js, "batched", total)
	got, txs := applied(t, e.pool)
	if !slices.Equal(got, values(0, total)) {
		t.Fatalf("applied %v, want each of the %d once in stream order", got, total)
	}
	if txs >= total || txs < total/16 {
		t.Fatalf("%d messages in %d transactions; want batches of up to 16", total, txs)
	}
	if calls.Load() != total {
		t.Fatalf("handler ran %d times for %d messages", calls.Load(), total)
	}
	var recorded int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM processed_events WHERE consumer = 'batched'`).Scan(&recorded); err != nil || recorded != total {
		t.Fatalf("%d ids recorded (%v), want %d", recorded, err, total)
	}
}

func TestRedeliveredBatchChangesNothing(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	var calls atomic.Int32
	handler := func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		calls.Add(1)
		return recordBatchEffect(ctx, tx, msg)
	}
	for i, v := range values(0, 20) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), v)
	}
	stop := run(t, e.pool, e.js, batchConfig(t, "replayed"), handler)
	waitSettled(t, e.js, "replayed", 20)
	stop()

	// Twenty more, then the consumer is reset: its batches now mix the twenty already applied
	// with twenty new ones, and later replay them all again.
	for i, v := range values(20, 40) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", 20+i), v)
	}
	for round := range 2 {
		if err := e.js.DeleteConsumer(t.Context(), streams.EventsStream, "replayed"); err != nil {
			t.Fatal(err)
		}
		stop = run(t, e.pool, e.js, batchConfig(t, "replayed"), handler)
		info := waitSettled(t, e.js, "replayed", 40)
		stop()
		if info.Delivered.Consumer != 40 {
			t.Fatalf("round %d: replayed consumer delivered %d, want 40", round, info.Delivered.Consumer)
		}
	}
	got, _ := applied(t, e.pool)
	if !slices.Equal(got, values(0, 40)) {
		t.Fatalf("after redeliveries applied %v, want the 40 once each in order", got)
	}
	if calls.Load() != 40 {
		t.Fatalf("handler ran %d times for 40 events, delivered up to three times; duplicates must be skipped before it", calls.Load())
	}
}

func TestFailingMessageInABatchNeitherBlocksNorDoublesTheOthers(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	const total = 96 // failures in the first batches, clean ones behind them
	all := values(0, total)
	all[7] = "poison"  // can never be handled: terminated
	all[15] = "flaky"  // fails twice, then works
	all[30] = "panics" // panics once, then works
	var flakyFails, panics, poisonTries atomic.Int32
	for i, v := range all {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), v)
	}
	run(t, e.pool, e.js, batchConfig(t, "mixed"), func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		// The effect is written first: a rolled-back batch must leave none of it behind.
		if err := recordBatchEffect(ctx, tx, msg); err != nil {
			return err
		}
		var v wrapperspb.StringValue
		_ = inbox.Decode(msg, &v)
		switch v.GetValue() {
		case "poison":
			poisonTries.Add(1)
			return inbox.Permanent(errors.New("order can never exist"))
		case "flaky":
			if flakyFails.Add(1) <= 2 {
				return errors.New("briefly unavailable")
			}
		case "panics":
			if panics.Add(1) == 1 {
				panic("handler bug")
			}
		}
		return nil
	})
	info := waitSettled(t, e.js, "mixed", total)
	got, txs := applied(t, e.pool)

	want := slices.DeleteFunc(slices.Clone(all), func(v string) bool { return v == "poison" })
	sortedGot := slices.Clone(got)
	slices.Sort(sortedGot)
	sortedWant := slices.Clone(want)
	slices.Sort(sortedWant)
	if !slices.Equal(sortedGot, sortedWant) {
		t.Fatalf("applied %v; want every message but the poison one exactly once", got)
	}
	// Order is kept among the messages that never failed; a failed one is retried after those
	// behind it, as in single-message mode.
	var steady []string
	for _, v := range got {
		if strings.HasPrefix(v, "order-") {
			steady = append(steady, v)
		}
	}
	if !slices.IsSortedFunc(steady, func(a, b string) int {
		x, _ := strconv.Atoi(strings.TrimPrefix(a, "order-"))
		y, _ := strconv.Atoi(strings.TrimPrefix(b, "order-"))
		return x - y
	}) {
		t.Fatalf("messages applied out of stream order: %v", steady)
	}
	if txs >= len(want) {
		t.Fatalf("%d messages in %d transactions: nothing was batched", len(want), txs)
	}
	var recorded int
	_ = e.pool.QueryRow(t.Context(), `SELECT count(*) FROM processed_events WHERE consumer = 'mixed' AND event_id = 'evt-7'`).Scan(&recorded)
	if recorded != 0 {
		t.Fatal("terminated event recorded as processed")
	}
	if info.NumAckPending != 0 {
		t.Fatalf("%d messages still unacknowledged", info.NumAckPending)
	}
	// The poison message ran in its batch (rolled back) and once alone (terminated); never again.
	if n := poisonTries.Load(); n < 2 || n > 3 {
		t.Fatalf("poison message tried %d times; want once in a batch and once alone", n)
	}
}

func TestBatchHandlerGetsTheNewMessagesOfABatchInOneCallInStreamOrder(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	const total = 60
	// Ten applied before, through the one-by-one handler: the batch handler never sees them.
	for i, v := range values(0, 10) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), v)
	}
	stop := run(t, e.pool, e.js, config(t, "set-based"), recordBatchEffect)
	waitSettled(t, e.js, "set-based", 10)
	stop()
	if err := e.js.DeleteConsumer(t.Context(), streams.EventsStream, "set-based"); err != nil {
		t.Fatal(err)
	}
	for i, v := range values(10, total) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", 10+i), v)
	}

	var singles, batches, batched atomic.Int32
	cfg := batchConfig(t, "set-based")
	cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, msgs []jetstream.Msg) error {
		batches.Add(1)
		batched.Add(int32(len(msgs)))
		for _, msg := range msgs {
			if err := recordBatchEffect(ctx, tx, msg); err != nil {
				return err
			}
		}
		return nil
	}
	run(t, e.pool, e.js, cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		singles.Add(1)
		return recordBatchEffect(ctx, tx, msg)
	})
	waitSettled(t, e.js, "set-based", total)
	got, _ := applied(t, e.pool)
	if !slices.Equal(got, values(0, total)) {
		t.Fatalf("applied %v, want each of the %d once in stream order", got, total)
	}
	if singles.Load()+batched.Load() != total-10 {
		t.Fatalf("%d handled one by one and %d in batches; want the %d new ones once each", singles.Load(), batched.Load(), total-10)
	}
	if batches.Load() == 0 || batches.Load() >= total-10 {
		t.Fatalf("%d batch handler calls for %d messages", batches.Load(), batched.Load())
	}
}

func TestFailedBatchHandlerFallsBackToTheHandlerOneByOne(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	const total = 40
	for i, v := range values(0, total) {
		publish(t, e.js, orderConfirmed, fmt.Sprint("evt-", i), v)
	}
	var committedHooks atomic.Int32
	cfg := batchConfig(t, "set-based-failing")
	cfg.BatchHandler = func(ctx context.Context, tx pgx.Tx, msgs []jetstream.Msg) error {
		for _, msg := range msgs {
			if err := recordBatchEffect(ctx, tx, msg); err != nil {
				return err
			}
		}
		inbox.OnCommit(ctx, func() { t.Error("a commit hook of a rolled-back batch ran") })
		return errors.New("set-based statement refused")
	}
	run(t, e.pool, e.js, cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		if !inbox.OnCommit(ctx, func() { committedHooks.Add(1) }) {
			return errors.New("OnCommit outside a handler's context")
		}
		return recordBatchEffect(ctx, tx, msg)
	})
	waitSettled(t, e.js, "set-based-failing", total)
	got, _ := applied(t, e.pool)
	if !slices.Equal(got, values(0, total)) {
		t.Fatalf("applied %v, want each of the %d once in stream order", got, total)
	}
	if n := committedHooks.Load(); n != total {
		t.Fatalf("%d commit hooks ran, want one per message handled alone (%d)", n, total)
	}
}

func TestCommitHooksRunAfterTheCommitAndNeverOnRollback(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	publish(t, e.js, orderConfirmed, "evt-ok", "order-ok")
	publish(t, e.js, orderConfirmed, "evt-fails", "fails-once")
	var failed atomic.Bool
	seen := make(chan string, 4)
	run(t, e.pool, e.js, config(t, "hooks"), func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		if err := recordBatchEffect(ctx, tx, msg); err != nil {
			return err
		}
		var v wrapperspb.StringValue
		_ = inbox.Decode(msg, &v)
		inbox.OnCommit(ctx, func() {
			// Committed: another connection sees the effect.
			var n int
			_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM batch_effects WHERE value = $1`, v.GetValue()).Scan(&n)
			seen <- fmt.Sprintf("%s:%d", v.GetValue(), n)
		})
		if v.GetValue() == "fails-once" && failed.CompareAndSwap(false, true) {
			return errors.New("rolled back once")
		}
		return nil
	})
	waitSettled(t, e.js, "hooks", 2)
	close(seen)
	var got []string
	for s := range seen {
		got = append(got, s)
	}
	slices.Sort(got)
	if want := []string{"fails-once:1", "order-ok:1"}; !slices.Equal(got, want) {
		t.Fatalf("commit hooks saw %v, want %v (each once, after its commit)", got, want)
	}
	if inbox.OnCommit(t.Context(), func() {}) {
		t.Fatal("OnCommit outside a handler reported it registered")
	}
}

// Two copies of one event stored beyond the duplicate window (the outbox published it again
// after its delete was lost) and fetched in one batch take effect once: the batch path must
// count a second copy within the batch as a duplicate, not only one recorded before it. The
// pos-adapter's batch consumer would mask it (ticket ids derive from the event id), a new one
// would not.
func TestTwoCopiesOfAnEventInOneBatchTakeEffectOnce(t *testing.T) {
	e := setup(t)
	batchEffects(t, e.pool)
	storedTwice(t, e, "SHORT_WINDOW_B", "test.shortb.order", "evt-1")
	cfg := batchConfig(t, "shortb")
	cfg.Stream, cfg.FilterSubjects = "SHORT_WINDOW_B", nil
	var calls atomic.Int32
	run(t, e.pool, e.js, cfg, func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO batch_effects (event_id, value) VALUES ('evt-1', 'x')`)
		return err
	})
	bothCopiesAcked(t, e, "SHORT_WINDOW_B", "shortb")
	got, _ := applied(t, e.pool)
	if len(got) != 1 || calls.Load() != 1 {
		t.Fatalf("two copies of one event in a batch: %d effects, handler ran %d times; want 1 and 1", len(got), calls.Load())
	}
}
