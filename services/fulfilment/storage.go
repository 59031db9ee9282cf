package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/handoff-dev/handoff/internal/pgdb"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// execer is what writes need: a transaction, or a writeBatch.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// querier is what reads need: the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

const orderColumns = `id, customer_id, idempotency_key, cart_id, state, store_id, store_name, lines, currency,
	customer_note, pickup_name, email, shortages, reason, ready_by, pickup_window_ms, pickup_deadline,
	expiring_soon_at, not_accepted_at, timer_at, hold_deadline, check_in_time, check_in_bay, wrong_codes,
	pickup_locked_until, placement, version, create_time, update_time, accept_time, store_time_zone, check_ins,
	abandon_at, store_version, requested_pickup, writes`

// scanOrder reads one row of orderColumns.
func scanOrder(row pgx.Row) (*order, error) {
	var (
		o                                                                    order
		state                                                                int16
		windowMS                                                             int64
		readyBy, deadline, soon, notAccepted, timerAt, holdDeadline, checkIn pgtype.Timestamptz
		lockedUntil, accepted, abandonAt                                     pgtype.Timestamptz
	)
	err := row.Scan(&o.ID, &o.CustomerID, &o.IdempotencyKey, &o.CartID, &state, &o.StoreID, &o.StoreName, &o.Lines, &o.Currency,
		&o.CustomerNote, &o.PickupName, &o.Email, &o.Shortages, &o.Reason, &readyBy, &windowMS, &deadline,
		&soon, &notAccepted, &timerAt, &holdDeadline, &checkIn, &o.CheckInBay, &o.WrongCodes,
		&lockedUntil, &o.Placement, &o.Version, &o.CreateTime, &o.UpdateTime, &accepted, &o.StoreTimeZone, &o.CheckIns,
		&abandonAt, &o.StoreVersion, &o.RequestedPickup, &o.Writes)
	if err != nil {
		return nil, err
	}
	t := func(v pgtype.Timestamptz) time.Time {
		if !v.Valid {
			return time.Time{}
		}
		return v.Time.UTC()
	}
	o.State = domain.State(state)
	o.PickupWindow = time.Duration(windowMS) * time.Millisecond
	o.ReadyBy, o.Timers.PickupDeadline, o.Timers.ExpiringSoonAt, o.Timers.NotAcceptedAt = t(readyBy), t(deadline), t(soon), t(notAccepted)
	o.AcceptTime = t(accepted)
	// The abandon time written at confirmation and acceptance counts the store's open hours;
	// the plain-time one is the least an order gets: a row from before the column has none (NULL),
	// and one accepted by a process from before it has its confirmation's.
	o.Timers.AbandonAt = domain.AbandonAt(o.ReadyBy, o.AcceptTime, o.PickupWindow, nil)
	if at := t(abandonAt); at.After(o.Timers.AbandonAt) {
		o.Timers.AbandonAt = at
	}
	o.HoldDeadline, o.CheckInTime, o.PickupLockedUntil = t(holdDeadline), t(checkIn), t(lockedUntil)
	if o.State == domain.Pending {
		o.DriveAt = t(timerAt)
	}
	o.CreateTime, o.UpdateTime = o.CreateTime.UTC(), o.UpdateTime.UTC()
	return &o, nil
}

const (
	selectOrderSQL   = `SELECT ` + orderColumns + ` FROM orders WHERE id = $1`
	selectHistorySQL = `SELECT seq, from_state, to_state, event, actor_kind, actor_id, reason, line_id, time
		FROM order_history WHERE order_id = $1 AND seq > $2 ORDER BY seq`
)

// batchSender sends a pgx batch: the pool, an acquired connection, a transaction.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// readOrder reads an order and the history entries after seq since in one round trip (both
// statements pipelined) into o.History; nil when there is none. since 0 reads the whole
// history. The
// history is read by a later statement than the row, so it may hold entries of a change
// committed in between: those are left out, and the order comes back as of its row.
func readOrder(ctx context.Context, db batchSender, id string, since int64) (*order, error) {
	var b pgx.Batch
	b.Queue(selectOrderSQL, id)
	b.Queue(selectHistorySQL, id, since)
	br := db.SendBatch(ctx, &b)
	o, err := scanReadOrder(br, since)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("read order %s: %w", id, cerr)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

// scanReadOrder reads the results of readOrder's batch from br; nil when there is no order.
func scanReadOrder(br pgx.BatchResults, since int64) (*order, error) {
	o, err := scanOrder(br.QueryRow())
	if errors.Is(err, pgx.ErrNoRows) {
		o, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read order: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	h, err := scanHistory(rows)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	if o == nil {
		return nil, nil
	}
	for len(h) > 0 && h[len(h)-1].Seq > o.Version {
		h = h[:len(h)-1]
	}
	o.History = h
	return o, nil
}

// queryOrders reads the orders a query selects (orderColumns, in its order).
func queryOrders(ctx context.Context, q querier, sql string, args ...any) ([]*order, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query orders: %w", err)
	}
	defer rows.Close()
	var out []*order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("scan order: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query orders: %w", err)
	}
	return out, nil
}

// scanHistory reads rows of selectHistorySQL, oldest first.
func scanHistory(rows pgx.Rows) ([]historyEntry, error) {
	defer rows.Close()
	var out []historyEntry
	for rows.Next() {
		h, err := scanHistoryEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// scanHistoryEntry reads one history row: its columns as selectHistorySQL has them, after the
// order id when orderID is given.
func scanHistoryEntry(rows pgx.Rows, orderID ...*string) (historyEntry, error) {
	var (
		h              historyEntry
		from, to, kind int16
		actorID        string
	)
	dest := []any{&h.Seq, &from, &to, &h.Event, &kind, &actorID, &h.Reason, &h.LineID, &h.Time}
	if len(orderID) > 0 {
		dest = append([]any{orderID[0]}, dest...)
	}
	if err := rows.Scan(dest...); err != nil {
		return historyEntry{}, err
	}
	h.From, h.To, h.Time = domain.State(from), domain.State(to), h.Time.UTC()
	h.Actor = &commonv1.Actor{Kind: commonv1.ActorKind(kind), Id: actorID}
	return h, nil
}

// loadHistory fills o.History, oldest first.
func loadHistory(ctx context.Context, q querier, o *order) error {
	rows, err := q.Query(ctx, selectHistorySQL, o.ID, 0)
	if err != nil {
		return fmt.Errorf("load history of %s: %w", o.ID, err)
	}
	h, err := scanHistory(rows)
	if err != nil {
		return fmt.Errorf("load history of %s: %w", o.ID, err)
	}
	o.History = h
	return nil
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func nullJSON[T any](v []T) any {
	if len(v) == 0 {
		return nil
	}
	return v
}

// insertOrder writes a new order; timerAt is when the loops must look at it (see
// order.timerAt). An order with the same id (or key) makes it fail with a unique violation
// (see isOrderConflict), which also undoes the rest of its batch.
func insertOrder(ctx context.Context, w execer, o *order, timerAt time.Time) error {
	_, err := w.Exec(ctx, `INSERT INTO orders (`+orderColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
		        $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36)`,
		o.ID, o.CustomerID, o.IdempotencyKey, o.CartID, int16(o.State), o.StoreID, o.StoreName, o.Lines, o.Currency,
		o.CustomerNote, o.PickupName, o.Email, nullJSON(o.Shortages), o.Reason, nullTime(o.ReadyBy), o.PickupWindow.Milliseconds(), nullTime(o.Timers.PickupDeadline),
		nullTime(o.Timers.ExpiringSoonAt), nullTime(o.Timers.NotAcceptedAt), nullTime(timerAt), nullTime(o.HoldDeadline), nullTime(o.CheckInTime), o.CheckInBay, o.WrongCodes,
		nullTime(o.PickupLockedUntil), o.Placement, o.Version, o.CreateTime, o.UpdateTime, nullTime(o.AcceptTime), o.StoreTimeZone, o.CheckIns,
		nullTime(o.Timers.AbandonAt), o.StoreVersion, o.RequestedPickup, o.Writes)
	if err != nil {
		return fmt.Errorf("insert order %s: %w", o.ID, err)
	}
	return nil
}

// isOrderConflict reports an insert that found the order there already.
func isOrderConflict(err error) bool {
	var pgErr *pgconn.PgError
	return pgdb.IsUniqueViolation(err) && errors.As(err, &pgErr) &&
		(pgErr.ConstraintName == "orders_pkey" || pgErr.ConstraintName == "orders_one_per_key")
}

// updateOrderSQL writes every field of an order that can change, over the row it was read as
// only: where the row's writes ($27) is still the one read with it, and counting this write.
// Otherwise (another transaction wrote the row since, or it is gone) the statement fails, by
// order_written_meanwhile (migration 00012), with SQLSTATE 40001 naming the order, and so does
// the transaction or write batch it is in: nothing of the change is written, where a stale copy
// would silently have undone a newer change (a staff acceptance under a timer round's copy of
// the order, say). A failure of the statement itself, not a count of rows, because in a
// writeBatch nobody reads its command tag. Every writer locks the order's row before reading
// it, so this never fails while they do; a lock ever dropped fails loudly instead.
//
// The order's version is no such guard: it moves with transitions only, not with check-ins,
// wrong codes, timers or hold deadlines. An UPDATE waiting for another's lock on the row checks
// writes again on the row that one committed, so a write queued behind a newer one fails too.
const updateOrderSQL = `WITH written AS (
		UPDATE orders SET state = $2, store_id = $3, store_name = $4, lines = $5, shortages = $6,
		reason = $7, ready_by = $8, pickup_window_ms = $9, pickup_deadline = $10, expiring_soon_at = $11,
		not_accepted_at = $12, timer_at = $13, hold_deadline = $14, check_in_time = $15, check_in_bay = $16,
		wrong_codes = $17, pickup_locked_until = $18, placement = $19, version = $20, update_time = $21,
		accept_time = $22, store_time_zone = $23, check_ins = $24, abandon_at = $25, store_version = $26,
		writes = writes + 1
		WHERE id = $1 AND writes = $27
		RETURNING 1)
	SELECT order_written_meanwhile($1, $27) WHERE NOT EXISTS (SELECT FROM written)`

// updateOrder writes every field that can change (see updateOrderSQL), and counts the write in
// o.Writes: o is then the row as the write leaves it.
func updateOrder(ctx context.Context, w execer, o *order, timerAt time.Time) error {
	_, err := w.Exec(ctx, updateOrderSQL,
		o.ID, int16(o.State), o.StoreID, o.StoreName, o.Lines, nullJSON(o.Shortages),
		o.Reason, nullTime(o.ReadyBy), o.PickupWindow.Milliseconds(), nullTime(o.Timers.PickupDeadline), nullTime(o.Timers.ExpiringSoonAt),
		nullTime(o.Timers.NotAcceptedAt), nullTime(timerAt), nullTime(o.HoldDeadline), nullTime(o.CheckInTime), o.CheckInBay,
		o.WrongCodes, nullTime(o.PickupLockedUntil), o.Placement, o.Version, o.UpdateTime, nullTime(o.AcceptTime), o.StoreTimeZone, o.CheckIns,
		nullTime(o.Timers.AbandonAt), o.StoreVersion, o.Writes)
	if err != nil {
		return fmt.Errorf("update order %s: %w", o.ID, err)
	}
	o.Writes++
	return nil
}

// insertHistory appends entries to the order's history in one statement.
func insertHistory(ctx context.Context, w execer, orderID string, entries []historyEntry) error {
	if len(entries) == 0 {
		return nil
	}
	n := len(entries)
	seqs, from, to := make([]int64, n), make([]int16, n), make([]int16, n)
	events, kinds, actors := make([]string, n), make([]int16, n), make([]string, n)
	reasons, lines, times := make([]string, n), make([]string, n), make([]time.Time, n)
	for i, h := range entries {
		seqs[i], from[i], to[i] = h.Seq, int16(h.From), int16(h.To)
		events[i], kinds[i], actors[i] = h.Event, int16(h.Actor.GetKind()), h.Actor.GetId()
		reasons[i], lines[i], times[i] = h.Reason, h.LineID, h.Time
	}
	_, err := w.Exec(ctx, `INSERT INTO order_history (order_id, seq, from_state, to_state, event, actor_kind, actor_id, reason, line_id, time)
		SELECT $1, * FROM unnest($2::bigint[], $3::smallint[], $4::smallint[], $5::text[], $6::smallint[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])`,
		orderID, seqs, from, to, events, kinds, actors, reasons, lines, times)
	if err != nil {
		return fmt.Errorf("append history of %s: %w", orderID, err)
	}
	return nil
}
