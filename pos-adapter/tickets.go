package posadapter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// OrderEventsFilter selects all of fulfilment's OrderChanged events.
const OrderEventsFilter = "handoff.fulfilment.order.>"

// OrderEventsFilters are the OrderChanged events the adapter's consumer reads: those that raise
// a ticket (eventTickets) and preparing, which ends a store's own escalation timer (an order
// leaves CONFIRMED only by preparing or by a ticket-raising event: cancelled, and expired after
// ready). ready, collected and rejected raise nothing and touch nothing here, so they are not
// read at all: they were half of a served order's events, each a transaction of the consumer.
var OrderEventsFilters = func() []string {
	f := []string{"handoff.fulfilment.order.preparing"}
	for ev := range eventTickets {
		f = append(f, "handoff.fulfilment.order."+ev)
	}
	slices.Sort(f)
	return f
}()

// eventTickets maps an order event (the last token of handoff.fulfilment.order.<event>) to the
// ticket it raises. Events not listed (preparing, ready, collected, rejected) are staff's own
// doing or never reach a store, and raise none.
var eventTickets = map[string]posv1.TicketKind{
	"confirmed":        posv1.TicketKind_TICKET_KIND_NEW_ORDER,
	"cancelled":        posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED,
	"line_unavailable": posv1.TicketKind_TICKET_KIND_LINE_UNAVAILABLE,
	"checked_in":       posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN,
	"expiring_soon":    posv1.TicketKind_TICKET_KIND_EXPIRY_REMINDER,
	"not_accepted":     posv1.TicketKind_TICKET_KIND_ESCALATION,
	"pickup_locked":    posv1.TicketKind_TICKET_KIND_PICKUP_LOCKED,
	"expired":          posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED,
}

// KindToken is the ticket kind as it appears in subjects and webhook settings: "new_order".
func KindToken(k posv1.TicketKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "TICKET_KIND_"))
}

// ticketID is the stable id of the ticket an event raises. An order's escalation has one id
// whichever timer raised it (fulfilment's or the store's own), so it is raised once.
func ticketID(kind posv1.TicketKind, eventID, orderID string) string {
	if kind == posv1.TicketKind_TICKET_KIND_ESCALATION {
		return outbox.DeterministicID("pos-ticket", "escalation", orderID)
	}
	return outbox.DeterministicID("pos-ticket", eventID)
}

func (a *Adapter) consumeOrderEvents(ctx context.Context) error {
	return inbox.Run(ctx, a.db, a.cfg.JS, inbox.Config{
		Stream:         streams.EventsStream,
		Durable:        ConsumerName,
		FilterSubjects: OrderEventsFilters,
		// A copy that dies holding events hands them to another within seconds: a ticket
		// is late by at most this much after a crash, never lost.
		AckWait:     5 * time.Second,
		Concurrency: a.cfg.ConsumerConcurrency,
		// The events waiting are handled in one transaction (one commit, one flush) instead of
		// one each: under load the consumer keeps up instead of queueing.
		BatchSize: a.cfg.ConsumerBatchSize,
		Logger:    a.log,
	}, a.handleOrderEvent)
}

// handleOrderEvent turns one OrderChanged event into at most one ticket, and keeps the
// per-store escalation timers, in the inbox's transaction.
func (a *Adapter) handleOrderEvent(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	var ev fulfilmentv1.OrderChanged
	if err := inbox.Decode(msg, &ev); err != nil {
		return err
	}
	subject := msg.Subject()
	event := subject[strings.LastIndexByte(subject, '.')+1:]
	o := ev.GetOrder()
	store := o.GetStoreId()
	if store == "" || o.GetId() == "" {
		return nil // rejected before reaching a store: nothing for a terminal
	}
	if err := checkStoreID(store); err != nil {
		return inbox.Permanent(fmt.Errorf("order %s on %s: %w", o.GetId(), subject, err))
	}
	eventID, err := inbox.EventID(msg)
	if err != nil {
		return inbox.Permanent(err)
	}
	// An event older than the replay window would make a ticket no terminal is meant to see
	// any more (a first deployment reading the stream's week of history, a consumer reset).
	if at := occurredAt(msg, ev.GetTransition()); !at.IsZero() && time.Since(at) > a.cfg.ReplayWindow {
		return nil
	}

	if o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		if _, err := tx.Exec(ctx, `DELETE FROM escalation_timers WHERE order_id = $1`, o.GetId()); err != nil {
			return fmt.Errorf("clear escalation timer: %w", err)
		}
	}
	switch event {
	case "confirmed":
		// The store's own escalation timer, if it has one, in one statement (this consumer is
		// serial: a round trip less per order is felt under load).
		confirmed := time.Now()
		if t := ev.GetTransition().GetTime(); t.IsValid() {
			confirmed = t.AsTime()
		}
		payload, err := proto.Marshal(staffView(o))
		if err != nil {
			return inbox.Permanent(err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload)
			SELECT $1, s.store_id, $3::timestamptz + s.escalate_after, s.escalate_after, $4 FROM store_settings s
			WHERE s.store_id = $2 AND s.escalate_after > interval '0'
			ON CONFLICT (order_id) DO NOTHING`,
			o.GetId(), store, confirmed, payload); err != nil {
			return fmt.Errorf("set escalation timer: %w", err)
		}
	case "not_accepted":
		after, err := storeEscalateAfter(ctx, tx, store)
		if err != nil {
			return err
		}
		if after > 0 {
			return nil // the store's own timer escalates it
		}
	}

	kind, ok := eventTickets[event]
	if !ok {
		return nil
	}
	t := &posv1.Ticket{
		TicketId:       ticketID(kind, eventID, o.GetId()),
		StoreId:        store,
		Kind:           kind,
		OrderId:        o.GetId(),
		Order:          staffView(o),
		PickupCodeHint: pickupCodeHint(o),
		Message:        ticketMessage(kind, o, ev.GetTransition()),
		CreateTime:     timestamppb.Now(),
	}
	_, err = a.raiseTicket(ctx, tx, t)
	return err
}

// occurredAt is when the event happened: the outbox's header, else the transition's time.
func occurredAt(msg jetstream.Msg, tr *fulfilmentv1.Transition) time.Time {
	if h := msg.Headers().Get(outbox.OccurredAtHeader); h != "" {
		if t, err := time.Parse(time.RFC3339Nano, h); err == nil {
			return t
		}
	}
	if t := tr.GetTime(); t.IsValid() {
		return t.AsTime()
	}
	return time.Time{}
}

// storeEscalateAfter is the store's own escalation time, 0 when it has none.
func storeEscalateAfter(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, store string) (time.Duration, error) {
	var us int64
	err := q.QueryRow(ctx, `SELECT (extract(epoch FROM escalate_after) * 1000000)::bigint FROM store_settings
		WHERE store_id = $1 AND escalate_after IS NOT NULL`, store).Scan(&us)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read store settings: %w", err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// raiseTicket gives t the store's next sequence number, stores it, enqueues TicketRaised and
// queues the store's webhook delivery, in tx. A ticket id raised before is left alone
// (raised = false) without using up a sequence number.
func (a *Adapter) raiseTicket(ctx context.Context, tx pgx.Tx, t *posv1.Ticket) (raised bool, err error) {
	t.Sequence = 0
	payload, err := proto.Marshal(t)
	if err != nil {
		return false, fmt.Errorf("marshal ticket: %w", err)
	}
	deliveryID, err := newUUID()
	if err != nil {
		return false, err
	}
	var seq, deliveries int64
	err = tx.QueryRow(ctx, `
		WITH next AS (
			INSERT INTO store_feeds AS f (store_id, last_seq)
			SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM tickets WHERE ticket_id = $2)
			ON CONFLICT (store_id) DO UPDATE SET last_seq = f.last_seq + 1
			RETURNING last_seq),
		ins AS (
			INSERT INTO tickets (store_id, seq, ticket_id, kind, order_id, payload, create_time)
			SELECT $1, last_seq, $2, $3, $4, $5, $6 FROM next
			RETURNING seq),
		hook AS (
			INSERT INTO webhook_deliveries (id, store_id, ticket_id)
			SELECT $7, $1, $2 FROM store_webhooks w, ins
			WHERE w.store_id = $1 AND w.enabled AND (cardinality(w.kinds) = 0 OR $3 = ANY (w.kinds))
			ON CONFLICT (store_id, ticket_id) DO NOTHING
			RETURNING 1)
		SELECT seq, (SELECT count(*) FROM hook) FROM ins`,
		t.GetStoreId(), t.GetTicketId(), KindToken(t.GetKind()), t.GetOrderId(), payload, t.GetCreateTime().AsTime(), deliveryID,
	).Scan(&seq, &deliveries)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store ticket: %w", err)
	}
	t.Sequence = uint64(seq)
	if err := outbox.EnqueueWithID(ctx, tx, t.GetTicketId(), streams.TicketSubject(t.GetStoreId(), KindToken(t.GetKind())),
		&posv1.TicketRaised{Ticket: t}); err != nil {
		return false, err
	}
	if deliveries > 0 {
		a.wakeWebhooks()
	}
	return true, nil
}

// staffView is the order as a store sees it: never the pickup code, no history.
func staffView(o *fulfilmentv1.Order) *fulfilmentv1.Order {
	v := proto.Clone(o).(*fulfilmentv1.Order)
	v.PickupCode = ""
	v.History = nil
	return v
}

// pickupCodeHint is the last two digits of the pickup code, when the event carries the code.
// Fulfilment's events carry none today (the code only ever goes to the order's shopper), so
// the hint is empty and staff find the bag by order id or pickup name.
func pickupCodeHint(o *fulfilmentv1.Order) string {
	if c := o.GetPickupCode(); len(c) >= 2 {
		return c[len(c)-2:]
	}
	return ""
}

// ticketMessage is the ticket's one line of text for the terminal's screen.
func ticketMessage(kind posv1.TicketKind, o *fulfilmentv1.Order, tr *fulfilmentv1.Transition) string {
	who := o.GetPickupName()
	if who == "" {
		who = "order " + o.GetId()
	}
	withReason := func(s string) string {
		if r := tr.GetReason(); r != "" {
			return s + ": " + r
		}
		return s
	}
	switch kind {
	case posv1.TicketKind_TICKET_KIND_NEW_ORDER:
		items := int32(0)
		for _, l := range o.GetLines() {
			if l.GetState() != fulfilmentv1.OrderLineState_ORDER_LINE_STATE_UNAVAILABLE {
				items += l.GetQuantity()
			}
		}
		s := fmt.Sprintf("New order for %s: %d item(s)", who, items)
		if rb := o.GetReadyByTime(); rb.IsValid() {
			s += ", ready by " + rb.AsTime().UTC().Format("15:04 MST")
		}
		if n := o.GetCustomerNote(); n != "" {
			s += "; note: " + n
		}
		return s
	case posv1.TicketKind_TICKET_KIND_ORDER_CANCELLED:
		return withReason("Cancelled")
	case posv1.TicketKind_TICKET_KIND_LINE_UNAVAILABLE:
		name := tr.GetLineId()
		for _, l := range o.GetLines() {
			if l.GetLineId() == tr.GetLineId() {
				name = strings.TrimSpace(l.GetProductName() + " " + l.GetVariantName())
			}
		}
		return withReason(name + " unavailable")
	case posv1.TicketKind_TICKET_KIND_CUSTOMER_CHECKED_IN:
		if bay := o.GetCheckIn().GetBay(); bay != "" {
			return who + " is here, at " + bay
		}
		return who + " is here"
	case posv1.TicketKind_TICKET_KIND_EXPIRY_REMINDER:
		if d := o.GetPickupDeadline(); d.IsValid() {
			return "Pickup window of " + who + " ends at " + d.AsTime().UTC().Format("15:04 MST")
		}
		return "Pickup window of " + who + " ends soon"
	case posv1.TicketKind_TICKET_KIND_ESCALATION:
		return withReason("Not accepted in time")
	case posv1.TicketKind_TICKET_KIND_PICKUP_LOCKED:
		return withReason("Hand-over locked after too many wrong pickup codes")
	case posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED:
		return "Expired: " + who + " did not collect it in time"
	}
	return ""
}

// runEscalations raises the escalation of every order whose store's own timer is due.
func (a *Adapter) runEscalations(ctx context.Context) {
	const batch = 100
	for {
		n, err := a.sweepEscalations(ctx, batch)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("escalation sweep failed; retrying", "err", err)
		}
		if n == batch {
			continue
		}
		if !sleep(ctx, a.cfg.EscalationInterval) {
			return
		}
	}
}

func (a *Adapter) sweepEscalations(ctx context.Context, limit int) (int, error) {
	tx, err := a.db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, `
		SELECT order_id, store_id, (extract(epoch FROM escalate_after) * 1000000)::bigint, order_payload
		FROM escalation_timers WHERE due_time <= now() ORDER BY due_time LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
	if err != nil {
		return 0, err
	}
	type due struct {
		orderID, storeID string
		afterUS          int64
		payload          []byte
	}
	dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
		var d due
		return d, r.Scan(&d.orderID, &d.storeID, &d.afterUS, &d.payload)
	})
	if err != nil || len(dues) == 0 {
		return 0, err
	}
	for _, d := range dues {
		var o fulfilmentv1.Order
		if err := proto.Unmarshal(d.payload, &o); err != nil {
			return 0, fmt.Errorf("escalation of %s: %w", d.orderID, err)
		}
		after := time.Duration(d.afterUS) * time.Microsecond
		t := &posv1.Ticket{
			TicketId:   ticketID(posv1.TicketKind_TICKET_KIND_ESCALATION, "", d.orderID),
			StoreId:    d.storeID,
			Kind:       posv1.TicketKind_TICKET_KIND_ESCALATION,
			OrderId:    d.orderID,
			Order:      &o,
			Message:    "Not accepted within " + after.String(),
			CreateTime: timestamppb.Now(),
		}
		if _, err := a.raiseTicket(ctx, tx, t); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM escalation_timers WHERE order_id = $1`, d.orderID); err != nil {
			return 0, err
		}
	}
	return len(dues), tx.Commit(ctx)
}

// runJanitor deletes tickets, acknowledgements, finished deliveries and processed event ids
// past TicketRetention, hourly, in small batches.
func (a *Adapter) runJanitor(ctx context.Context) {
	for {
		retention := a.cfg.TicketRetention.Microseconds()
		for _, q := range []string{
			`DELETE FROM tickets WHERE ctid = ANY (ARRAY(SELECT ctid FROM tickets WHERE create_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`,
			`DELETE FROM ticket_acks WHERE ctid = ANY (ARRAY(SELECT ctid FROM ticket_acks WHERE ack_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`,
			`DELETE FROM webhook_deliveries WHERE ctid = ANY (ARRAY(SELECT ctid FROM webhook_deliveries WHERE state IN ('delivered', 'dropped') AND done_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`,
			`DELETE FROM processed_events WHERE ctid = ANY (ARRAY(SELECT ctid FROM processed_events WHERE processed_at < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`,
		} {
			for ctx.Err() == nil {
				tag, err := a.db.Exec(ctx, q, retention)
				if err != nil {
					if ctx.Err() == nil {
						a.log.Warn("retention cleanup failed", "err", err)
					}
					break
				}
				if tag.RowsAffected() < 5000 {
					break
				}
			}
		}
		if !sleep(ctx, time.Hour) {
			return
		}
	}
}
