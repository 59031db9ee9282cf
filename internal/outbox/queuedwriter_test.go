package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// queueingTx is a writer as fulfilment's writeBatch and inventory's queuedTx are: a pgx.Tx
// whose Exec only queues the statement, sent later on whatever connection of the pool; it has
// no connection (Conn() is nil).
type queueingTx struct {
	pgx.Tx
	batch *pgx.Batch
}

func (q queueingTx) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.batch.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (q queueingTx) Conn() *pgx.Conn { return nil }

// A writer with no connection of its own must be able to enqueue within the gap of another
// (it used to panic on tx.Conn()), and, naming its schema (outbox.InSchema), it skips its NOTIFY
// as a transaction on the pool does, the relay of that schema in this process being told.
func TestAWriterThatOnlyQueuesSkipsItsNotifyWithinTheGapWithoutFailing(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	schema := pgdb.PoolSchema(e.pool)
	if schema == "" {
		t.Fatal("PoolSchema of a pool from pgdb.Open is empty")
	}
	runRelay(t, outbox.NewRelay(e.pool, e.js, outbox.RelayConfig{Logger: testenv.Logger(t), PollInterval: time.Minute}))
	waitListening(t, e.pool)

	var b pgx.Batch
	for _, tx := range []pgx.Tx{queueingTx{batch: &b}, outbox.InSchema(queueingTx{batch: &b}, schema)} {
		time.Sleep(2 * outbox.NotifyGap)
		// Two events back to back: the second comes within the gap.
		if _, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("first")); err != nil {
			t.Fatal(err)
		}
		if _, err := outbox.Enqueue(ctx, tx, productCreated, wrapperspb.String("second")); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(b.QueuedQueries); got != 4 {
		t.Fatalf("%d statements queued, want 4", got)
	}
	if strings.Contains(b.QueuedQueries[3].SQL, "pg_notify") {
		t.Errorf("the second event of a writer naming its schema, within the gap, NOTIFYs: a NOTIFY per event on the hot paths")
	}
	if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &b).Close() }); err != nil {
		t.Fatal(err)
	}
	waitForStreamCount(t, e.js, 4, 2*time.Second)
}
