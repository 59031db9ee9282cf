package fulfilment

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/handoff-dev/handoff/internal/coalesce"
)

// writeBatch collects the writes of one change of an order (the row, its history, its event
// through the outbox, its notifications, its effects) so that they reach Postgres in one round
// trip. Sent on its own (sendAlone) the statements run as one implicit transaction: all or
// nothing, like BEGIN … COMMIT but without the extra round trips, which matter when the
// connection pool is the bottleneck. Sent inside a transaction (sendIn) they join it.
//
// It satisfies pgx.Tx for the writers that take the caller's transaction (outbox.EnqueueWithID,
// notify.Writer.Enqueue): they only Exec, and Exec here queues the statement and reports success; a
// failure surfaces when the batch is sent, and then nothing of it is written. Every other
// method is refused, so a writer that starts reading its transaction fails loudly here rather
// than silently misbehaving.
type writeBatch struct {
	batch pgx.Batch
}

var _ pgx.Tx = (*writeBatch)(nil)

var errBatchOnlyWrites = errors.New("fulfilment: a write batch only takes Exec; reads need a transaction")

func (w *writeBatch) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	w.batch.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// sendAlone runs the batch as one implicit transaction on a connection of db (or, ended by
// COMMIT, as the end of the transaction the connection has open).
func (w *writeBatch) sendAlone(ctx context.Context, db batchSender) error {
	return db.SendBatch(ctx, &w.batch).Close()
}

// combined queues the statements of ws, in order, into one batch. They are queued afresh: pgx
// keeps what it learnt of a statement on its connection in the queued query, so a query once
// sent must not be sent again elsewhere (as when a failed combined batch's writes are then sent
// alone).
func combined(ws ...*writeBatch) *pgx.Batch {
	var all pgx.Batch
	for _, w := range ws {
		for _, q := range w.batch.QueuedQueries {
			all.Queue(q.SQL, q.Arguments...)
		}
	}
	return &all
}

// sendIn runs the batch inside tx.
func (w *writeBatch) sendIn(ctx context.Context, tx pgx.Tx) error {
	return tx.SendBatch(ctx, &w.batch).Close()
}

func (w *writeBatch) Begin(context.Context) (pgx.Tx, error) { return nil, errBatchOnlyWrites }
func (w *writeBatch) Commit(context.Context) error          { return errBatchOnlyWrites }
func (w *writeBatch) Rollback(context.Context) error        { return errBatchOnlyWrites }
func (w *writeBatch) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errBatchOnlyWrites
}
func (w *writeBatch) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults { return errResults{} }
func (w *writeBatch) LargeObjects() pgx.LargeObjects                         { return pgx.LargeObjects{} }
func (w *writeBatch) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, errBatchOnlyWrites
}
func (w *writeBatch) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errBatchOnlyWrites
}
func (w *writeBatch) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{} }
func (w *writeBatch) Conn() *pgx.Conn                                  { return nil }

type errRow struct{}

func (errRow) Scan(...any) error { return errBatchOnlyWrites }

type errResults struct{}

func (errResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, errBatchOnlyWrites }
func (errResults) Query() (pgx.Rows, error)         { return nil, errBatchOnlyWrites }
func (errResults) QueryRow() pgx.Row                { return errRow{} }
func (errResults) Close() error                     { return errBatchOnlyWrites }
func (errResults) Tx() pgx.Tx                       { return nil }

// New orders' writes go together: the write batches of concurrent checkouts arriving while one
// combined batch is sent go as the next, in one round trip and one implicit transaction, so
// Postgres commits (and flushes its log) once for tens of orders instead of once each. One
// failing order fails the combined batch and writes nothing of it; each order is then sent
// alone, which writes the others and tells the failing one its own error (a retried checkout's
// conflict, say).

// maxPlacementBatch bounds the orders of one combined batch.
const maxPlacementBatch = 64

// sendPlacement writes a new order's batch w, together with concurrent ones when it can.
func (s *Service) sendPlacement(ctx context.Context, w *writeBatch) error {
	if _, err := s.placements.Do(ctx, w); err == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		// The combined batch may still commit: as with any write whose answer was lost, the
		// caller's retry finds the order.
		return err
	}
	return w.sendAlone(ctx, s.db)
}

// sendPlacements sends ws as one batch; every one of them gets the batch's outcome.
func (s *Service) sendPlacements(ctx context.Context, ws []*writeBatch) []coalesce.Result[struct{}] {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	err := s.db.SendBatch(ctx, combined(ws...)).Close()
	if err != nil {
		err = fmt.Errorf("write %d new orders together: %w", len(ws), err)
	}
	out := make([]coalesce.Result[struct{}], len(ws))
	for i := range out {
		out[i].Err = err
	}
	return out
}
