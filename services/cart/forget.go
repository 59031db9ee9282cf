package cart

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/personal"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// An erasure of a shopper's personal data (fulfilment's ForgetCustomer) reaches the cart as a
// CustomerForgotten event: the shopper's carts, open or checked out, are deleted. A cart
// carries their customer id only (a checkout's name, email and note go to fulfilment and are
// not kept here); its order keeps the lines.

// forgottenConsumer is the cart's durable consumer of fulfilment's customer-forgotten events.
const forgottenConsumer = "cart-forgotten-customers"

// consumeForgotten deletes the carts of forgotten customers, until ctx ends.
func (s *Service) consumeForgotten(ctx context.Context) error {
	err := inbox.Run(ctx, s.db, s.js, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        forgottenConsumer,
		FilterSubjects: []string{personal.ForgottenSubject},
		Logger:         s.log,
	}, s.handleForgotten)
	if ctx.Err() != nil {
		return nil // stopped, perhaps while it started
	}
	return err
}

// handleForgotten deletes the carts of the event's customer, through carts_by_customer (cart's
// 00008), but for a cart whose checkout is under way (its lease live): deleting it would fail a
// checkout whose order fulfilment may already have written, CONFIRMED and holding stock (an
// erasure finds no open order before the order is written). Such a cart is kept and logged;
// its order then carries the shopper's data as any order placed during an erasure does, until
// they are erased again or the retention sweeps reach it.
func (s *Service) handleForgotten(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev fulfilmentv1.CustomerForgotten
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	if ev.GetCustomerId() == "" {
		return inbox.Permanent(fmt.Errorf("customer-forgotten event without a customer id"))
	}
	rows, err := tx.Query(ctx, `DELETE FROM carts WHERE customer_id = $1
		AND (state = 'checked_out' OR checkout_until IS NULL OR checkout_until <= now()) RETURNING id`, ev.GetCustomerId())
	if err != nil {
		return fmt.Errorf("delete a forgotten customer's carts: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("delete a forgotten customer's carts: %w", err)
	}
	var kept int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM carts WHERE customer_id = $1`, ev.GetCustomerId()).Scan(&kept); err != nil {
		return fmt.Errorf("count a forgotten customer's carts being checked out: %w", err)
	}
	if len(ids) > 0 {
		inbox.OnCommit(ctx, func() {
			for _, id := range ids {
				s.rows.drop(id)
			}
		})
	}
	if len(ids) > 0 || kept > 0 {
		s.log.InfoContext(ctx, "a forgotten customer's carts deleted", "carts", len(ids), "kept_checking_out", kept)
	}
	if kept > 0 {
		s.log.WarnContext(ctx, "a forgotten customer's carts being checked out were kept, so as not to fail their checkouts; erase the customer again once those orders have ended",
			"carts", kept)
	}
	return nil
}
