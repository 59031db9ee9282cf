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
// is redelivered). Handling it cancels, in the same transaction, every order placed at the
// store up to the closing and still open, as staff cancelling each would: holds released, the
// shopper told, a cancellation ticket to the store's terminals.
//
// The request is bounded by the closing's time, not by the store's state as fulfilment last
// heard it: events arrive late, out of order (a failed one is retried after those behind it;
// two copies share the consumer) or again (a new consumer reads the stream from its start), and
// an order placed after a reopening must never be cancelled by the closing before it, while the
// orders a closing was about must be cancelled even if the store has reopened since.
//
// An order can still be confirmed at the store after the handling: a reserve that read the store
// as open commits after the closing (inventory checks a store's state without locking its row,
// so that reserves do not queue on it), and its order is confirmed once the reserve answers, or
// by the recovery loop up to PendingGiveUp later. Such an order was placed before the closing,
// so for closingWatch after the handling the timer loop also cancels the orders placed shortly
// before the closing that are open now (closedStoresRound).

// storeStatesConsumer is the durable consumer of inventory's store state events.
const storeStatesConsumer = "fulfilment-store-states"

// subjectStoreStateChanged is inventory's StoreStateChanged subject.
var subjectStoreStateChanged = streams.EventSubject("inventory", "store", "state_changed")

// closingSlack is how much later than the closing's time (inventory's database clock) an order
// that raced it may have been placed (fulfilment's clock): the closing's own transaction, and
// the two clocks' difference where the services have databases of their own.
const closingSlack = 10 * time.Second

// closingWatch is how long after a closing is handled the timer loop looks for orders
// confirmed there late: the longest a racing reserve's order can stay PENDING, and a minute.
func (s *Service) closingWatch() time.Duration {
	return s.cfg.PendingGiveUp + s.lateReserve() + time.Minute
}

// closing is a store's closing with cancellation, as store_closings keeps it.
type closing struct {
	storeID   string
	closedAt  time.Time
	reason    string
	actor     *commonv1.Actor
	handledAt time.Time
}

func (s *Service) consumeStoreStates(ctx context.Context, js jetstream.JetStream) error {
	return inbox.Run(ctx, s.db, js, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        storeStatesConsumer,
		FilterSubjects: []string{subjectStoreStateChanged},
		Logger:         s.log,
	}, s.handleStoreState)
}

// handleStoreState takes on a closing with cancellation; every other state event changes
// nothing here.
func (s *Service) handleStoreState(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev inventoryv1.StoreStateChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	if ev.GetState() != inventoryv1.StoreState_STORE_STATE_CLOSED || !ev.GetCancelOpenOrders() {
		return nil
	}
	if ev.GetStoreId() == "" {
		return inbox.Permanent(errors.New("store closing without a store id"))
	}
	now := s.now()
	c := closing{storeID: ev.GetStoreId(), reason: closingReason(ev.GetReason()), actor: ev.GetActor(), handledAt: now}
	switch md, err := msg.Metadata(); {
	case ev.GetChangeTime().IsValid():
		c.closedAt = ev.GetChangeTime().AsTime()
	case err == nil:
		c.closedAt = md.Timestamp // published after the closing committed: later than it, never earlier
	default:
		c.closedAt = now
	}
	c.closedAt = c.closedAt.UTC().Truncate(time.Microsecond)
	if c.actor.GetKind() == commonv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
		c.actor = systemActor("inventory")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO store_closings (store_id, closed_at, reason, actor_kind, actor_id, handled_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		c.storeID, c.closedAt, c.reason, int16(c.actor.GetKind()), c.actor.GetId(), now); err != nil {
		return fmt.Errorf("record the closing of store %s: %w", c.storeID, err)
	}
	done, err := s.cancelAtStore(ctx, tx, c, time.Time{}, true, now)
	if err != nil {
		return err
	}
	if len(done) > 0 {
		s.log.Info("store closed: its open orders cancelled", "store_id", c.storeID, "orders", len(done))
	}
	inbox.OnCommit(ctx, func() { s.afterCancels(done) })
	return nil
}

// closingReason is what a cancelled order's shopper is told.
func closingReason(storeReason string) string {
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

// cancelAtStore cancels, inside tx, the orders open at c's store that were placed from since up
// to the closing (and closingSlack): all of them, waiting for those another transaction holds
// (wait), or those no other transaction holds. One statement locks them all, in id order as
// combined changes and refused extensions lock orders, so none of them can deadlock with it.
// Without wait it never waits, so it cannot deadlock either. The timer loop's narrow range of
// placement times reads a few index entries (orders_by_store); the handler's, all of the
// store's past, costs a read of it once per closing (no index of open orders by store, which
// every order's changes would pay for): 30 ms for a store with 4,000 orders, 0.5 s for one
// with 300,000, among 2.3 million.
func (s *Service) cancelAtStore(ctx context.Context, tx pgx.Tx, c closing, since time.Time, wait bool, now time.Time) ([]cancelled, error) {
	lock := "FOR UPDATE"
	if !wait {
		lock = "FOR UPDATE SKIP LOCKED"
	}
	orders, err := queryOrders(ctx, tx, `SELECT `+orderColumns+` FROM orders
		WHERE store_id = $1 AND create_time >= $2 AND create_time <= $3 AND state IN (2, 3, 4)
		ORDER BY id `+lock, c.storeID, since, c.closedAt.Add(closingSlack))
	if err != nil {
		return nil, fmt.Errorf("open orders at closed store %s: %w", c.storeID, err)
	}
	if len(orders) == 0 {
		return nil, nil
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

// closedStoresRound cancels the orders confirmed late at stores closed with cancellation (see
// the top of this file): for each closing handled in the last closingWatch, the orders placed
// in the closingWatch before it and open now, one transaction per closing. Closings past their
// watch are forgotten. It returns how many orders it cancelled.
func (s *Service) closedStoresRound(ctx context.Context) (int, error) {
	now := s.now()
	watch := s.closingWatch()
	rows, err := s.db.Query(ctx, `SELECT store_id, closed_at, reason, actor_kind, actor_id, handled_at FROM store_closings`)
	if err != nil {
		return 0, fmt.Errorf("store closings: %w", err)
	}
	closings, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (closing, error) {
		var (
			c    closing
			kind int16
			id   string
		)
		err := r.Scan(&c.storeID, &c.closedAt, &c.reason, &kind, &id, &c.handledAt)
		c.actor = &commonv1.Actor{Kind: commonv1.ActorKind(kind), Id: id}
		return c, err
	})
	if err != nil {
		return 0, fmt.Errorf("store closings: %w", err)
	}
	var (
		n    int
		errs []error
		over bool
	)
	for _, c := range closings {
		if !c.handledAt.After(now.Add(-watch)) {
			over = true
			continue
		}
		var done []cancelled
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			var err error
			done, err = s.cancelAtStore(ctx, tx, c, c.closedAt.Add(-watch), false, now)
			return err
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(done) > 0 {
			s.log.Info("order confirmed late at a store closed with cancellation: cancelled", "store_id", c.storeID, "orders", len(done))
		}
		s.afterCancels(done)
		n += len(done)
	}
	if over {
		if _, err := s.db.Exec(ctx, `DELETE FROM store_closings WHERE handled_at <= $1`, now.Add(-watch)); err != nil {
			errs = append(errs, fmt.Errorf("forget store closings: %w", err))
		}
	}
	return n, errors.Join(errs...)
}
