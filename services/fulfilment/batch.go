package fulfilment

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// writeBatch collects the writes of one change of an order (the row, its history, its event
// through the outbox, its notifications, its effects) so that they reach Postgres in one round
// trip. Sent on its own (sendAlone) the statements run as one implicit transaction: all or
// nothing, like BEGIN … COMMIT but without the extra round trips, which matter when the
// connection pool is the bottleneck. Sent inside a transaction (sendIn) they join it.
//
// It satisfies pgx.Tx for the writers that take the caller's transaction (outbox.EnqueueWithID,
// notify.Enqueue): they only Exec, and Exec here queues the statement and reports success; a
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
