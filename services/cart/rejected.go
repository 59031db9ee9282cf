package cart

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// A checkout answered PENDING (fulfilment could not reach inventory in time) marks its cart
// checked out as that order, which fulfilment drives on later. When it ends REJECTED (the stock
// gone meanwhile), the cart opens again, as it stays open after a checkout rejected at once:
// the shopper changes the short line and checks out again instead of building the cart anew.
// Fulfilment's rejected events reach the cart through the inbox, once each.

// rejectedConsumer is the cart's durable consumer of fulfilment's rejected orders.
const rejectedConsumer = "cart-rejected-orders"

// consumeRejected opens the carts of orders rejected after their checkout, until ctx ends.
func (s *Service) consumeRejected(ctx context.Context) error {
	err := inbox.Run(ctx, s.db, s.js, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        rejectedConsumer,
		FilterSubjects: []string{streams.EventSubject("fulfilment", "order", "rejected")},
		Logger:         s.log,
	}, s.handleRejected)
	if ctx.Err() != nil {
		return nil // stopped, perhaps while it started
	}
	return err
}

// reopenRejectedSQL opens a cart checked out as the order given. A cart checked out as
// another order, or open again, is left as it is.
const reopenRejectedSQL = `UPDATE carts SET state = $3, order_id = NULL, checkout_until = NULL,
	version = version + 1, update_time = now()
	WHERE id = $1 AND order_id = $2 AND state = $4`

// lockCartSQL reads, and locks, what the rejected handler decides by: the cart's state, the
// order it is checked out as, whether a checkout's lease runs on it, whether one lapsed, and
// the lease's key and customer. Read apart, a mark committing between two reads would be seen
// by neither (open at the first, checked out at the second), and the event dropped.
const lockCartSQL = `SELECT state, coalesce(order_id, ''), coalesce(checkout_until > now(), false),
	coalesce(checkout_until <= now(), false), coalesce(checkout_key, ''), customer_id
	FROM carts WHERE id = $1 FOR UPDATE`

func (s *Service) handleRejected(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev fulfilmentv1.OrderChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	o := ev.GetOrder()
	if o.GetCartId() == "" {
		return nil // placed without a cart: nothing to open
	}
	var (
		state, orderID, key, customer string
		leased, lapsed                bool
	)
	err := tx.QueryRow(ctx, lockCartSQL, o.GetCartId()).Scan(&state, &orderID, &leased, &lapsed, &key, &customer)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // deleted (abandoned): nothing to open
	case err != nil:
		return fmt.Errorf("read cart %s of rejected order %s: %w", o.GetCartId(), o.GetId(), err)
	case state == stateCheckedOut && orderID == o.GetId():
		_, err := s.reopenRejected(ctx, tx, o.GetCartId(), o.GetId())
		return err
	case state == stateOpen && leased:
		// While a checkout's lease runs on the cart, the order may be that checkout's, answered
		// PENDING and rejected before the checkout has recorded it on the cart: dropped now, the
		// event would be lost, and the mark to come would leave the cart checked out as a
		// REJECTED order for ever. So it is heard again later (the inbox's backoff), once the
		// lease has ended: marked as this order, the cart then opens; opened or marked as
		// another, it is left alone.
		return fmt.Errorf("cart %s of rejected order %s is being checked out: %w", o.GetCartId(), o.GetId(), errCheckoutUnderWay)
	case state == stateOpen && lapsed && orderkey.OrderID(customer, key) == o.GetId():
		// A lease that lapsed is settled by asking fulfilment (settle), which opens the cart of a
		// rejected order. But a settle that heard PENDING before this rejection would mark the
		// cart checked out as it after this event, and nothing would open it again: the lease
		// ends here instead, so that mark finds none.
		return s.endRejectedLease(ctx, tx, o.GetCartId(), key, o.GetId())
	}
	return nil // open, or checked out as another order: left as it is
}

// errCheckoutUnderWay asks the inbox to deliver a rejected order's event again later.
var errCheckoutUnderWay = errors.New("the checkout has not recorded its order yet; hear the event again later")

// endRejectedLease ends the lapsed lease of key on cartID, whose order orderID was rejected.
func (s *Service) endRejectedLease(ctx context.Context, tx pgx.Tx, cartID, key, orderID string) error {
	tag, err := tx.Exec(ctx, endLeaseSQL, cartID, key, stateOpen)
	if err != nil {
		return fmt.Errorf("end the lapsed lease on cart %s of rejected order %s: %w", cartID, orderID, err)
	}
	if tag.RowsAffected() > 0 {
		inbox.OnCommit(ctx, func() { s.rows.drop(cartID) })
		s.log.InfoContext(ctx, "order rejected after its checkout lapsed: the cart's lease is ended", "cart_id", cartID, "order_id", orderID)
	}
	return nil
}

// reopenRejected opens cartID if it is checked out as orderID, rejected, and says whether it
// did.
func (s *Service) reopenRejected(ctx context.Context, tx pgx.Tx, cartID, orderID string) (bool, error) {
	tag, err := tx.Exec(ctx, reopenRejectedSQL, cartID, orderID, stateOpen, stateCheckedOut)
	if err != nil {
		return false, fmt.Errorf("open cart %s of rejected order %s: %w", cartID, orderID, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	inbox.OnCommit(ctx, func() { s.rows.drop(cartID) })
	s.log.InfoContext(ctx, "order rejected after its checkout: its cart is open again", "cart_id", cartID, "order_id", orderID)
	return true, nil
}
