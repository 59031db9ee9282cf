package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/streams"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A processed id is kept while its stream may still hold the event (a consumer declared anew
// reads the stream from its start), and deleted after: the table does not grow for ever.
func TestProcessedIDsAreKeptAsLongAsTheStreamKeepsEvents(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	insert := func(consumer, id string, age time.Duration) {
		t.Helper()
		if _, err := e.pool.Exec(ctx, `INSERT INTO processed_events (consumer, event_id, processed_at)
			VALUES ($1, $2, now() - $3::bigint * interval '1 microsecond')`, consumer, id, age.Microseconds()); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(consumer string) []string {
		t.Helper()
		rows, err := e.pool.Query(ctx, `SELECT event_id FROM processed_events WHERE consumer = $1 ORDER BY event_id`, consumer)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			got = append(got, id)
		}
		return got
	}
	insert("pruned", "gone", streams.MaxAge+2*time.Hour)
	insert("pruned", "within-clock-slack", streams.MaxAge+30*time.Minute)
	insert("pruned", "recent", time.Minute)
	insert("other", "old", streams.MaxAge+2*time.Hour) // another consumer's, on another stream perhaps

	// Run prunes as it starts.
	run(t, e.pool, e.js, config(t, "pruned"), recordEffect)
	for deadline := time.Now().Add(10 * time.Second); slices.Contains(ids("pruned"), "gone"); {
		if time.Now().After(deadline) {
			t.Fatalf("the id processed longer ago than the stream keeps events is still there: %v", ids("pruned"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ids("pruned"); !slices.Equal(got, []string{"recent", "within-clock-slack"}) {
		t.Errorf("the consumer's ids after pruning: %v; want those its stream may still hold events for", got)
	}
	if got := ids("other"); !slices.Equal(got, []string{"old"}) {
		t.Errorf("another consumer's ids: %v; want them left to it", got)
	}

	// A shorter MaxAge prunes sooner (the id kept in the slack goes too), in batches however
	// many there are.
	cfg := streams.Topology(streams.Config{})[0]
	cfg.MaxAge = time.Hour
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO processed_events (consumer, event_id, processed_at)
		SELECT 'pruned', 'bulk-' || i, now() - interval '3 hours' FROM generate_series(1, 12001) AS i`); err != nil {
		t.Fatal(err)
	}
	n, err := inbox.Prune(ctx, e.pool, e.js, config(t, "pruned"))
	if err != nil || n != 12002 {
		t.Fatalf("pruning 12,001 ids three hours old and one a week old, with MaxAge 1h: deleted %d, %v", n, err)
	}
	if got := ids("pruned"); !slices.Equal(got, []string{"recent"}) {
		t.Errorf("ids after pruning with MaxAge 1h: %v; want only the recent one", got)
	}

	// A stream that keeps events for ever keeps their ids for ever.
	cfg.MaxAge = 0
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	insert("pruned", "ancient", 10*365*24*time.Hour)
	if n, err := inbox.Prune(ctx, e.pool, e.js, config(t, "pruned")); err != nil || n != 0 {
		t.Fatalf("pruning with no MaxAge deleted %d (%v); want none", n, err)
	}
	if got := ids("pruned"); !slices.Contains(got, "ancient") {
		t.Errorf("ids with no MaxAge: %v; want the ancient one kept", got)
	}
}

// A copy of an event stored again long after its first processing (the outbox publishes a row
// again whose delete did not commit; past the duplicate window the stream keeps the copy) keeps
// its id as long as the copy is in the stream: a consumer declared anew after the first
// processing has aged out still finds the id. One by one and in batches.
func TestAnEventStoredAgainLateKeepsItsIDUntilTheCopyAgesOut(t *testing.T) {
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprint("batch ", batch), func(t *testing.T) {
			e := setup(t)
			ctx := t.Context()
			// Events kept an hour, duplicates dropped for the shortest window the server allows.
			const stream = "SHORT_AGE"
			if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
				Name: stream, Subjects: []string{"test.age.>"}, Duplicates: 100 * time.Millisecond, MaxAge: time.Hour,
			}); err != nil {
				t.Fatal(err)
			}
			cfg := config(t, "aged")
			cfg.Stream, cfg.FilterSubjects, cfg.BatchSize = stream, nil, batch
			handler := func(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
				id, err := inbox.EventID(msg)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `INSERT INTO effects (event_id, value) VALUES ($1, 'x')`, id)
				return err
			}
			ackFloor := func(want uint64) {
				t.Helper()
				testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
					cons, err := e.js.Consumer(ctx, stream, "aged")
					if err != nil {
						return err
					}
					info, err := cons.Info(ctx)
					if err != nil {
						return err
					}
					if info.AckFloor.Stream != want {
						return fmt.Errorf("ack floor %d, want %d", info.AckFloor.Stream, want)
					}
					return nil
				})
			}

			publish(t, e.js, "test.age.order", "evt-1", "order-1")
			stop := run(t, e.pool, e.js, cfg, handler)
			waitForEffects(t, e.pool, 1)
			ackFloor(1)
			stop()
			// Its first processing was 100 minutes ago (within the hour's MaxAge and the hour's
			// slack); now a second copy is stored.
			age := func(d string) {
				t.Helper()
				if _, err := e.pool.Exec(ctx, `UPDATE processed_events SET processed_at = processed_at - $1::interval WHERE consumer = 'aged'`, d); err != nil {
					t.Fatal(err)
				}
			}
			age("100 minutes")
			testenv.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
				m := nats.NewMsg("test.age.order")
				m.Header.Set(jetstream.MsgIDHeader, "evt-1")
				ack, err := e.js.PublishMsg(ctx, m)
				if err != nil {
					return err
				}
				if ack.Duplicate {
					return errors.New("still inside the duplicate window")
				}
				return nil
			})
			last := uint64(2)
			if batch > 1 {
				// Another event behind the copy: the two are taken as one batch.
				publish(t, e.js, "test.age.order", "evt-2", "order-2")
				last = 3
			}
			stop = run(t, e.pool, e.js, cfg, handler)
			ackFloor(last)
			stop()
			// 40 minutes later the copy is still in the stream; the first processing is past
			// MaxAge and slack.
			age("40 minutes")

			if _, err := inbox.Prune(ctx, e.pool, e.js, cfg); err != nil {
				t.Fatal(err)
			}
			if err := e.js.DeleteConsumer(ctx, stream, "aged"); err != nil {
				t.Fatal(err)
			}
			run(t, e.pool, e.js, cfg, handler)
			ackFloor(last)
			if rows, distinct := effects(t, e.pool); rows != distinct || rows != int(last)-1 {
				t.Fatalf("one event stored twice, its first processing aged out, the consumer declared anew: %d effects of %d events; want one each", rows, distinct)
			}
		})
	}
}

// A prune batch reads the ids it deletes, not the ones kept: with 50,000 of a consumer's ids
// kept (random uuids, as events' are) and 100 due, a batch reads about the 100, through
// processed_events_by_age, in the plans of a pool with keyed plans (the pos-adapter's) and of
// one without. Before the index each batch walked the consumer's primary key, or scanned the
// table, past every id kept: 10 s of the database's time an hour at 10,000 ids an hour.
func TestAPruneBatchReadsTheDueIDsNotTheKeptOnes(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO processed_events (consumer, event_id, processed_at)
		SELECT CASE WHEN g % 2 = 0 THEN 'kitchen' ELSE 'other' END, gen_random_uuid()::text,
			CASE WHEN g < 200 THEN now() - interval '8 days' ELSE now() - g * interval '1 second' END
		FROM generate_series(0, 99999) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE processed_events`); err != nil {
		t.Fatal(err)
	}
	week := (7*24*time.Hour + time.Hour).Microseconds()
	for name, setup := range map[string][]string{"keyed plans": {pgdb.KeyedPlansSQL}, "default plans": nil} {
		if read := testenv.RowsRead(t, pool, setup, inbox.PruneSQL, "kitchen", week, 5000); read > 250 {
			t.Errorf("%s: a prune batch of 100 due ids read %v rows", name, read)
		}
	}
}
