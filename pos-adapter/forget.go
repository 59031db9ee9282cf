package posadapter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/personal"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// An erasure of a shopper's personal data (fulfilment's ForgetCustomer) reaches the adapter as
// CustomerForgotten events naming the shopper's orders: the copies of those orders it keeps
// (in its tickets, which webhook deliveries are sent from, in escalation timers, and in ticket
// events its outbox has not relayed yet) lose the shopper's customer id, pickup name and note.

// ForgottenConsumer is the adapter's durable consumer of fulfilment's customer-forgotten events.
const ForgottenConsumer = "pos-adapter-forgotten-customers"

// ticketClockSlack is how much earlier than its order's creation a ticket's time may read:
// the two are stamped by different processes' clocks.
const ticketClockSlack = time.Hour

func (a *Adapter) consumeForgotten(ctx context.Context) error {
	return inbox.Run(ctx, a.db, a.cfg.JS, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        ForgottenConsumer,
		FilterSubjects: []string{personal.ForgottenSubject},
		Logger:         a.log,
	}, a.handleForgotten)
}

// forgetTicketsSQL reads, locked, one order's tickets: through tickets_store_time, from a
// little before the order was placed (no ticket of it is older).
const forgetTicketsSQL = `SELECT seq, payload FROM tickets
	WHERE store_id = $1 AND create_time >= $2 AND order_id = $3 FOR UPDATE`

// handleForgotten clears the personal fields of the event's orders from every copy here.
func (a *Adapter) handleForgotten(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev fulfilmentv1.CustomerForgotten
	if err := inbox.Decode(msg, &ev); err != nil {
		return inbox.Permanent(err)
	}
	orderIDs := make([]string, 0, len(ev.GetOrders()))
	var stores []string
	for _, o := range ev.GetOrders() {
		orderIDs = append(orderIDs, o.GetOrderId())
		if o.GetStoreId() != "" {
			stores = append(stores, o.GetStoreId())
		}
	}
	if len(orderIDs) == 0 {
		return nil
	}
	// In the lock order of raising tickets (raiseTickets): the orders' escalation timers, then
	// their stores' feeds. Holding the feeds, no ticket of these stores is being raised unseen:
	// one raised before is committed and rewritten below, one raised after finds the orders in
	// forgotten_orders (an event of theirs from before the erasure, read after it, since the
	// order events come through another consumer) and is written without the personal fields.
	timers, err := forgetEscalationTimers(ctx, tx, orderIDs)
	if err != nil {
		return err
	}
	if len(stores) > 0 {
		if _, err := tx.Exec(ctx, ensureFeedsSQL, stores); err != nil {
			return fmt.Errorf("make the store feeds of forgotten orders: %w", err)
		}
		if _, err := tx.Exec(ctx, lockFeedsSQL, stores); err != nil {
			return fmt.Errorf("lock the store feeds of forgotten orders: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO forgotten_orders (order_id) SELECT DISTINCT unnest($1::text[]) ORDER BY 1
		ON CONFLICT (order_id) DO UPDATE SET forget_time = now()`, orderIDs); err != nil {
		return fmt.Errorf("record forgotten orders: %w", err)
	}
	tickets := 0
	for _, o := range ev.GetOrders() {
		if o.GetStoreId() == "" {
			continue // never reached a store: no ticket
		}
		n, err := forgetTickets(ctx, tx, o)
		if err != nil {
			return err
		}
		tickets += n
	}
	events, err := forgetOutbox(ctx, tx, orderIDs)
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "a forgotten customer's orders cleared from tickets", "orders", len(orderIDs),
		"tickets", tickets, "escalation_timers", timers, "outbox_events", events)
	return nil
}

// forgetTickets rewrites the tickets of one order without the shopper's personal fields and
// returns how many it changed.
func forgetTickets(ctx context.Context, tx pgx.Tx, o *fulfilmentv1.ForgottenOrder) (int, error) {
	return personal.Rewrite[int64](ctx, tx, "ticket of order "+o.GetOrderId(),
		forgetTicketsSQL, []any{o.GetStoreId(), o.GetCreateTime().AsTime().Add(-ticketClockSlack), o.GetOrderId()},
		`UPDATE tickets SET payload = $2 WHERE seq = $1 AND store_id = $3`, []any{o.GetStoreId()},
		func() *posv1.Ticket { return new(posv1.Ticket) }, redactTicket)
}

// forgetEscalationTimers rewrites the orders kept with the escalation timers of orderIDs
// (cleared timers keep theirs a while) and returns how many it changed.
func forgetEscalationTimers(ctx context.Context, tx pgx.Tx, orderIDs []string) (int, error) {
	return personal.Rewrite[string](ctx, tx, "escalation timer of order",
		`SELECT order_id, order_payload FROM escalation_timers WHERE order_id = ANY ($1::text[]) FOR UPDATE`, []any{orderIDs},
		`UPDATE escalation_timers SET order_payload = $2 WHERE order_id = $1`, nil,
		func() *fulfilmentv1.Order { return new(fulfilmentv1.Order) }, personal.RedactOrder)
}

// forgetOutbox rewrites the ticket events of orderIDs the relay has not published yet and
// returns how many it changed. The outbox is short (its rows go once relayed): read whole, once
// a relay round under way has ended (outbox.WaitForRelay).
func forgetOutbox(ctx context.Context, tx pgx.Tx, orderIDs []string) (int, error) {
	if err := outbox.WaitForRelay(ctx, tx); err != nil {
		return 0, err
	}
	forgotten := make(map[string]bool, len(orderIDs))
	for _, id := range orderIDs {
		forgotten[id] = true
	}
	return personal.Rewrite[int64](ctx, tx, "outbox ticket event",
		`SELECT seq, payload FROM outbox WHERE event_type = $1 ORDER BY seq FOR UPDATE`,
		[]any{string((&posv1.TicketRaised{}).ProtoReflect().Descriptor().FullName())},
		`UPDATE outbox SET payload = $2 WHERE seq = $1`, nil,
		func() *posv1.TicketRaised { return new(posv1.TicketRaised) },
		func(ev *posv1.TicketRaised) bool {
			return forgotten[ev.GetTicket().GetOrderId()] && redactTicket(ev.GetTicket())
		})
}

// redactTicket clears the shopper's personal fields from the ticket's order and from its line
// of text, which ticketMessage wrote from them (the pickup name, the note), and says whether it
// changed anything.
func redactTicket(t *posv1.Ticket) bool {
	o := t.GetOrder()
	name, note := o.GetPickupName(), o.GetCustomerNote()
	changed := personal.RedactOrder(o)
	msg := t.GetMessage()
	if note != "" {
		msg = strings.ReplaceAll(msg, "; note: "+note, "")
		msg = strings.ReplaceAll(msg, note, "")
	}
	if name != "" {
		msg = strings.ReplaceAll(msg, name, "order "+t.GetOrderId())
	}
	if msg != t.GetMessage() {
		t.Message = msg
		changed = true
	}
	return changed
}
