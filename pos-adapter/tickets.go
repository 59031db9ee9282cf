package posadapter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/inbox"
	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/streams"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// OrderEventsFilter selects all of fulfilment's OrderChanged events.
const OrderEventsFilter = "handoff.fulfilment.order.>"

// OrderEventsFilters are the OrderChanged events the adapter's consumer reads: those that raise
// a ticket (eventTickets); preparing, which ends a store's own escalation timer (an order
// leaves CONFIRMED only by preparing or by a ticket-raising event: cancelled or expired); and
// rescheduled, which an order still CONFIRMED may have as its last event, the one fulfilment
// announces again to a stream made anew, and which then raises its NEW_ORDER. ready, collected
// and rejected raise nothing and touch nothing here, so they are not read at all: they were
// half of a served order's events, each a transaction of the consumer.
var OrderEventsFilters = func() []string {
	f := []string{"handoff.fulfilment.order.preparing", "handoff.fulfilment.order.rescheduled"}
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
		// The events waiting are handled in one transaction (one commit, one flush) with a few
		// set-based statements instead of a few statements each: under load the consumer keeps
		// up instead of queueing.
		BatchSize:    a.cfg.ConsumerBatchSize,
		BatchHandler: a.handleOrderEvents,
		Logger:       a.log,
	}, a.handleOrderEvent)
}

// handleOrderEvent turns one OrderChanged event into at most one ticket, and keeps the
// per-store escalation timers, in the inbox's transaction.
func (a *Adapter) handleOrderEvent(ctx context.Context, tx pgx.Tx, msg jetstream.Msg) error {
	return a.handleOrderEvents(ctx, tx, []jetstream.Msg{msg})
}

// timerChange is what a batch of events does to one order's escalation timer. Once an order
// has left CONFIRMED its timer stays cleared, whatever the order its events are handled in.
type timerChange struct {
	storeID string
	clear   bool             // an event that left CONFIRMED: the timer ends
	set     *escalationTimer // a confirmed event: the store's timer starts, unless cleared before
}

type escalationTimer struct {
	orderID, storeID string
	confirmed        time.Time
	payload          []byte
}

// handleOrderEvents is handleOrderEvent for the events of a batch, in stream order, with one
// round trip for the escalation timers and the tickets together and one for the outbox.
func (a *Adapter) handleOrderEvents(ctx context.Context, tx pgx.Tx, msgs []jetstream.Msg) error {
	var (
		timers  = map[string]*timerChange{}
		tickets []ticketToRaise
	)
	for _, msg := range msgs {
		var ev fulfilmentv1.OrderChanged
		if err := inbox.Decode(msg, &ev); err != nil {
			return err
		}
		subject := msg.Subject()
		event := subject[strings.LastIndexByte(subject, '.')+1:]
		o := ev.GetOrder()
		store := o.GetStoreId()
		if store == "" || o.GetId() == "" {
			continue // rejected before reaching a store: nothing for a terminal
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
			continue
		}

		tc := timers[o.GetId()]
		if tc == nil {
			tc = &timerChange{storeID: store}
			timers[o.GetId()] = tc
		}
		if o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
			tc.clear, tc.set = true, nil
		}
		view := staffView(o)
		if event == "confirmed" && tc.set == nil && !tc.clear {
			// The store's own escalation timer, if it has one (the insert skips stores without).
			confirmed := time.Now()
			if t := ev.GetTransition().GetTime(); t.IsValid() {
				confirmed = t.AsTime()
			}
			payload, err := proto.Marshal(view)
			if err != nil {
				return inbox.Permanent(err)
			}
			tc.set = &escalationTimer{orderID: o.GetId(), storeID: store, confirmed: confirmed, payload: payload}
		}

		if event != "confirmed" && o.GetState() == fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
			// An order still CONFIRMED is new to its store: should its confirmed event never
			// come (lost with the stream before this consumer read it; fulfilment then announces
			// the order's current event again) or come later than this one, this event raises
			// the NEW_ORDER ticket, first. It has the id the confirmed event's would have, so
			// the order gets one whichever event comes first.
			tickets = append(tickets, ticketToRaise{
				t: &posv1.Ticket{
					TicketId:       ticketID(posv1.TicketKind_TICKET_KIND_NEW_ORDER, orderkey.ConfirmedEventID(o.GetId()), o.GetId()),
					StoreId:        store,
					Kind:           posv1.TicketKind_TICKET_KIND_NEW_ORDER,
					OrderId:        o.GetId(),
					Order:          view,
					PickupCodeHint: pickupCodeHint(o),
					Message:        ticketMessage(posv1.TicketKind_TICKET_KIND_NEW_ORDER, o, ev.GetTransition()),
					CreateTime:     timestamppb.Now(),
				},
				trace: inbox.TraceParent(ctx, msg),
			})
		}
		kind, ok := eventTickets[event]
		if !ok {
			continue
		}
		tickets = append(tickets, ticketToRaise{
			t: &posv1.Ticket{
				TicketId:       ticketID(kind, eventID, o.GetId()),
				StoreId:        store,
				Kind:           kind,
				OrderId:        o.GetId(),
				Order:          view,
				PickupCodeHint: pickupCodeHint(o),
				Message:        ticketMessage(kind, o, ev.GetTransition()),
				CreateTime:     timestamppb.Now(),
			},
			// Fulfilment's not_accepted is ignored for an order its store times itself (one
			// confirmed while the store had its own escalation time).
			unlessOwnTimer: event == "not_accepted",
			trace:          inbox.TraceParent(ctx, msg),
		})
	}

	var (
		pre                []statement
		ended, endedStores []string
		set                escalationTimers
	)
	for id, tc := range timers {
		if tc.clear {
			ended = append(ended, id)
			endedStores = append(endedStores, tc.storeID)
		}
		if tc.set != nil {
			set.add(tc.set)
		}
	}
	if len(ended) > 0 {
		// A cleared timer stays, as a tombstone the set below leaves alone, wherever a timer
		// is or could be set (a store with its own time): a confirmed event handled after this
		// one must not set it again. Rows are written in order_id order, the lock order of every
		// transaction here.
		pre = append(pre, statement{"clear escalation timers", `
			INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload, cleared_time)
			SELECT t.order_id, t.store_id, 'infinity', interval '0', '', now()
			FROM unnest($1::text[], $2::text[]) AS t(order_id, store_id)
			WHERE EXISTS (SELECT 1 FROM store_settings s WHERE s.store_id = t.store_id AND s.escalate_after > interval '0')
				OR EXISTS (SELECT 1 FROM escalation_timers e WHERE e.order_id = t.order_id)
			ORDER BY t.order_id
			ON CONFLICT (order_id) DO UPDATE SET due_time = 'infinity', cleared_time = now()
			WHERE escalation_timers.cleared_time IS NULL`,
			[]any{ended, endedStores}})
	}
	if len(set.orderIDs) > 0 {
		pre = append(pre, statement{"set escalation timers", `
			INSERT INTO escalation_timers (order_id, store_id, due_time, escalate_after, order_payload, confirm_time)
			SELECT t.order_id, t.store_id, t.confirmed + s.escalate_after, s.escalate_after, t.payload, t.confirmed
			FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bytea[]) AS t(order_id, store_id, confirmed, payload)
			JOIN store_settings s ON s.store_id = t.store_id AND s.escalate_after > interval '0'
			-- An erased order has ended (forget.go): it needs no timer, nor its copy of the order.
			WHERE NOT EXISTS (SELECT 1 FROM forgotten_orders f WHERE f.order_id = t.order_id)
			ORDER BY t.order_id
			ON CONFLICT (order_id) DO NOTHING`,
			[]any{set.orderIDs, set.storeIDs, set.confirmed, set.payloads}})
	}
	raised, webhooks, err := a.raiseTickets(ctx, tx, tickets, pre...)
	if err != nil {
		return err
	}
	if len(raised) > 0 {
		// Terminals connected to this process get the tickets as soon as they are committed;
		// the outbox relay carries them to the other copies (and here again, skipped then).
		inbox.OnCommit(ctx, func() {
			a.hub.deliver(raised...)
			if webhooks {
				a.wakeWebhooksAt(raised[0].GetStoreId())
			}
		})
	}
	return nil
}

// escalationTimers are timers to set, as columns for one statement.
type escalationTimers struct {
	orderIDs, storeIDs []string
	confirmed          []time.Time
	payloads           [][]byte
}

func (e *escalationTimers) add(t *escalationTimer) {
	e.orderIDs = append(e.orderIDs, t.orderID)
	e.storeIDs = append(e.storeIDs, t.storeID)
	e.confirmed = append(e.confirmed, t.confirmed)
	e.payloads = append(e.payloads, t.payload)
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

// ticketToRaise is a ticket for raiseTickets.
type ticketToRaise struct {
	t *posv1.Ticket
	// unlessOwnTimer raises nothing when the store runs its own escalation timer.
	unlessOwnTimer bool
	// trace is the traceparent of the work the ticket is raised for ("" untraced), so that the
	// ticket's event continues the order's trace.
	trace string
}

// statement is one statement sent along with the tickets' (see raiseTickets).
type statement struct {
	what string
	sql  string
	args []any
}

// raiseTicketsSQL raises the tickets given as columns, in their order: each new ticket id gets
// its store's next sequence number (store_feeds, under its row lock, taken in store order), is
// stored, and gets a webhook delivery if its store has a webhook for its kind. A ticket id
// raised before (or twice in the input) is left alone without using up a sequence number, and
// so is any ticket of an order whose feed has ended (endsFeed: cancelled or expired, raised
// before or earlier in the input): events of one order can be handled out of order, and a late
// confirmed event must not put a cancelled order on the board as new.
const raiseTicketsSQL = `
WITH input AS (
	SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[], $7::uuid[], $8::bool[])
		WITH ORDINALITY AS i(store_id, ticket_id, kind, order_id, payload, create_time, delivery_id, unless_own_timer, ord)),
fresh AS (
	SELECT DISTINCT ON (i.ticket_id) i.* FROM input i
	WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.ticket_id = i.ticket_id)
		AND NOT (i.unless_own_timer AND EXISTS (SELECT 1 FROM escalation_timers e WHERE e.order_id = i.order_id))
		AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.order_id = i.order_id AND t.kind IN ` + endsFeed + `)
		AND NOT EXISTS (SELECT 1 FROM input j WHERE j.order_id = i.order_id AND j.ord < i.ord AND j.kind IN ` + endsFeed + `)
	ORDER BY i.ticket_id, i.ord),
counts AS (SELECT store_id, count(*) AS n FROM fresh GROUP BY store_id),
next AS (
	INSERT INTO store_feeds AS f (store_id, last_seq)
	SELECT store_id, n FROM counts ORDER BY store_id
	ON CONFLICT (store_id) DO UPDATE SET last_seq = f.last_seq + excluded.last_seq
	RETURNING store_id, last_seq),
numbered AS (
	SELECT fr.*, nx.last_seq - c.n + row_number() OVER (PARTITION BY fr.store_id ORDER BY fr.ord) AS seq
	FROM fresh fr JOIN counts c USING (store_id) JOIN next nx USING (store_id)),
ins AS (
	INSERT INTO tickets (store_id, seq, ticket_id, kind, order_id, payload, create_time)
	SELECT store_id, seq, ticket_id, kind, order_id, payload, create_time FROM numbered
	RETURNING ticket_id, seq, order_id),
hook AS (
	INSERT INTO webhook_deliveries (id, store_id, ticket_id, next_attempt_time)
	SELECT nb.delivery_id, nb.store_id, nb.ticket_id, greatest(now(), w.retry_time) -- a store in backoff: after it
	FROM numbered nb JOIN store_webhooks w ON w.store_id = nb.store_id
	WHERE w.enabled AND (cardinality(w.kinds) = 0 OR nb.kind = ANY (w.kinds))
	ON CONFLICT (store_id, ticket_id) DO NOTHING
	RETURNING 1)
SELECT ticket_id::text, seq, (SELECT count(*) FROM hook),
	EXISTS (SELECT 1 FROM forgotten_orders f WHERE f.order_id = ins.order_id) FROM ins`

// endsFeed are the kinds of ticket after which an order has no more (as a SQL list; the index
// tickets_final_by_order, migration 00004, is on the same list).
const endsFeed = `('order_cancelled', 'order_expired')`

// lockFeedsSQL takes the feeds' row locks of the stores given, in store order, before the
// tickets are raised: the raising statement then looks for an order's ending ticket in a
// snapshot taken after any other transaction raising tickets for these stores has committed.
// Without it two copies could raise an order's cancellation and its late new-order ticket side
// by side, each unseen by the other, the new one last.
const lockFeedsSQL = `SELECT 1 FROM store_feeds WHERE store_id = ANY ($1) ORDER BY store_id FOR UPDATE`

// ensureFeedsSQL makes the feed rows of the stores given that have none yet, in store order,
// before lockFeedsSQL: a store's first tickets have no row to lock, and two copies raising an
// order's cancellation and its new-order ticket would each judge theirs new. An insert that
// meets another transaction's uncommitted row for the store waits for it to end, so the lock
// (a statement, and snapshot, later) finds the row and the raising statement that other
// transaction's tickets. A row there already is left alone, without a lock.
const ensureFeedsSQL = `
INSERT INTO store_feeds (store_id, last_seq)
SELECT DISTINCT store_id, 0 FROM unnest($1::text[]) AS s(store_id) ORDER BY store_id
ON CONFLICT (store_id) DO NOTHING`

// raiseTickets raises items in their order (see raiseTicketsSQL) and enqueues TicketRaised for
// each ticket raised, in tx, sending pre first in the same round trip. It returns the tickets
// raised, with their sequence numbers, in order, and whether webhook deliveries were queued
// (the caller wakes the dispatcher once tx has committed).
func (a *Adapter) raiseTickets(ctx context.Context, tx pgx.Tx, items []ticketToRaise, pre ...statement) (raised []*posv1.Ticket, webhooks bool, err error) {
	var b pgx.Batch
	for _, st := range pre {
		b.Queue(st.sql, st.args...)
	}
	n := len(items)
	var (
		stores, ids, kinds, orders = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		payloads                   = make([][]byte, n)
		created                    = make([]time.Time, n)
		deliveries                 = make([]string, n)
		unless                     = make([]bool, n)
	)
	for i, it := range items {
		t := it.t
		t.Sequence = 0 // stored without: a ticket's sequence is its row's
		payload, err := proto.Marshal(t)
		if err != nil {
			return nil, false, fmt.Errorf("marshal ticket: %w", err)
		}
		if deliveries[i], err = newUUID(); err != nil {
			return nil, false, err
		}
		stores[i], ids[i], kinds[i], orders[i] = t.GetStoreId(), t.GetTicketId(), KindToken(t.GetKind()), t.GetOrderId()
		payloads[i], created[i], unless[i] = payload, t.GetCreateTime().AsTime(), it.unlessOwnTimer
	}
	if n > 0 {
		// After pre, whose statements lock escalation timers: every transaction here locks
		// timers before feeds.
		b.Queue(ensureFeedsSQL, stores)
		b.Queue(lockFeedsSQL, stores)
		b.Queue(raiseTicketsSQL, stores, ids, kinds, orders, payloads, created, deliveries, unless)
	}
	if b.Len() == 0 {
		return nil, false, nil
	}
	res := tx.SendBatch(ctx, &b)
	seqs := map[string]int64{}
	forgotten := map[string]bool{} // tickets raised of orders erased meanwhile
	var hooks int64
	err = func() error {
		for _, st := range pre {
			if _, err := res.Exec(); err != nil {
				return fmt.Errorf("%s: %w", st.what, err)
			}
		}
		if n == 0 {
			return nil
		}
		if _, err := res.Exec(); err != nil {
			return fmt.Errorf("make store feeds: %w", err)
		}
		if _, err := res.Exec(); err != nil {
			return fmt.Errorf("lock store feeds: %w", err)
		}
		rows, err := res.Query()
		if err != nil {
			return fmt.Errorf("store tickets: %w", err)
		}
		var (
			id     string
			seq    int64
			forgot bool
		)
		if _, err := pgx.ForEachRow(rows, []any{&id, &seq, &hooks, &forgot}, func() error {
			seqs[id] = seq
			if forgot {
				forgotten[id] = true
			}
			return nil
		}); err != nil {
			return fmt.Errorf("store tickets: %w", err)
		}
		return nil
	}()
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("store tickets: %w", cerr)
	}
	if err != nil || len(seqs) == 0 {
		return nil, false, err
	}

	raised = make([]*posv1.Ticket, 0, len(seqs))
	events := make([]outbox.Event, 0, len(seqs))
	var redacted pgx.Batch
	for _, it := range items {
		seq, ok := seqs[it.t.GetTicketId()]
		if !ok {
			continue
		}
		delete(seqs, it.t.GetTicketId()) // a second copy in items was not raised
		t := it.t
		if forgotten[t.GetTicketId()] {
			// Tickets of one event share its order: each clears its own copy, reading the
			// name and note out of its line of text first.
			t.Order = proto.CloneOf(t.GetOrder())
		}
		if forgotten[t.GetTicketId()] && redactTicket(t) {
			// Stored without its sequence, as raised.
			payload, err := proto.Marshal(t)
			if err != nil {
				return nil, false, fmt.Errorf("marshal ticket: %w", err)
			}
			redacted.Queue(`UPDATE tickets SET payload = $3 WHERE store_id = $1 AND seq = $2`, t.GetStoreId(), seq, payload)
		}
		t.Sequence = uint64(seq)
		raised = append(raised, t)
		events = append(events, outbox.Event{
			ID: t.GetTicketId(), Subject: streams.TicketSubject(t.GetStoreId(), KindToken(t.GetKind())), Msg: &posv1.TicketRaised{Ticket: t},
			TraceParent: it.trace,
		})
	}
	if redacted.Len() > 0 {
		if err := tx.SendBatch(ctx, &redacted).Close(); err != nil {
			return nil, false, fmt.Errorf("store the tickets of forgotten orders without their personal data: %w", err)
		}
	}
	if err := outbox.EnqueueBatch(ctx, tx, events); err != nil {
		return nil, false, err
	}
	return raised, hooks > 0, nil
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

// onStoreClock gives t as staff read it: on the order's store's clock, with the day when it is
// not today there (UTC for an order that names no zone).
func onStoreClock(o *fulfilmentv1.Order, t time.Time) string {
	return hours.ClockText(t, hours.Location(o.GetStoreTimeZone(), time.UTC), time.Now())
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
			s += ", ready by " + onStoreClock(o, rb.AsTime())
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
			return "Pickup window of " + who + " ends at " + onStoreClock(o, d.AsTime())
		}
		return "Pickup window of " + who + " ends soon"
	case posv1.TicketKind_TICKET_KIND_ESCALATION:
		return withReason("Not accepted in time")
	case posv1.TicketKind_TICKET_KIND_PICKUP_LOCKED:
		return withReason("Hand-over locked after too many wrong pickup codes")
	case posv1.TicketKind_TICKET_KIND_ORDER_EXPIRED:
		if !o.GetPickupDeadline().IsValid() { // never made ready: the store's, not the shopper's
			return "Expired: not made ready in time for " + who
		}
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

// sweepEscalations fires, moves on or clears up to limit due timers, and says how many it
// handled: limit, when more may be due at once.
func (a *Adapter) sweepEscalations(ctx context.Context, limit int) (int, error) {
	// What the sweep must ask fulfilment and inventory (which orders still wait, the stores'
	// hours) is asked before the timers are locked: a transaction holding them while a service
	// is slow would hold back the consumer that clears them, every store's new orders behind
	// it, and be cut off by the database's idle-in-transaction timeout.
	type candidate struct{ OrderID, StoreID string }
	rows, err := a.db.Query(ctx, `SELECT order_id, store_id FROM escalation_timers
		WHERE due_time <= now() AND cleared_time IS NULL ORDER BY due_time LIMIT $1`, limit)
	if err != nil {
		return 0, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowToStructByPos[candidate])
	if err != nil || len(found) == 0 {
		return 0, err
	}
	candidates := make([]string, len(found))
	byStore := map[string][]string{}
	for i, c := range found {
		candidates[i] = c.OrderID
		byStore[c.StoreID] = append(byStore[c.StoreID], c.OrderID)
	}
	var (
		schedules map[string]*hours.Schedule
		awaiting  map[string]map[string]bool
		lookups   sync.WaitGroup
	)
	lookups.Go(func() { schedules = a.storeSchedules(ctx, slices.Collect(maps.Keys(byStore))) })
	lookups.Go(func() { awaiting = a.awaitingAcceptance(ctx, byStore) })
	lookups.Wait()
	// A store fulfilment did not answer for falls back on the order events handled here: only
	// its timers due before every event published until then has been handled (an acceptance
	// may be among them: the adapter restarting, its consumer behind) are fired; the others
	// wait for the consumer, or for fulfilment to answer.
	var handled time.Time
	if len(awaiting) < len(byStore) {
		if handled, err = a.eventsHandledUntil(ctx); err != nil {
			a.log.Warn("escalations: fulfilment did not answer and how far the order events are handled is unknown; those timers wait",
				"err", err)
		}
	}

	tx, err := a.db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err = tx.Query(ctx, `
		SELECT order_id, store_id, (extract(epoch FROM escalate_after) * 1000000)::bigint, order_payload, due_time,
			coalesce(confirm_time, due_time - escalate_after)
		FROM escalation_timers WHERE order_id = ANY($1) AND due_time <= now() AND cleared_time IS NULL
		ORDER BY due_time FOR UPDATE SKIP LOCKED`, candidates)
	if err != nil {
		return 0, err
	}
	type due struct {
		orderID, storeID string
		afterUS          int64
		payload          []byte
		at, confirmed    time.Time
	}
	dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
		var d due
		return d, r.Scan(&d.orderID, &d.storeID, &d.afterUS, &d.payload, &d.at, &d.confirmed)
	})
	if err != nil || len(dues) == 0 {
		return 0, err
	}
	// The store's time counts its open hours, as fulfilment's not_accepted does: a timer that
	// falls due while the store is shut is moved on to when that much of its open time has
	// passed since the confirmation, and fires then.
	type moved struct {
		orderID   string
		due       time.Time
		confirmed time.Time
	}
	var (
		move    []moved
		cleared []string // accepted or ended at fulfilment
	)
	now := time.Now()
	dues = slices.DeleteFunc(dues, func(d due) bool {
		if s := schedules[d.storeID]; s != nil {
			after := time.Duration(d.afterUS) * time.Microsecond
			at := s.AddOpen(d.confirmed, after)
			if at.After(d.confirmed.Add(maxEscalationAhead)) {
				at = d.confirmed.Add(maxEscalationAhead) // a store shut for weeks
			}
			if at.After(now) {
				move = append(move, moved{d.orderID, at, d.confirmed})
				return true
			}
		}
		if w, answered := awaiting[d.storeID]; answered {
			if !w[d.orderID] {
				cleared = append(cleared, d.orderID)
				return true
			}
			return false
		}
		return d.at.After(handled) // waits for the consumer
	})
	if len(move) > 0 {
		ids, dueTimes, confirmed := make([]string, len(move)), make([]time.Time, len(move)), make([]time.Time, len(move))
		for i, m := range move {
			ids[i], dueTimes[i], confirmed[i] = m.orderID, m.due, m.confirmed
		}
		// The confirmation is kept with it: a moved due time no longer tells it (a timer set
		// before confirm_time was kept has none).
		if _, err := tx.Exec(ctx, `UPDATE escalation_timers e SET due_time = m.due_time, confirm_time = m.confirmed
			FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS m(order_id, due_time, confirmed)
			WHERE e.order_id = m.order_id AND e.cleared_time IS NULL`, ids, dueTimes, confirmed); err != nil {
			return 0, fmt.Errorf("move escalation timers to the stores' open hours: %w", err)
		}
	}
	if len(cleared) > 0 {
		// As the consumer clears a timer on the acceptance's event, which may not have come yet:
		// the row stays as a tombstone.
		if _, err := tx.Exec(ctx, `UPDATE escalation_timers SET due_time = 'infinity', cleared_time = now()
			WHERE order_id = ANY($1) AND cleared_time IS NULL`, cleared); err != nil {
			return 0, fmt.Errorf("clear escalation timers of orders no longer waiting: %w", err)
		}
	}
	if len(dues) == 0 {
		return len(move) + len(cleared), tx.Commit(ctx) // handled; the next batch may be due
	}
	items := make([]ticketToRaise, len(dues))
	orderIDs := make([]string, len(dues))
	for i, d := range dues {
		var o fulfilmentv1.Order
		if err := proto.Unmarshal(d.payload, &o); err != nil {
			return 0, fmt.Errorf("escalation of %s: %w", d.orderID, err)
		}
		after := time.Duration(d.afterUS) * time.Microsecond
		items[i] = ticketToRaise{t: &posv1.Ticket{
			TicketId:   ticketID(posv1.TicketKind_TICKET_KIND_ESCALATION, "", d.orderID),
			StoreId:    d.storeID,
			Kind:       posv1.TicketKind_TICKET_KIND_ESCALATION,
			OrderId:    d.orderID,
			Order:      &o,
			Message:    "Not accepted within " + after.String(),
			CreateTime: timestamppb.Now(),
		}}
		orderIDs[i] = d.orderID
	}
	raised, webhooks, err := a.raiseTickets(ctx, tx, items,
		statement{"end escalation timers", `DELETE FROM escalation_timers WHERE order_id = ANY ($1)`, []any{orderIDs}})
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	a.hub.deliver(raised...)
	if webhooks {
		a.wakeWebhooksAt(raised[0].GetStoreId())
	}
	return len(dues) + len(move) + len(cleared), nil
}

// maxEscalationAhead bounds how far the stores' open hours move an escalation from its order's
// confirmation: a store shut for weeks has it raised a week on (its holds end by then).
const maxEscalationAhead = 7 * 24 * time.Hour

// storeSchedules reads the opening hours of stores from inventory, all at once within one
// escalationLookupTimeout: nil for one that has none, or that inventory did not answer for (its
// timers then count plain time, as before).
func (a *Adapter) storeSchedules(ctx context.Context, storeIDs []string) map[string]*hours.Schedule {
	ctx, cancel := context.WithTimeout(ctx, escalationLookupTimeout)
	defer cancel()
	actx, err := a.adminContext(ctx, "system:pos-adapter")
	if err != nil {
		a.log.Warn("escalations: the stores' hours are unknown; their timers count plain time", "err", err)
		return nil
	}
	out := make([]*hours.Schedule, len(storeIDs))
	var wg sync.WaitGroup
	for i, id := range storeIDs {
		wg.Go(func() {
			res, err := a.locator.GetStore(actx, &inventoryv1.GetStoreRequest{StoreId: id})
			if err != nil {
				if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
					a.log.Warn("escalations: the store's hours are unknown; its timers count plain time", "store_id", id, "err", err)
				}
				return
			}
			out[i] = hours.OfStore(res.GetStore())
		})
	}
	wg.Wait()
	m := make(map[string]*hours.Schedule, len(storeIDs))
	for i, id := range storeIDs {
		m[id] = out[i]
	}
	return m
}

// awaitingAcceptance asks fulfilment, whose orders they are, which of the given orders of each
// store still wait to be accepted (CONFIRMED), all stores at once within one
// escalationLookupTimeout. A store it did not answer for is missing from the result. The
// order events this adapter has handled may be behind fulfilment's tables: an acceptance not
// yet relayed from its outbox, this consumer behind, or held back by an event it cannot handle.
func (a *Adapter) awaitingAcceptance(ctx context.Context, byStore map[string][]string) map[string]map[string]bool {
	ctx, cancel := context.WithTimeout(ctx, escalationLookupTimeout)
	defer cancel()
	actx, err := a.adminContext(ctx, "system:pos-adapter")
	if err != nil {
		a.log.Warn("escalations: cannot ask fulfilment which orders wait", "err", err)
		return nil
	}
	var (
		mu  sync.Mutex
		out = make(map[string]map[string]bool, len(byStore))
		wg  sync.WaitGroup
	)
	for store, ids := range byStore {
		wg.Go(func() {
			waiting, err := a.confirmedAmong(actx, store, ids)
			if err != nil {
				if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
					a.log.Warn("escalations: fulfilment did not say which of the store's orders wait; going by the events handled",
						"store_id", store, "err", err)
				}
				return
			}
			mu.Lock()
			out[store] = waiting
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// confirmedAmong pages through the store's CONFIRMED orders, oldest first, until it has seen
// every one of ids or the last page, and returns which of ids it saw. The due orders are the
// store's oldest unaccepted ones, so this is nearly always one page; a store with more than
// maxAwaitingPages pages of orders waiting before them is left to the events handled.
func (a *Adapter) confirmedAmong(ctx context.Context, storeID string, ids []string) (map[string]bool, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	seen := make(map[string]bool, len(ids))
	req := &fulfilmentv1.ListStoreOrdersRequest{StoreId: storeID, PageSize: 200,
		States: []fulfilmentv1.OrderState{fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED}}
	for range maxAwaitingPages {
		res, err := a.fulfilment.ListStoreOrders(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, o := range res.GetOrders() {
			if want[o.GetId()] {
				seen[o.GetId()] = true
			}
		}
		if len(seen) == len(want) || res.GetNextPageToken() == "" {
			return seen, nil
		}
		req.PageToken = res.GetNextPageToken()
	}
	return nil, fmt.Errorf("more than %d orders wait at the store", maxAwaitingPages*200)
}

// maxAwaitingPages bounds the pages of a store's waiting orders read for one sweep.
const maxAwaitingPages = 10

// escalationLookupTimeout bounds reading a store's hours for its escalations.
const escalationLookupTimeout = 5 * time.Second

// eventsHandledUntil is a time before which every order event published has been handled by
// the adapter's consumer (whichever copy took it): now when none waits, else when the first
// event not yet acknowledged, or one published just before it, was published. An event of
// those that has since gone from the stream (past its age) has nothing to wait for.
func (a *Adapter) eventsHandledUntil(ctx context.Context) (time.Time, error) {
	now := time.Now()
	cons, err := a.cfg.JS.Consumer(ctx, streams.EventsStream, ConsumerName)
	if err != nil {
		return time.Time{}, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return now, nil
	}
	stream, err := a.cfg.JS.Stream(ctx, streams.EventsStream)
	if err != nil {
		return time.Time{}, err
	}
	// The ack floor's next message in the stream (of any subject) was published no later than
	// the consumer's first one waiting.
	msg, err := stream.GetMsg(ctx, info.AckFloor.Stream+1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return now, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return msg.Time, nil
}

// runJanitor deletes tickets, acknowledgements, finished and dead-lettered deliveries and vendor
// events past TicketRetention, hourly, in small batches. (A dead letter past it could not be
// replayed anyway: its ticket is gone.) Processed event ids are the inbox's to prune.
func (a *Adapter) runJanitor(ctx context.Context) {
	for {
		keep, replay := a.cfg.TicketRetention.Microseconds(), a.cfg.ReplayWindow.Microseconds()
		for _, job := range []struct {
			sql       string
			retention int64
		}{
			{`DELETE FROM tickets WHERE ctid = ANY (ARRAY(SELECT ctid FROM tickets WHERE create_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, keep},
			{`DELETE FROM ticket_acks WHERE ctid = ANY (ARRAY(SELECT ctid FROM ticket_acks WHERE ack_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, keep},
			{`DELETE FROM webhook_deliveries WHERE ctid = ANY (ARRAY(SELECT ctid FROM webhook_deliveries WHERE state IN ('delivered', 'dropped') AND done_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, keep},
			{`DELETE FROM webhook_deliveries WHERE ctid = ANY (ARRAY(SELECT ctid FROM webhook_deliveries WHERE state = 'failed' AND done_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, keep},
			{`DELETE FROM vendor_events WHERE ctid = ANY (ARRAY(SELECT ctid FROM vendor_events WHERE receive_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, keep},
			// A cleared timer is needed only while its order's confirmed event could still be
			// read: events older than the replay window are skipped.
			{`DELETE FROM escalation_timers WHERE ctid = ANY (ARRAY(SELECT ctid FROM escalation_timers WHERE cleared_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, replay},
			// Likewise an erased order's record (forget.go), with the slack of the two clocks
			// that stamp an event and judge its age.
			{`DELETE FROM forgotten_orders WHERE ctid = ANY (ARRAY(SELECT ctid FROM forgotten_orders WHERE forget_time < now() - $1::bigint * interval '1 microsecond' LIMIT 5000))`, replay + ticketClockSlack.Microseconds()},
		} {
			for ctx.Err() == nil {
				tag, err := a.db.Exec(ctx, job.sql, job.retention)
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
