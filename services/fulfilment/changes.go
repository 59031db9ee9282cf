package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/handoff-dev/handoff/internal/coalesce"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// Concurrent changes of different orders (staff accepting, marking ready and handing over at
// many stores at once; shoppers cancelling; the effects worker lapsing orders) go together:
// one transaction locks all their rows and reads their histories in one round trip, each change
// is decided on its own order exactly as alone, and every write and the COMMIT go in a second
// round trip. Under load that is two round trips and one commit for tens of changes instead of
// two and one for each. A lone change waits for nobody (see internal/coalesce).
//
// The combined transaction skips orders another transaction has locked (placement recovery
// holds PENDING orders while it asks inventory, for seconds when inventory is slow): their
// changes are made alone, each waiting for its own lock, so one locked order never holds up the
// changes of every other order in the process, which wait for the batch before them.
//
// A refusal (an illegal transition, another's order) is each request's own and writes nothing
// of it; the others commit. Should the combined transaction fail (a write error, a deadlock
// with another transaction), it writes nothing, and each of its changes is then made alone,
// which decides it afresh and gives a failing one its own error.

// maxChangeBatch bounds the orders one combined change transaction locks.
const maxChangeBatch = 32

// changeRequest is one call of transact.
type changeRequest struct {
	id string
	sc scope
	fn func(o *order, now time.Time) ([]change, error)
	// span is the caller's span (tracing on): the change's events continue its trace, though
	// the change is written on the batch's context.
	span trace.SpanContext
}

// errNotTogether tells a request to be made alone: its combined transaction failed, another
// change of the same order was in it, or its order was locked.
var errNotTogether = errors.New("fulfilment: change not made together with others")

// transact runs one change of an order in one transaction: lock the row, check the caller may
// see it (another's order is NotFound, never "exists"), let fn decide and mutate, then write
// the row and record the changes. It returns the order after the change, history included
// (what was read under the lock and this change's entries: nothing is read back).
// fn must decide from o and now alone: it may run more than once (see errNotTogether), and
// only the run whose transaction commits counts.
func (s *Service) transact(ctx context.Context, id string, sc scope, fn func(o *order, now time.Time) ([]change, error)) (*order, error) {
	if id == "" {
		return nil, rpcerr.Invalid("order_id", "required")
	}
	req := changeRequest{id: id, sc: sc, fn: fn, span: tracing.SpanContext(ctx)}
	o, err := s.changes.Do(ctx, req)
	if !errors.Is(err, errNotTogether) {
		return o, err
	}
	// Alone, the change waits for its order's lock, so a transaction that lost a race (a
	// deadlock, or updateOrder finding the row written since it was read: 40001) is decided
	// again on the order as it is then, a few times, before the caller is told to try again.
	var out []coalesce.Result[*order]
	for try := 1; ; try++ {
		out, err = s.makeChanges(ctx, []changeRequest{req}, alone)
		if err == nil {
			return out[0].Value, out[0].Err
		}
		if !pgdb.LostRace(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("change order %s: %w", id, err)
		}
		if try == maxAloneTries {
			s.log.Warn("an order's change lost a race every time it was made; the caller is told to try again", "order_id", id, "tries", try, "err", err)
			return nil, rpcerr.Aborted("order %q was changed meanwhile; try again", rpcerr.Echo(id))
		}
	}
}

// maxAloneTries bounds the tries of a change made alone that loses a race (see transact).
const maxAloneTries = 3

// changeTogether makes reqs' changes in one transaction (the batcher's run); see the top of
// this file.
func (s *Service) changeTogether(ctx context.Context, reqs []changeRequest) []coalesce.Result[*order] {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	out, err := s.makeChanges(ctx, reqs, together)
	if err != nil {
		s.log.Warn("changing orders together failed; each is changed alone", "orders", len(reqs), "err", err)
		out = make([]coalesce.Result[*order], len(reqs))
		for i := range out {
			out[i].Err = errNotTogether
		}
	}
	return out
}

// pendingChange is a request whose order was found and decided, its writes queued.
type pendingChange struct {
	at      int // index of the request
	o       *order
	changes []change
	refusal error // kept with its bookkeeping committed (commitAnyway)
	effects bool
	w       writeBatch
}

// changeMode says how a change transaction takes its orders' locks.
type changeMode bool

const (
	alone    changeMode = false // wait for each lock
	together changeMode = true  // skip locked orders: they are made alone
)

// makeChanges makes reqs' changes in one transaction and returns each one's outcome: its
// order, its refusal, or errNotTogether for a second change of an order or (together) one
// whose order was locked, to be made alone after this one. An error means the transaction
// failed and wrote nothing.
func (s *Service) makeChanges(ctx context.Context, reqs []changeRequest, mode changeMode) ([]coalesce.Result[*order], error) {
	out := make([]coalesce.Result[*order], len(reqs))
	ids := make([]string, 0, len(reqs))
	for i, r := range reqs {
		if slices.Contains(ids, r.id) {
			// Its change must see the one before it committed.
			out[i].Err = errNotTogether
			continue
		}
		ids = append(ids, r.id)
	}
	pending, err := s.decide(ctx, reqs, ids, out, mode)
	if err != nil {
		return nil, err
	}
	for _, p := range pending {
		for _, c := range p.changes {
			p.o.History = append(p.o.History, c.entry)
		}
		s.afterCommit(p.o, p.changes, p.effects)
		if p.refusal != nil {
			out[p.at].Err = apiError(p.refusal)
		} else {
			out[p.at].Value = p.o
		}
	}
	return out, nil
}

// decide locks and reads the orders ids, decides each request out has no outcome for yet (a
// refusal goes to out at once), and writes and commits the changes: two round trips. It
// returns the committed changes. An error means nothing was written.
func (s *Service) decide(ctx context.Context, reqs []changeRequest, ids []string, out []coalesce.Result[*order], mode changeMode) ([]*pendingChange, error) {
	conn, release, err := pgdb.Acquire(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("acquire a connection: %w", err)
	}
	defer release()

	// Rows are locked in id order (the sort runs below the lock), so two such transactions
	// cannot deadlock on each other.
	lock := "FOR UPDATE"
	if mode == together {
		lock = "FOR UPDATE SKIP LOCKED"
	}
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(pgdb.XactIDSQL) // to learn its fate should COMMIT's reply be lost
	b.Queue(`SELECT `+orderColumns+` FROM orders WHERE id = ANY($1) ORDER BY id `+lock, ids)
	b.Queue(`SELECT order_id, seq, from_state, to_state, event, actor_kind, actor_id, reason, line_id, time
		FROM order_history WHERE order_id = ANY($1) ORDER BY order_id, seq`, ids)
	// The database's clock, by which every copy decides (an order overdue, the times written),
	// as the timer loop does: a copy whose clock runs ahead would expire orders early in staff's
	// hands. Read once the rows are locked, not before a wait for them.
	b.Queue(`SELECT statement_timestamp()`)
	br := conn.SendBatch(ctx, &b)
	var (
		xid string
		now time.Time
	)
	orders, err := readOrdersWithHistory(br, &xid, &now)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("lock %d orders: %w", len(ids), err)
	}
	now = s.clock.Observe(now)

	var (
		pending []*pendingChange
		writes  []*writeBatch
	)
	for i, r := range reqs {
		if out[i].Err != nil {
			continue
		}
		o := orders[r.id]
		if o == nil && mode == together {
			out[i].Err = errNotTogether // locked, or not there: alone, it waits or finds out
			continue
		}
		if o == nil || !r.sc.allows(o) {
			out[i].Err = rpcerr.NotFound("order", r.id)
			continue
		}
		if s.staleReads.Load() > 0 && s.staleReads.Add(-1) >= 0 {
			o.Writes-- // a test's: the row written since it was read
		}
		p := &pendingChange{at: i, o: o}
		changes, err := r.fn(o, now)
		var keep *commitAnyway
		if errors.As(err, &keep) {
			p.refusal = keep.err
		} else if err != nil {
			out[i].Err = apiError(err)
			continue
		}
		p.changes = changes
		if p.effects, err = s.write(tracing.WithSpanContext(ctx, r.span), &p.w, o, changes, false, now); err != nil {
			out[i].Err = err
			continue
		}
		pending = append(pending, p)
		writes = append(writes, &p.w)
	}
	if len(pending) == 0 {
		return nil, nil // every request refused: release rolls the transaction back
	}

	all := combined(writes...)
	all.Queue("COMMIT")
	err = conn.SendBatch(ctx, all).Close()
	if err == nil && s.loseCommitReply.Load() {
		err = errors.New("test: the connection was lost during COMMIT")
	}
	// A commit whose reply was lost must not be decided again, alone: that would refuse its
	// changes as illegal now (an accept of an order already accepted) and count a wrong pickup
	// code twice.
	if err != nil && !pgdb.Committed(ctx, s.db, xid, err, settleTimeout, s.log) {
		return nil, fmt.Errorf("write %d orders' changes: %w", len(pending), err)
	}
	return pending, nil
}

// readOrdersWithHistory reads the transaction's id into xid and the database's clock into now,
// then the two locking reads of
// decideTogether: the orders by id, each
// with its history as of its row (entries of a change committed between the two statements are
// left out, as readOrder does).
func readOrdersWithHistory(br pgx.BatchResults, xid *string, now *time.Time) (map[string]*order, error) {
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	if err := br.QueryRow().Scan(xid); err != nil {
		return nil, fmt.Errorf("read the transaction id: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	orders := make(map[string]*order)
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan order: %w", err)
		}
		orders[o.ID] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}

	rows, err = br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var orderID string
		h, err := scanHistoryEntry(rows, &orderID)
		if err != nil {
			return nil, fmt.Errorf("scan history: %w", err)
		}
		if o := orders[orderID]; o != nil && h.Seq <= o.Version {
			o.History = append(o.History, h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	rows.Close()
	if err := br.QueryRow().Scan(now); err != nil {
		return nil, fmt.Errorf("read the database's clock: %w", err)
	}
	return orders, nil
}
