package cart

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
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

func (s *Service) handleRejected(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev fulfilmentv1.OrderChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	o := ev.GetOrder()
	if o.GetCartId() == "" {
		return nil // placed without a cart: nothing to open
	}
	tag, err := tx.Exec(ctx, reopenRejectedSQL, o.GetCartId(), o.GetId(), stateOpen, stateCheckedOut)
	if err != nil {
		return fmt.Errorf("open cart %s of rejected order %s: %w", o.GetCartId(), o.GetId(), err)
	}
	if tag.RowsAffected() > 0 {
		inbox.OnCommit(ctx, func() { s.rows.drop(o.GetCartId()) })
		s.log.InfoContext(ctx, "order rejected after its checkout: its cart is open again", "cart_id", o.GetCartId(), "order_id", o.GetId())
	}
	return nil
}
