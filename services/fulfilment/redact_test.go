package fulfilment

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// The retention sweep clears the pickup name, email, note and checkout request of orders ended
// before the cutoff, and their notifications; an order ended since (even one placed before the
// cutoff), an open one and one already cleared keep theirs, and the customer id stays.
func TestTheSweepClearsOnlyOrdersEndedBeforeTheCutoff(t *testing.T) {
	ctx := t.Context()
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "redact"), Migrations())
	for _, sql := range []string{
		`INSERT INTO orders (id, customer_id, idempotency_key, state, lines, currency, pickup_name, email, customer_note, placement, version, create_time, update_time) VALUES
			('old-collected', 'c1', 'k1', 5, '[]', 'USD', 'Ann', 'ann@example.com', 'note a', '\x01', 5, now() - interval '100 days', now() - interval '99 days'),
			('old-cancelled', 'c2', 'k2', 7, '[]', 'USD', 'Bob', 'bob@example.com', 'note b', NULL, 3, now() - interval '95 days', now() - interval '95 days'),
			('ended-lately', 'c3', 'k3', 8, '[]', 'USD', 'Cy', 'cy@example.com', 'note c', NULL, 4, now() - interval '91 days', now() - interval '89 days'),
			('young', 'c4', 'k4', 5, '[]', 'USD', 'Di', 'di@example.com', 'note d', NULL, 5, now() - interval '2 days', now() - interval '2 days'),
			('old-open', 'c5', 'k5', 4, '[]', 'USD', 'Ed', 'ed@example.com', 'note e', NULL, 4, now() - interval '100 days', now() - interval '100 days')`,
		`INSERT INTO notifications (id, order_id, kind, channel, recipient, order_snapshot, state) VALUES
			(gen_random_uuid(), 'old-collected', 'order.ready', 'email', 'ann@example.com', '\x01', 'dead'),
			(gen_random_uuid(), 'young', 'order.ready', 'email', 'di@example.com', '\x01', 'sent')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	s := &Service{db: pool, cfg: Config{PersonalDataRetention: 90 * 24 * time.Hour}}
	n, err := s.RedactEnded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT id FROM orders
		WHERE pickup_name = '' AND email = '' AND customer_note = '' AND placement IS NULL AND redact_time IS NOT NULL AND customer_id <> ''
		ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	cleared, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"old-cancelled", "old-collected"}; n != 2 || !slices.Equal(cleared, want) {
		t.Fatalf("the sweep cleared %d orders, %v; want %v", n, cleared, want)
	}
	var kept int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE pickup_name <> '' AND email <> '' AND customer_note <> ''`).Scan(&kept); err != nil || kept != 3 {
		t.Fatalf("%d orders keep their contact fields (%v); want 3", kept, err)
	}
	var notes []string
	rows, err = pool.Query(ctx, `SELECT order_id FROM notifications ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	if notes, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || !slices.Equal(notes, []string{"young"}) {
		t.Fatalf("notifications left: %v (%v); want only the young order's", notes, err)
	}
	if n, err := s.RedactEnded(ctx); err != nil || n != 0 {
		t.Fatalf("a second sweep cleared %d (%v); want 0", n, err)
	}
}

// The sweep reads the orders it clears, not the years of orders cleared before nor the recent
// ones: with 5,000 ended lately, 5,000 cleared long ago and 10 due, a batch reads about the 10.
func TestTheRedactionSweepReadsOnlyTheOrdersItClears(t *testing.T) {
	ctx := t.Context()
	pool := testenv.Pool(t, testenv.UniqueSchema(t, "redact"), Migrations())
	for _, sql := range []string{
		`INSERT INTO orders (id, customer_id, idempotency_key, state, lines, currency, pickup_name, version, create_time, update_time)
			SELECT 'recent' || g, 'c' || g, 'k', 5, '[]', 'USD', 'N', 5, now() - g * interval '1 minute', now() - g * interval '1 minute'
			FROM generate_series(1, 5000) g`,
		`INSERT INTO orders (id, customer_id, idempotency_key, state, lines, currency, version, create_time, update_time, redact_time)
			SELECT 'cleared' || g, 'd' || g, 'k', 5, '[]', 'USD', 5, now() - interval '200 days', now() - interval '200 days', now() - interval '100 days'
			FROM generate_series(1, 5000) g`,
		`INSERT INTO orders (id, customer_id, idempotency_key, state, lines, currency, pickup_name, version, create_time, update_time)
			SELECT 'due' || g, 'e' || g, 'k', 7, '[]', 'USD', 'N', 3, now() - interval '120 days', now() - interval '120 days'
			FROM generate_series(1, 10) g`,
		`ANALYZE orders`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	retention := (90 * 24 * time.Hour).Microseconds()
	if read := testenv.RowsRead(t, pool, []string{pgdb.KeyedPlansSQL}, RedactEndedSQL, retention, redactBatch); read > 40 {
		t.Errorf("a sweep clearing 10 orders read %v rows", read)
	}
}
