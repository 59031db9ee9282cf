package fulfilment

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/personal"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// An erasure request (ForgetCustomer) clears a shopper's personal data from fulfilment's rows
// and tells the other services to clear theirs; the retention sweep (redact.go) clears the
// contact fields of orders ended long ago. The orders themselves stay: they are the business's
// record.

// forgottenPerEvent bounds the orders one CustomerForgotten event names, so that a shopper
// with thousands of orders stays far below the outbox's 1 MiB per event.
const forgottenPerEvent = 2000

// forgetOrdersSQL clears the personal fields of the orders given. customer_id goes, and with it
// the pair (customer_id, idempotency_key) that made the order one per checkout: the key
// becomes the order's id, unique, so that erased orders of two shoppers who used the same key
// stay apart under orders_one_per_key. writes counts the write (00012), so a copy read before
// it cannot be written over it.
const forgetOrdersSQL = `UPDATE orders SET customer_id = '', idempotency_key = id, pickup_name = '', email = '',
	customer_note = '', placement = NULL, redact_time = coalesce(redact_time, now()), writes = writes + 1
	WHERE id = ANY ($1::text[])`

// forgetHistorySQL clears the shopper's id from their own actions in those orders' histories
// (a cancellation, a check-in): actor_kind 1 is handoff.common.v1.ACTOR_KIND_CUSTOMER.
const forgetHistorySQL = `UPDATE order_history SET actor_id = ''
	WHERE order_id = ANY ($1::text[]) AND actor_kind = 1 AND actor_id <> ''`

// ForgetCustomer erases the personal data of the shopper customerID (see the RPC's comment in
// order.proto): refused while an order of theirs is open, since its pickup needs the name and
// its notifications the email. Repeated, it finds no order of theirs and changes nothing here;
// it still writes the event, so that carts made since go too.
func (s *Service) ForgetCustomer(ctx context.Context, customerID string) (*fulfilmentv1.ForgetCustomerResponse, error) {
	if p := textProblem(customerID, auth.MaxCustomerIDLen, true); p != "" {
		return nil, rpcerr.Invalid("customer_id", p)
	}
	res := &fulfilmentv1.ForgetCustomerResponse{}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		*res = fulfilmentv1.ForgetCustomerResponse{} // a retried transaction counts afresh
		// Locked, so that no change of these orders (a late timer, a staff action) runs beside
		// the erasure; through orders_by_customer.
		rows, err := tx.Query(ctx, `SELECT id, state, store_id, create_time FROM orders
			WHERE customer_id = $1 ORDER BY create_time, id FOR UPDATE`, customerID)
		if err != nil {
			return fmt.Errorf("read the orders of customer %s: %w", customerID, err)
		}
		var (
			ids       []string
			forgotten []*fulfilmentv1.ForgottenOrder
			open      []string
		)
		for rows.Next() {
			var (
				id, store string
				state     int16
				created   time.Time
			)
			if err := rows.Scan(&id, &state, &store, &created); err != nil {
				rows.Close()
				return fmt.Errorf("read the orders of customer %s: %w", customerID, err)
			}
			if !domain.Final(domain.State(state)) {
				open = append(open, id)
				continue
			}
			ids = append(ids, id)
			forgotten = append(forgotten, &fulfilmentv1.ForgottenOrder{OrderId: id, StoreId: store, CreateTime: timestamppb.New(created)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read the orders of customer %s: %w", customerID, err)
		}
		if len(open) > 0 {
			return rpcerr.FailedPreconditionReason("handoff.fulfilment", "CUSTOMER_HAS_OPEN_ORDERS",
				"customer_id: %d order(s) of this customer are still open (%s first); cancel them or wait until they end, then erase", len(open), open[0])
		}
		if len(ids) > 0 {
			tag, err := tx.Exec(ctx, forgetOrdersSQL, ids)
			if err != nil {
				return fmt.Errorf("erase the orders of customer %s: %w", customerID, err)
			}
			res.Orders = int32(tag.RowsAffected())
			if tag, err = tx.Exec(ctx, forgetHistorySQL, ids); err != nil {
				return fmt.Errorf("erase the history of customer %s's orders: %w", customerID, err)
			}
			res.HistoryEntries = int32(tag.RowsAffected())
			n, err := notify.ForgetOrders(ctx, tx, ids)
			if err != nil {
				return err
			}
			res.Notifications = int32(n)
			if n, err = redactOutbox(ctx, tx, ids); err != nil {
				return err
			}
			res.OutboxEvents = int32(n)
		}
		return enqueueForgotten(ctx, tx, customerID, forgotten)
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "customer's personal data erased", "orders", res.Orders, "history_entries", res.HistoryEntries,
		"notifications", res.Notifications, "outbox_events", res.OutboxEvents)
	return res, nil
}

// enqueueForgotten writes the CustomerForgotten events of an erasure: at least one, for the
// cart's sake, however few orders; each with a fresh id, since a repeated erasure must reach
// carts made after the first.
func enqueueForgotten(ctx context.Context, tx pgx.Tx, customerID string, orders []*fulfilmentv1.ForgottenOrder) error {
	for first := true; first || len(orders) > 0; first = false {
		n := min(len(orders), forgottenPerEvent)
		ev := &fulfilmentv1.CustomerForgotten{CustomerId: customerID, Orders: orders[:n]}
		orders = orders[n:]
		if _, err := outbox.Enqueue(ctx, tx, personal.ForgottenSubject, ev); err != nil {
			return fmt.Errorf("write the customer-forgotten event: %w", err)
		}
	}
	return nil
}

// redactOutbox rewrites the order events of orderIDs still waiting in the outbox (the relay
// behind, or NATS away) without the shopper's personal fields, and returns how many. The outbox
// is short (its rows go once relayed), so it is read whole, once a relay round under way has
// ended (outbox.WaitForRelay).
func redactOutbox(ctx context.Context, tx pgx.Tx, orderIDs []string) (int64, error) {
	if err := outbox.WaitForRelay(ctx, tx); err != nil {
		return 0, err
	}
	erased := make(map[string]bool, len(orderIDs))
	for _, id := range orderIDs {
		erased[id] = true
	}
	n, err := personal.Rewrite[int64](ctx, tx, "outbox order event",
		`SELECT seq, payload FROM outbox WHERE event_type = $1 ORDER BY seq FOR UPDATE`,
		[]any{string((&fulfilmentv1.OrderChanged{}).ProtoReflect().Descriptor().FullName())},
		`UPDATE outbox SET payload = $2 WHERE seq = $1`, nil,
		func() *fulfilmentv1.OrderChanged { return new(fulfilmentv1.OrderChanged) },
		func(ev *fulfilmentv1.OrderChanged) bool {
			return erased[ev.GetOrder().GetId()] && personal.RedactOrderChanged(ev)
		})
	return int64(n), err
}
