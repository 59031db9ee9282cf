package inbox_test

import (
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/streams"
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
