package posadapter

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/handoff-dev/handoff/internal/coalesce"
)

// Acknowledgements are stored in batches: the acks of concurrent AckTicket calls (every
// terminal acks every ticket) arriving while one batch is written go as the next, one
// statement and one commit. Each ack keeps its own check (the ticket is its store's); should a
// batch fail, each of its acks is written alone, which gives a failing one its own error.

// ackReq is one acknowledgement: reader handled ticketID of storeID.
type ackReq struct{ ticketID, storeID, reader string }

// maxAckBatch bounds the acks of one statement; ackTimeout bounds one batch's write.
const (
	maxAckBatch = 64
	ackTimeout  = 10 * time.Second
)

// ackManySQL records each ack whose ticket belongs to the store named with it, and returns the
// position of every such request (an ack already recorded is found, not written again).
const ackManySQL = `
	WITH r AS (
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS r(ticket_id, store_id, reader, ord)),
	t AS (
		SELECT r.ord, r.ticket_id, r.store_id, r.reader FROM r
		JOIN tickets k ON k.ticket_id = r.ticket_id AND k.store_id = r.store_id),
	ins AS (
		INSERT INTO ticket_acks (reader, ticket_id, store_id) SELECT reader, ticket_id, store_id FROM t ORDER BY ord
		ON CONFLICT (reader, ticket_id) DO NOTHING)
	SELECT ord FROM t`

// ackMany records the acks of reqs in one statement. Each result says whether the ticket was
// found (false: NotFound for its caller).
func (a *Adapter) ackMany(ctx context.Context, reqs []ackReq) []coalesce.Result[bool] {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	out := make([]coalesce.Result[bool], len(reqs))
	// In key order, so that two batches acking the same tickets insert them in one order and
	// cannot deadlock on each other.
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		return cmp.Or(cmp.Compare(reqs[x].reader, reqs[y].reader), cmp.Compare(reqs[x].ticketID, reqs[y].ticketID))
	})
	tickets, stores, readers := make([]string, len(reqs)), make([]string, len(reqs)), make([]string, len(reqs))
	for k, i := range order {
		tickets[k], stores[k], readers[k] = reqs[i].ticketID, reqs[i].storeID, reqs[i].reader
	}
	fail := func(err error) []coalesce.Result[bool] {
		return coalesce.FailAll[bool](len(reqs), fmt.Errorf("record acknowledgement: %w", err))
	}
	rows, err := a.db.Query(ctx, ackManySQL, tickets, stores, readers)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var ord int64
		if err := rows.Scan(&ord); err != nil {
			return fail(err)
		}
		out[order[ord-1]].Value = true
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return out
}
