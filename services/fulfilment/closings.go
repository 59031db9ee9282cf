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
// is redelivered). Handling it cancels, in the same transaction, every order open at the store
// whose holds were placed before the closing, as staff cancelling each would: holds released,
// the shopper told, a cancellation ticket to the store's terminals.
//
// Which orders a closing is about is decided by the store's version, not by clocks or by the
// store's state as fulfilment last heard it: each hold carries the store version its reserve
// read (Hold.store_version, kept on the order as store_version), and the closing covers the
// orders below its own version. Events arrive late, out of order (a failed one is retried
// after those behind it; two copies share the consumer) or again (a new consumer reads the
// stream from its start); whenever one is handled it cancels the same orders, and never one
// whose stock was held after a reopening, which has a later version.
//
// An order the closing covers can be confirmed after the handling: a reserve that committed
// just before the closing (which waits for reserves under way at the store) is answered, and
// its order confirmed, after the closing's event was handled, or the order is confirmed by the
// recovery loop up to PendingGiveUp later; or a checkout whose order was
// never written is retried within its holds' placement deadline, and inventory answers with the
// holds it made before the closing. Such an order was placed at most closingWatch before or
// after the handling, so a loop of its own (closedStoresRound, every SweepInterval) also
// cancels the covered orders placed in that span, for closingMemory (a copy stalled for long
// between its reserve's answer and its commit confirms late), and once more, waiting for locked
// rows, as it forgets the closing.

// storeStatesConsumer is the durable consumer of inventory's store state events.
const storeStatesConsumer = "fulfilment-store-states"

// closingWatch bounds when an order that a closing covers and that is confirmed after its
// handling was placed, before or after the handling: a placement left PENDING (PendingGiveUp) or
// a checkout retried within its holds' placement deadline (PlacementHoldTTL), each with a late
// reserve's time, and a minute (also for the copies' clocks differing).
func (s *Service) closingWatch() time.Duration {
	return max(s.cfg.PendingGiveUp, s.cfg.PlacementHoldTTL) + s.lateReserve() + time.Minute
}

// closingMemory is how long a closing is watched for orders it covers confirmed late.
const closingMemory = 24 * time.Hour

// lastLookLockTimeout bounds the wait of a closing's last look for an order another transaction
// holds: it is tried again the next round rather than holding up the loop.
const lastLookLockTimeout = "2s"

// closing is a store's closing with cancellation, as store_closings keeps it.
type closing struct {
	storeID   string
	version   int64 // the store's version after the closing: it covers the orders below it
	reason    string
	actor     *commonv1.Actor
	handledAt time.Time
}

// consumeInventory consumes inventory's events on subject as durable, one at a time, in order.
func (s *Service) consumeInventory(ctx context.Context, js jetstream.JetStream, durable, subject string, h inbox.Handler) error {
	return inbox.Run(ctx, s.db, js, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        durable,
		FilterSubjects: []string{subject},
		Logger:         s.log,
	}, h)
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
	if ev.GetVersion() <= 0 {
		return inbox.Permanent(fmt.Errorf("closing of store %s without the store's version", ev.GetStoreId()))
	}
	now := s.clock.NowOrRead(ctx, s.db)
	c := closing{storeID: ev.GetStoreId(), version: ev.GetVersion(), reason: closingReason(ev.GetReason()), actor: ev.GetActor(), handledAt: now}
	if c.actor.GetKind() == commonv1.ActorKind_ACTOR_KIND_UNSPECIFIED {
		c.actor = systemActor("inventory")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO store_closings (store_id, version, reason, actor_kind, actor_id, handled_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		c.storeID, c.version, c.reason, int16(c.actor.GetKind()), c.actor.GetId(), now); err != nil {
		return fmt.Errorf("record the closing of store %s: %w", c.storeID, err)
	}
	done, err := s.cancelAtStore(ctx, tx, c, time.Time{}, now.Add(s.closingWatch()), true)
	if err != nil {
		return err
	}
	if len(done) > 0 {
		s.log.Info("store closed: its open orders cancelled", "store_id", c.storeID, "orders", len(done))
	}
	inbox.OnCommit(ctx, func() { s.afterWritten(done) })
	return nil
}

// closingReason is what a cancelled order's shopper is told.
func closingReason(storeReason string) string {
	if storeReason == "" {
		return "the store has closed"
	}
	return "the store has closed: " + storeReason
}

// written is one order changed by a closing or an hours change, for afterCommit.
type written struct {
	o       *order
	changes []change
	effects bool
}

// cancelAtStore cancels, inside tx, the orders open at c's store that c covers (store_version
// below c's) and were placed from since until until: all of them, waiting for those another
// transaction holds (wait), or those no other transaction holds. One statement locks them all, in id order
// as combined changes and refused extensions lock orders, so none of them can deadlock with it;
// without wait it never waits. Both the timer loop's range of placement times and the
// handler's (all of the store's past) read the store's open orders only, through
// orders_open_by_store (fulfilment's 00011), whose predicate the statement's constant states
// match; before that index the handler read every order the store ever had, once per closing.
func (s *Service) cancelAtStore(ctx context.Context, tx pgx.Tx, c closing, since, until time.Time, wait bool) ([]written, error) {
	lock := "FOR UPDATE"
	if !wait {
		lock = "FOR UPDATE SKIP LOCKED"
	}
	orders, err := queryOrders(ctx, tx, `SELECT `+orderColumns+` FROM orders
		WHERE store_id = $1 AND create_time >= $2 AND create_time <= $3 AND state IN (2, 3, 4) AND store_version < $4
		ORDER BY id `+lock, c.storeID, since, until, c.version)
	if err != nil {
		return nil, fmt.Errorf("open orders at closed store %s: %w", c.storeID, err)
	}
	if len(orders) == 0 {
		return nil, nil
	}
	// Their cancellations are written at the database's time once they are locked, not before a
	// wait for them: an action that held one wrote its entry at its own lock's time.
	now, err := s.clock.Read(ctx, tx)
	if err != nil {
		return nil, err
	}
	done, err := s.stepAll(ctx, tx, orders, domain.StaffCancel, c.actor, c.reason, now, func(o *order) bool {
		o.Reason = c.reason
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("cancel orders at closed store %s: %w", c.storeID, err)
	}
	return done, nil
}

// stepAll takes each of orders, locked in tx, through action a by actor (reason for its
// history) where apply says so, having made its changes, and writes them all in tx, together.
func (s *Service) stepAll(ctx context.Context, tx pgx.Tx, orders []*order, a domain.Action, actor *commonv1.Actor, reason string, now time.Time,
	apply func(o *order) bool) ([]written, error) {
	var (
		w    writeBatch
		done []written
	)
	for _, o := range orders {
		if !apply(o) {
			continue
		}
		ch, err := o.step(a, actor, reason, "", now)
		if err != nil {
			return nil, fmt.Errorf("order %s: %w", o.ID, err)
		}
		effects, err := s.write(ctx, &w, o, []change{ch}, false, now)
		if err != nil {
			return nil, err
		}
		done = append(done, written{o, []change{ch}, effects})
	}
	if len(done) == 0 {
		return nil, nil
	}
	if err := w.sendIn(ctx, tx); err != nil {
		return nil, err
	}
	return done, nil
}

func (s *Service) afterWritten(done []written) {
	for _, d := range done {
		s.afterCommit(d.o, d.changes, d.effects)
	}
}

// runClosings runs closedStoresRound every SweepInterval until ctx ends. A loop of its own: a
// closing's last look may wait for a locked order, and no other timer should wait with it.
func (s *Service) runClosings(ctx context.Context) {
	for {
		if _, err := s.closedStoresRound(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("closed stores round failed; trying again", "err", err)
		}
		if !sleep(ctx, s.cfg.SweepInterval) {
			return
		}
	}
}

// closedStoresRound cancels the orders confirmed late at stores closed with cancellation (see
// the top of this file): for each closing taken on, the covered orders placed within
// closingWatch of its handling and open now, one transaction per closing. A closing past
// closingMemory is looked at once more, waiting up to lastLookLockTimeout for orders other
// transactions hold, and forgotten in the same transaction (kept for the next round if the wait
// runs out). It returns how many orders it cancelled.
func (s *Service) closedStoresRound(ctx context.Context) (int, error) {
	now := s.clock.NowOrRead(ctx, s.db)
	watch := s.closingWatch()
	rows, err := s.db.Query(ctx, `SELECT store_id, version, reason, actor_kind, actor_id, handled_at FROM store_closings`)
	if err != nil {
		return 0, fmt.Errorf("store closings: %w", err)
	}
	closings, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (closing, error) {
		var (
			c    closing
			kind int16
			id   string
		)
		err := r.Scan(&c.storeID, &c.version, &c.reason, &kind, &id, &c.handledAt)
		c.actor = &commonv1.Actor{Kind: commonv1.ActorKind(kind), Id: id}
		return c, err
	})
	if err != nil {
		return 0, fmt.Errorf("store closings: %w", err)
	}
	var (
		n    int
		errs []error
	)
	for _, c := range closings {
		over := !c.handledAt.After(now.Add(-closingMemory))
		var done []written
		err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			if over {
				if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lastLookLockTimeout+`'`); err != nil {
					return err
				}
			}
			var err error
			if done, err = s.cancelAtStore(ctx, tx, c, c.handledAt.Add(-watch), c.handledAt.Add(watch), over); err != nil || !over {
				return err
			}
			_, err = tx.Exec(ctx, `DELETE FROM store_closings WHERE store_id = $1 AND version = $2`, c.storeID, c.version)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("store %s closing at version %d: %w", c.storeID, c.version, err))
			continue
		}
		if len(done) > 0 {
			s.log.Info("order confirmed late at a store closed with cancellation: cancelled", "store_id", c.storeID, "orders", len(done))
		}
		s.afterWritten(done)
		n += len(done)
	}
	return n, errors.Join(errs...)
}
