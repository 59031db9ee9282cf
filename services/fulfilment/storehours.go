package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// A store's opening hours changed (UpdateStore: a holiday closure added, the hours cut or moved)
// after some of its orders were given deadlines counted in them: a READY order's pickup
// deadline (and its reminder), an order not yet ready its abandon time. Fulfilment hears it from
// inventory's StoreChanged event, through the inbox, and counts each open order's deadlines
// again in the new hours. A deadline moves only later, never earlier: the shopper keeps the time
// they were given, and staff the time they had. So a holiday closure added for tomorrow carries
// today's late orders over to the day after, as the hours the order was given would have.
// Each order moved gets a "rescheduled" transition (the store named, the new hours the reason),
// which its WatchOrder shows, and its holds are extended with it.
//
// Events arrive late, again or out of order: the orders are counted in the store's hours as
// inventory has them when the event is handled, an order is only counted in
// hours at least as new as those its holds were placed against (its store_version), and
// counting again in the same hours moves nothing.

// storeHoursConsumer is the durable consumer of inventory's store updates.
const storeHoursConsumer = "fulfilment-store-hours"

// openOrderMaxAge bounds how long ago an open order was placed: its deadlines are at most
// maxPickupAhead past its estimate or acceptance, so a fortnight and a little; the range keeps
// the read of a store's orders to its recent ones (orders_by_store).
const openOrderMaxAge = 30 * 24 * time.Hour

// handleStoreUpdated moves later the deadlines of the store's open orders that its new hours
// end later (see the top of this file).
func (s *Service) handleStoreUpdated(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev inventoryv1.StoreChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	st := ev.GetStore()
	if st.GetId() == "" {
		return inbox.Permanent(errors.New("store update without a store id"))
	}
	// The orders are counted in the store's hours as inventory has them now, not as the event
	// carried them: an update handled late (out of order, read again, or after a pause, whose
	// event this consumer does not read but which moves the version on) would otherwise count
	// them in hours no longer the store's, or, passed over, leave them in the old ones.
	gen := s.stores.generation()
	cur, err := s.inv.getStore(ctx, st.GetId())
	if err != nil {
		return fmt.Errorf("store %s as it is now: %w", st.GetId(), err)
	}
	// Inventory's store as it is now is what this copy's next acceptance or MarkReady there needs.
	s.stores.put(cur, gen)
	if cur.GetVersion() > st.GetVersion() {
		st = cur
	}
	moved, err := s.rescheduleAtStore(ctx, tx, st, "")
	if err != nil || len(moved) == 0 {
		return err
	}
	s.log.Info("store hours changed: open orders' deadlines moved later", "store_id", st.GetId(), "orders", len(moved))
	inbox.OnCommit(ctx, func() { s.afterWritten(moved) })
	return nil
}

// rescheduleAtStore counts again, in store st's hours, the deadlines of its open orders placed
// against st's version or an earlier one (only order orderID, if given), and writes in tx those
// that end later. The caller shows the orders moved (afterWritten) once tx commits.
func (s *Service) rescheduleAtStore(ctx context.Context, tx pgx.Tx, st *inventoryv1.Store, orderID string) ([]written, error) {
	info := storeInfoOf(st.GetId(), st)
	if info.hours == nil {
		return nil, nil // plain time now: no deadline it gives is later than one counted in open hours
	}
	now := s.clock.NowOrRead(ctx, s.db)
	sql := `SELECT ` + orderColumns + ` FROM orders
		WHERE store_id = $1 AND create_time >= $2 AND state IN (2, 3, 4) AND store_version <= $3`
	args := []any{st.GetId(), now.Add(-openOrderMaxAge), st.GetVersion()}
	if orderID != "" {
		sql += ` AND id = $4`
		args = append(args, orderID)
	}
	orders, err := queryOrders(ctx, tx, sql+` ORDER BY id FOR UPDATE`, args...)
	if err != nil {
		return nil, fmt.Errorf("open orders at store %s: %w", st.GetId(), err)
	}
	if len(orders) == 0 {
		return nil, nil
	}
	// Written at the database's time once they are locked, not before a wait for them.
	if now, err = s.clock.Read(ctx, tx); err != nil {
		return nil, err
	}
	readyAt, err := readyTimes(ctx, tx, orders)
	if err != nil {
		return nil, err
	}
	moved, err := s.stepAll(ctx, tx, orders, domain.Reschedule, systemActor("inventory"), "the store's opening hours changed", now,
		func(o *order) bool { return s.reschedule(o, info, readyAt[o.ID]) })
	if err != nil {
		return nil, fmt.Errorf("reschedule orders at store %s: %w", st.GetId(), err)
	}
	return moved, nil
}

// recountTimeout bounds counting one order's deadlines again after its transition.
const recountTimeout = 5 * time.Second

// recountIfStoreChanged counts order o's deadlines again in its store's hours as inventory has
// them now, if this copy heard the store change (or missed events: a reconnect) since
// generation gen, when o's transition read the store's details: that transition, which has
// just committed, may have counted them in the old hours, after the hours consumer had looked
// at the store's orders (see storecache.go). Moving deadlines only later, as the consumer
// does, it changes nothing when they were counted in the new hours already. A failure is
// logged: the order keeps the deadlines its transition gave it.
func (s *Service) recountIfStoreChanged(ctx context.Context, o *order, gen uint64) {
	if o == nil || o.StoreID == "" || !domain.Open(o.State) || !s.stores.changedSince(o.StoreID, gen) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recountTimeout)
	defer cancel()
	read := s.stores.generation()
	st, err := s.inv.getStore(ctx, o.StoreID)
	if err == nil {
		s.stores.put(st, read)
		var moved []written
		err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			moved, err = s.rescheduleAtStore(ctx, tx, st, o.ID)
			return err
		})
		if err == nil {
			s.afterWritten(moved)
			return
		}
	}
	s.log.Warn("store changed while an order's deadlines were counted; counting them again failed, the order keeps them",
		"store_id", o.StoreID, "order_id", o.ID, "err", err)
}

// reschedule sets o's deadlines to those info's hours give, where they are later, and reports
// whether any moved. readyAt is when o became READY (zero for an order not ready).
func (s *Service) reschedule(o *order, info storeInfo, readyAt time.Time) bool {
	window := o.PickupWindow
	if window <= 0 {
		window = defaultPickupWindow
	}
	moved := false
	switch o.State {
	case domain.Ready:
		if readyAt.IsZero() {
			return false
		}
		deadline, remind := info.pickupTimes(readyAt, window, s.cfg.ExpiringSoonBefore)
		if deadline.After(o.Timers.PickupDeadline) {
			o.Timers.PickupDeadline, moved = deadline, true
			// A reminder not yet sent follows the deadline; one sent stays sent.
			if !o.Timers.ExpiringSoonAt.IsZero() && remind.After(o.Timers.ExpiringSoonAt) {
				o.Timers.ExpiringSoonAt = remind
			}
		}
	case domain.Confirmed, domain.Preparing:
		if at := domain.AbandonAt(o.ReadyBy, o.AcceptTime, window, info.pickupDeadline); at.After(o.Timers.AbandonAt) {
			o.Timers.AbandonAt, moved = at, true
		}
	}
	return moved
}

// readyTimes gives, for each READY order of orders, when it became READY (its MarkReady, not a
// check-in since, which keeps the state).
func readyTimes(ctx context.Context, tx pgx.Tx, orders []*order) (map[string]time.Time, error) {
	var ids []string
	for _, o := range orders {
		if o.State == domain.Ready {
			ids = append(ids, o.ID)
		}
	}
	out := make(map[string]time.Time, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, `SELECT order_id, max(time) FROM order_history
		WHERE order_id = ANY($1) AND to_state = $2 AND from_state <> $2 GROUP BY order_id`, ids, int16(domain.Ready))
	if err != nil {
		return nil, fmt.Errorf("ready times: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			at time.Time
		)
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("ready times: %w", err)
		}
		out[id] = at.UTC()
	}
	return out, rows.Err()
}
