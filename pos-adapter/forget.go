package posadapter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/inbox"
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
	tickets := 0
	for _, o := range ev.GetOrders() {
		orderIDs = append(orderIDs, o.GetOrderId())
		if o.GetStoreId() == "" {
			continue // never reached a store: no ticket
		}
		n, err := forgetTickets(ctx, tx, o)
		if err != nil {
			return err
		}
		tickets += n
	}
	if len(orderIDs) == 0 {
		return nil
	}
	timers, err := forgetEscalationTimers(ctx, tx, orderIDs)
	if err != nil {
		return err
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
	rows, err := tx.Query(ctx, forgetTicketsSQL, o.GetStoreId(), o.GetCreateTime().AsTime().Add(-ticketClockSlack), o.GetOrderId())
	if err != nil {
		return 0, fmt.Errorf("read the tickets of order %s: %w", o.GetOrderId(), err)
	}
	redacted := map[int64][]byte{}
	for rows.Next() {
		var (
			seq     int64
			payload []byte
		)
		if err := rows.Scan(&seq, &payload); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read the tickets of order %s: %w", o.GetOrderId(), err)
		}
		var t posv1.Ticket
		if err := proto.Unmarshal(payload, &t); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode ticket %d of order %s: %w", seq, o.GetOrderId(), err)
		}
		if !redactTicket(&t) {
			continue
		}
		if redacted[seq], err = proto.Marshal(&t); err != nil {
			rows.Close()
			return 0, fmt.Errorf("encode ticket %d of order %s: %w", seq, o.GetOrderId(), err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the tickets of order %s: %w", o.GetOrderId(), err)
	}
	for seq, payload := range redacted {
		if _, err := tx.Exec(ctx, `UPDATE tickets SET payload = $3 WHERE store_id = $1 AND seq = $2`, o.GetStoreId(), seq, payload); err != nil {
			return 0, fmt.Errorf("rewrite ticket %d of order %s: %w", seq, o.GetOrderId(), err)
		}
	}
	return len(redacted), nil
}

// forgetEscalationTimers rewrites the orders kept with the escalation timers of orderIDs
// (cleared timers keep theirs a while) and returns how many it changed.
func forgetEscalationTimers(ctx context.Context, tx pgx.Tx, orderIDs []string) (int, error) {
	rows, err := tx.Query(ctx, `SELECT order_id, order_payload FROM escalation_timers WHERE order_id = ANY ($1::text[]) FOR UPDATE`, orderIDs)
	if err != nil {
		return 0, fmt.Errorf("read escalation timers: %w", err)
	}
	redacted := map[string][]byte{}
	for rows.Next() {
		var (
			id      string
			payload []byte
		)
		if err := rows.Scan(&id, &payload); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read escalation timers: %w", err)
		}
		var o fulfilmentv1.Order
		if err := proto.Unmarshal(payload, &o); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode the escalation timer of order %s: %w", id, err)
		}
		if !personal.RedactOrder(&o) {
			continue
		}
		if redacted[id], err = proto.Marshal(&o); err != nil {
			rows.Close()
			return 0, fmt.Errorf("encode the escalation timer of order %s: %w", id, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read escalation timers: %w", err)
	}
	for id, payload := range redacted {
		if _, err := tx.Exec(ctx, `UPDATE escalation_timers SET order_payload = $2 WHERE order_id = $1`, id, payload); err != nil {
			return 0, fmt.Errorf("rewrite the escalation timer of order %s: %w", id, err)
		}
	}
	return len(redacted), nil
}

// forgetOutbox rewrites the ticket events of orderIDs the relay has not published yet and
// returns how many it changed. The outbox is short (its rows go once relayed): read whole.
func forgetOutbox(ctx context.Context, tx pgx.Tx, orderIDs []string) (int, error) {
	forgotten := make(map[string]bool, len(orderIDs))
	for _, id := range orderIDs {
		forgotten[id] = true
	}
	rows, err := tx.Query(ctx, `SELECT seq, payload FROM outbox WHERE event_type = $1 FOR UPDATE`,
		string((&posv1.TicketRaised{}).ProtoReflect().Descriptor().FullName()))
	if err != nil {
		return 0, fmt.Errorf("read the outbox's tickets: %w", err)
	}
	redacted := map[int64][]byte{}
	for rows.Next() {
		var (
			seq     int64
			payload []byte
		)
		if err := rows.Scan(&seq, &payload); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read the outbox's tickets: %w", err)
		}
		var ev posv1.TicketRaised
		if err := proto.Unmarshal(payload, &ev); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode outbox event %d: %w", seq, err)
		}
		if !forgotten[ev.GetTicket().GetOrderId()] || !redactTicket(ev.GetTicket()) {
			continue
		}
		if redacted[seq], err = proto.Marshal(&ev); err != nil {
			rows.Close()
			return 0, fmt.Errorf("encode outbox event %d: %w", seq, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the outbox's tickets: %w", err)
	}
	for seq, payload := range redacted {
		if _, err := tx.Exec(ctx, `UPDATE outbox SET payload = $2 WHERE seq = $1`, seq, payload); err != nil {
			return 0, fmt.Errorf("rewrite outbox event %d: %w", seq, err)
		}
	}
	return len(redacted), nil
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
