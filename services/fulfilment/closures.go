package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/streams"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// Closing a store with its open orders cancelled (SetStoreStateRequest.cancel_open_orders):
// inventory owns the store's state and fulfilment the orders, so the request travels as the
// store's StoreStateChanged event, consumed here through the inbox (once per event, whatever
// is redelivered). Handling it cancels every order open at the store in the same transaction,
// as staff cancelling each would: holds released, the shopper told, a cancellation ticket to
// the store's terminals.
//
// An order can still be confirmed at the store after that: a reserve that read the store as
// open commits after the closing (inventory checks a store's state without locking its row,
// so that reserves do not queue on it), and its order is confirmed once the reserve answers,
// or by the recovery loop up to PendingGiveUp later. So for closureWatch after taking the
// request on, the timer loop also cancels what is open at the store (closedStoresRound); a
// store reopened since is left alone.

// storeStatesConsumer is the durable consumer of inventory's store state events.
const storeStatesConsumer = "fulfilment-store-states"

// subjectStoreStateChanged is inventory's StoreStateChanged subject.
var subjectStoreStateChanged = streams.EventSubject("inventory", "store", "state_changed")

// closureBatch is how many orders one statement of a closure's cancelling takes.
const closureBatch = 64

// closureWatch is how long after a closure with cancellation the timer loop looks for orders
// confirmed at the store late: the longest a racing reserve's order can stay PENDING, and a
// minute more.
func (s *Service) closureWatch() time.Duration {
	return s.cfg.PendingGiveUp + s.lateReserve() + time.Minute
}

// closure is a store's cancellation request, as store_closures keeps it.
type closure struct {
	storeID string
	reason  string
	actor   *commonv1.Actor
	at      time.Time
}

func (s *Service) consumeStoreStates(ctx context.Context, js jetstream.JetStream) error {
	return inbox.Run(ctx, s.db, js, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        storeStatesConsumer,
		FilterSubjects: []string{subjectStoreStateChanged},
		Logger:         s.log,
	}, s.handleStoreState)
}

// handleStoreState records a store's state as the event gives it, unless fulfilment has heard
// of a later version already, and when the closing asks for it cancels the store's open
// orders. A store stays cancelling while it stays closed (a new reason changes nothing), and
// stops when it opens or pauses.
func (s *Service) handleStoreState(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev inventoryv1.StoreStateChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	if ev.GetStoreId() == "" {
		return inbox.Permanent(errors.New("store state event without a store id"))
	}
	// The row first, so that two copies handling two events of one store take turns on its lock.
	if _, err := tx.Exec(ctx, `INSERT INTO store_closures (store_id) VALUES ($1) ON CONFLICT DO NOTHING`, ev.GetStoreId()); err != nil {
		return fmt.Errorf("store %s closure row: %w", ev.GetStoreId(), err)
	}
	var (
		version                  int64
		wasClosed, wasCancelling bool
	)
	if err := tx.QueryRow(ctx, `SELECT version, closed, cancel_orders FROM store_closures WHERE store_id = $1 FOR UPDATE`,
		ev.GetStoreId()).Scan(&version, &wasClosed, &wasCancelling); err != nil {
		return fmt.Errorf("store %s closure row: %w", ev.GetStoreId(), err)
	}
	if ev.GetVersion() <= version {
		return nil // older than what this store's row says: a late or repeated event
	}
	closed := ev.GetState() == inventoryv1.StoreState_STORE_STATE_CLOSED
	now := s.now()
	c := closure{storeID: ev.GetStoreId(), reason: closureReason(ev.GetReason()), actor: ev.GetActor(), at: now}
	if c.actor.GetKind() == commonv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
		c.actor = systemActor("inventory")
	}
	var err error
	switch {
	case closed && ev.GetCancelOpenOrders():
		_, err = tx.Exec(ctx, `UPDATE store_closures SET version = $2, closed = true, cancel_orders = true,
			cancel_reason = $3, cancel_actor_kind = $4, cancel_actor_id = $5, cancel_at = $6 WHERE store_id = $1`,
			c.storeID, ev.GetVersion(), c.reason, int16(c.actor.GetKind()), c.actor.GetId(), now)
	default:
		_, err = tx.Exec(ctx, `UPDATE store_closures SET version = $2, closed = $3, cancel_orders = $4 WHERE store_id = $1`,
			c.storeID, ev.GetVersion(), closed, closed && wasClosed && wasCancelling)
	}
	if err != nil {
		return fmt.Errorf("store %s closure row: %w", c.storeID, err)
	}
	if !closed || !ev.GetCancelOpenOrders() {
		return nil
	}
	var all []cancelled
	for {
		// Every open order, however old, waiting for those another transaction holds.
		done, err := s.cancelAtStore(ctx, tx, c, time.Time{}, true, now)
		if err != nil {
			return err
		}
		all = append(all, done...)
		if len(done) == 0 {
			break // not "fewer than a batch": a row waited for may have left the state filter
		}
	}
	if len(all) > 0 {
		s.log.Info("store closed: its open orders cancelled", "store_id", c.storeID, "orders", len(all))
	}
	inbox.OnCommit(ctx, func() { s.afterCancels(all) })
	return nil
}

// closureReason is what a cancelled order's shopper is told.
func closureReason(storeReason string) string {
	if storeReason == "" {
		return "the store has closed"
	}
	return "the store has closed: " + storeReason
}

// cancelled is one order cancelled by a closing, for afterCommit.
type cancelled struct {
	o       *order
	changes []change
	effects bool
}

// cancelAtStore cancels, inside tx, up to closureBatch orders open at c's store placed at or
// after since: the first by id, waiting for those another transaction holds, or (!wait) those
// no other transaction holds. Orders are locked in id order, as combined changes lock them, so
// the two cannot deadlock.
func (s *Service) cancelAtStore(ctx context.Context, tx pgx.Tx, c closure, since time.Time, wait bool, now time.Time) ([]cancelled, error) {
	lock := "FOR UPDATE"
	if !wait {
		lock = "FOR UPDATE SKIP LOCKED"
	}
	orders, err := queryOrders(ctx, tx, `SELECT `+orderColumns+` FROM orders
		WHERE store_id = $1 AND create_time >= $2 AND state IN (2, 3, 4)
		ORDER BY id LIMIT $3 `+lock, c.storeID, since, closureBatch)
	if err != nil {
		return nil, fmt.Errorf("open orders at closed store %s: %w", c.storeID, err)
	}
	var (
		w    writeBatch
		done = make([]cancelled, 0, len(orders))
	)
	for _, o := range orders {
		ch, err := o.step(domain.StaffCancel, c.actor, c.reason, "", now)
		if err != nil {
			return nil, fmt.Errorf("cancel order %s at closed store %s: %w", o.ID, c.storeID, err)
		}
		o.Reason = c.reason
		effects, err := s.write(ctx, &w, o, []change{ch}, false, now)
		if err != nil {
			return nil, err
		}
		done = append(done, cancelled{o, []change{ch}, effects})
	}
	if len(orders) == 0 {
		return nil, nil
	}
	if err := w.sendIn(ctx, tx); err != nil {
		return nil, fmt.Errorf("cancel orders at closed store %s: %w", c.storeID, err)
	}
	return done, nil
}

func (s *Service) afterCancels(done []cancelled) {
	for _, d := range done {
		s.afterCommit(d.o, d.changes, d.effects)
	}
}

// closedStoresRound cancels the orders confirmed late at stores closed with cancellation in the
// last closureWatch (see the top of this file): one transaction per store, up to closureBatch
// orders each. It returns how many it cancelled.
func (s *Service) closedStoresRound(ctx context.Context) (int, error) {
	now := s.now()
	rows, err := s.db.Query(ctx, `SELECT store_id, cancel_reason, cancel_actor_kind, cancel_actor_id, cancel_at
		FROM store_closures WHERE cancel_orders AND cancel_at > $1`, now.Add(-s.closureWatch()))
	if err != nil {
		return 0, fmt.Errorf("stores closed with cancellation: %w", err)
	}
	closures, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (closure, error) {
		var (
			c    closure
			kind int16
			id   string
		)
		err := r.Scan(&c.storeID, &c.reason, &kind, &id, &c.at)
		c.actor = &commonv1.Actor{Kind: commonv1.ActorKind(kind), Id: id}
		return c, err
	})
	if err != nil {
		return 0, fmt.Errorf("stores closed with cancellation: %w", err)
	}
	n := 0
	for _, c := range closures {
		var done []cancelled
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			// Re-checked under the row's lock: a reopening handled since ends the watch.
			var still bool
			if err := tx.QueryRow(ctx, `SELECT cancel_orders FROM store_closures WHERE store_id = $1 FOR SHARE`, c.storeID).Scan(&still); err != nil {
				return fmt.Errorf("store %s closure row: %w", c.storeID, err)
			}
			if !still {
				return nil
			}
			var err error
			done, err = s.cancelAtStore(ctx, tx, c, c.at.Add(-s.closureWatch()), false, now)
			return err
		})
		if err != nil {
			return n, err
		}
		if len(done) > 0 {
			s.log.Info("order confirmed at a store closed with cancellation: cancelled", "store_id", c.storeID, "orders", len(done))
		}
		s.afterCancels(done)
		n += len(done)
	}
	return n, nil
}
