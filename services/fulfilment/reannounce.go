package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
)

// streamCheckEvery is how often fulfilment looks at the events stream's creation time (one
// stream info request): an order event lost with the stream is announced again within about
// this long of the stream being declared again.
const streamCheckEvery = 5 * time.Second

// reannounceBatch is how many open orders one transaction of a re-announcement reads and
// announces: a store chain's open orders take a few short transactions, not one long one. A
// variable only so that a test can page through a few orders.
var reannounceBatch = 500

// runStreamWatch re-announces the open orders whenever the events stream has been made anew
// (see checkEventsStream), at start and every streamCheckEvery, until ctx ends.
func (s *Service) runStreamWatch(ctx context.Context) {
	t := time.NewTicker(streamCheckEvery)
	defer t.Stop()
	for {
		// While NATS is away there is nothing to look at, and the reconnect says so already.
		if s.nc == nil || s.nc.IsConnected() {
			if _, err := s.checkEventsStream(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("checking whether the events stream lost order events failed; checking again later", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkEventsStream compares the events stream with the one remembered in event_streams (its
// creation time and the last sequence seen), and when it has been made anew, or its last
// sequence has gone back, announces every open order's current event again (reannounce) and
// then remembers the stream as it is; it returns how many it announced. The relay deletes an
// event once JetStream has it, so an event a consumer had not read when the stream was lost
// (deleted by an operator, its server back without its store, or restored from a backup, which
// keeps the creation time but goes back to the snapshot's sequence) is gone: the store of an
// order confirmed then would never get its NEW_ORDER ticket. The stream is remembered only after
// the re-announcement has committed, so a crash in between announces again (harmless, see
// reannounce). With nothing remembered (the first start with this table) the stream is taken as
// the one every event so far went to, and nothing is announced. A stream found as remembered
// but further on has its last sequence remembered (one small write a look while events flow).
//
// Two copies may both see a stream lost and both re-announce: every event keeps its original
// id, so the outbox keeps one row per id, JetStream drops a second publication within its
// duplicate window, and a consumer that has an event's id in its inbox skips it.
func (s *Service) checkEventsStream(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, streamCheckEvery)
	defer cancel()
	st, err := s.js.Stream(cctx, streams.EventsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // declared again by the stack's stream watch; its new time is seen then
	}
	if err != nil {
		return 0, fmt.Errorf("look at stream %s: %w", streams.EventsStream, err)
	}
	info := st.CachedInfo()
	// Postgres keeps microseconds; JetStream's time has nanoseconds.
	created, lastSeq := info.Created.UTC().Truncate(time.Microsecond), info.State.LastSeq

	var (
		seen    time.Time
		seenSeq uint64
	)
	err = s.db.QueryRow(ctx, `SELECT created, last_seq FROM event_streams WHERE stream = $1`, streams.EventsStream).Scan(&seen, &seenSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := s.db.Exec(ctx, `INSERT INTO event_streams (stream, created, last_seq) VALUES ($1, $2, $3) ON CONFLICT (stream) DO NOTHING`,
			streams.EventsStream, created, lastSeq); err != nil {
			return 0, fmt.Errorf("remember the creation of stream %s: %w", streams.EventsStream, err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the remembered creation of stream %s: %w", streams.EventsStream, err)
	}
	switch {
	case seen.Equal(created) && lastSeq == seenSeq:
		return 0, nil
	case seen.Equal(created) && lastSeq > seenSeq:
		// Never back: another copy may have remembered a later sequence meanwhile.
		if _, err := s.db.Exec(ctx, `UPDATE event_streams SET last_seq = $2 WHERE stream = $1 AND created = $3 AND last_seq < $2`,
			streams.EventsStream, lastSeq, created); err != nil {
			return 0, fmt.Errorf("remember the last sequence of stream %s: %w", streams.EventsStream, err)
		}
		return 0, nil
	}
	how := "created anew"
	if seen.Equal(created) {
		how = fmt.Sprintf("back at sequence %d from %d (restored from a backup?)", lastSeq, seenSeq)
	}
	n, err := s.reannounce(ctx)
	if err != nil {
		return n, fmt.Errorf("stream %s %s (created %s, was %s): %w", streams.EventsStream, how, created, seen, err)
	}
	if h := s.reannouncedHook.Load(); h != nil {
		(*h)()
	}
	// Only over the stream this copy read: a copy that has remembered a newer one meanwhile keeps it.
	if _, err := s.db.Exec(ctx, `UPDATE event_streams SET created = $2, last_seq = $3 WHERE stream = $1 AND created = $4 AND last_seq = $5`,
		streams.EventsStream, created, lastSeq, seen, seenSeq); err != nil {
		return n, fmt.Errorf("remember the creation of stream %s: %w", streams.EventsStream, err)
	}
	s.log.Warn("events stream lost events ("+how+"): announced each open order's current event again, with its original id, for the consumers that lost it (those that had it skip it)",
		"stream", streams.EventsStream, "was_created", seen, "created", created, "was_last_seq", seenSeq, "last_seq", lastSeq, "orders", n)
	return n, nil
}

// reannounce enqueues, for every open order (CONFIRMED, PREPARING, READY), the event of its
// last history entry, in batches of reannounceBatch orders, one transaction each. Only that
// event is announced because only it can be rebuilt exactly: record writes an event's payload
// from the order as its transaction leaves it, and every change of what the payload shows
// (lines, check-in, deadlines, reason) is a transition, so the row as it is now is the payload
// of its last event, and of no earlier one. A confirmed order's store that lost the confirmed
// event gets its NEW_ORDER ticket from whatever event of the order it reads (see the
// pos-adapter's handleOrderEvents). Ended orders are not announced.
func (s *Service) reannounce(ctx context.Context) (int, error) {
	var (
		total int
		after openOrderKey
	)
	for {
		var read, announced int
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			var err error
			read, announced, after, err = s.reannounceBatch(ctx, tx, after)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("announce open orders again after %d: %w", total, err)
		}
		total += announced
		if read < reannounceBatch {
			return total, nil
		}
	}
}

// openOrderKey is a position in orders_open_by_store's order.
type openOrderKey struct {
	storeID string
	created time.Time
	id      string
}

// reannounceBatch enqueues in tx the current event of each of the next open orders after key
// (at most reannounceBatch), and returns how many it read and announced, and the last one's key. History entries are
// never changed, so the entry read by (order, version) is the row's last whatever commits in
// between.
func (s *Service) reannounceBatch(ctx context.Context, tx pgx.Tx, after openOrderKey) (read, announced int, next openOrderKey, err error) {
	orders, err := queryOrders(ctx, tx, `SELECT `+orderColumns+` FROM orders
		WHERE state IN (2, 3, 4) AND (store_id, create_time, id) > ($1, $2, $3)
		ORDER BY store_id, create_time, id LIMIT $4`, after.storeID, after.created, after.id, reannounceBatch)
	if err != nil {
		return 0, 0, after, err
	}
	if len(orders) == 0 {
		return 0, 0, after, nil
	}
	ids := make([]string, len(orders))
	versions := make([]int64, len(orders))
	for i, o := range orders {
		ids[i], versions[i] = o.ID, o.Version
	}
	rows, err := tx.Query(ctx, `SELECT h.order_id, h.seq, h.from_state, h.to_state, h.event, h.actor_kind, h.actor_id, h.reason, h.line_id, h.time
		FROM unnest($1::text[], $2::bigint[]) AS o(id, version)
		JOIN order_history h ON h.order_id = o.id AND h.seq = o.version`, ids, versions)
	if err != nil {
		return 0, 0, after, fmt.Errorf("read the last history entries of %d open orders: %w", len(orders), err)
	}
	last := make(map[string]historyEntry, len(orders))
	for rows.Next() {
		var id string
		h, err := scanHistoryEntry(rows, &id)
		if err != nil {
			rows.Close()
			return 0, 0, after, fmt.Errorf("read the last history entries of %d open orders: %w", len(orders), err)
		}
		last[id] = h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, after, fmt.Errorf("read the last history entries of %d open orders: %w", len(orders), err)
	}

	events := make([]outbox.Event, 0, len(orders))
	for _, o := range orders {
		e, ok := last[o.ID]
		if !ok || e.Event == "" {
			// Every open order's last entry is a transition with an event; one without is
			// logged rather than stopping the others.
			s.log.Error("open order has no last history entry with an event: not announced again", "order_id", o.ID, "version", o.Version)
			continue
		}
		base := o.proto(viewOthers, nil)
		base.History = nil
		events = append(events, orderEvent(base, e))
	}
	if err := outbox.EnqueueBatch(ctx, outbox.InSchema(tx, s.schema), events); err != nil {
		return 0, 0, after, err
	}
	o := orders[len(orders)-1]
	return len(orders), len(events), openOrderKey{storeID: o.StoreID, created: o.CreateTime, id: o.ID}, nil
}
