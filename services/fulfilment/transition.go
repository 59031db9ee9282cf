package fulfilment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/orderkey"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/streams"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// change is one history entry an order gets in a transaction, and what it entails.
type change struct {
	action domain.Action // zero for the creation entry
	rule   domain.Rule
	entry  historyEntry
	// nothingHeld marks a rejection known to hold nothing (inventory said so), which needs no
	// release.
	nothingHeld bool
}

// systemActor is Handoff itself acting: the saga, the timers.
func systemActor(component string) *commonv1.Actor {
	return &commonv1.Actor{Kind: commonv1.ActorKind_ACTOR_KIND_SYSTEM, Id: component}
}

// created starts a new order's history: placed, PENDING.
func (o *order) created(actor *commonv1.Actor, reason string, now time.Time) change {
	o.State = domain.Pending
	o.Version = 1
	o.CreateTime, o.UpdateTime = now, now
	return change{entry: historyEntry{Seq: 1, To: domain.Pending, Actor: actor, Reason: reason, Time: now}}
}

// step applies a to o in memory if the transition table allows it: the new state, one more
// history entry (and version), the one-shot timer a consumes. Fields particular to the action
// are the caller's to set.
func (o *order) step(a domain.Action, actor *commonv1.Actor, reason, lineID string, now time.Time) (change, error) {
	to, rule, err := domain.Decide(o.State, a)
	if err != nil {
		return change{}, err
	}
	from := o.State
	o.State = to
	o.Version++
	o.UpdateTime = now
	o.Timers.Fired(a)
	return change{action: a, rule: rule, entry: historyEntry{
		Seq: o.Version, From: from, To: to, Event: rule.Event, Actor: actor, Reason: reason, LineID: lineID, Time: now,
	}}, nil
}

// orderEvent is the OrderChanged event of one history entry (which has an event): the order
// base (its view for others, without history) at the entry's state and version, with the id
// derived from order and sequence. record and reannounce both build events here, so that an
// event announced again is the same event, id and payload.
func orderEvent(base *fulfilmentv1.Order, e historyEntry) outbox.Event {
	snap := proto.CloneOf(base)
	snap.State, snap.Version = e.To, e.Seq
	return outbox.Event{
		ID:      orderkey.EventID(base.GetId(), e.Seq),
		Subject: streams.EventSubject("fulfilment", "order", e.Event),
		Msg:     &fulfilmentv1.OrderChanged{Order: snap, Transition: e.proto()},
	}
}

// releaseReason says why an action releases holds.
func releaseReason(a domain.Action) inventoryv1.ReleaseReason {
	switch a {
	case domain.Reject:
		return inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_REJECTED
	case domain.CustomerCancel, domain.StaffCancel, domain.LapseReservation:
		return inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED
	case domain.Expire:
		return inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_EXPIRED
	case domain.MarkLineUnavailable:
		return inventoryv1.ReleaseReason_RELEASE_REASON_LINE_UNAVAILABLE
	}
	return inventoryv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED
}

// record writes, in tx, everything the changes entail besides the order row: history entries,
// one OrderChanged event each (id derived from order and sequence, so writing it again is a
// duplicate), the customer notifications, and the inventory effects (the holds' extension
// included, see keepHolds). It reports whether an effect that ends holds was recorded: that
// one is started at once (afterCommit). An extension is not: the holds it extends have minutes
// to go, so it waits for the effects worker's next round (SweepInterval) and goes to inventory
// with the other extensions and effects of that round, one request for all of them.
func (s *Service) record(ctx context.Context, tx pgx.Tx, o *order, changes []change) (effects bool, err error) {
	entries := make([]historyEntry, len(changes))
	for i, c := range changes {
		entries[i] = c.entry
	}
	if err := insertHistory(ctx, tx, o.ID, entries); err != nil {
		return false, err
	}
	var base *fulfilmentv1.Order
	events := outbox.InSchema(tx, s.schema) // tx may only queue its statements (writeBatch)
	for _, c := range changes {
		if c.rule.Event == "" {
			continue // the creation entry: announced by the transition that follows it
		}
		if base == nil {
			// The order as the transaction leaves it: exact for the event of its last change,
			// which WatchOrder streams of other processes rely on (only a new order's creation
			// entry, which has no event, precedes another change in one transaction).
			base = o.proto(viewOthers, nil)
			base.History = nil
		}
		ev := orderEvent(base, c.entry)
		snap := ev.Msg.(*fulfilmentv1.OrderChanged).GetOrder()
		if err := outbox.EnqueueWithID(ctx, events, ev.ID, ev.Subject, ev.Msg); err != nil {
			return false, err
		}
		if c.rule.Notify != "" {
			// The pickup code stays out: notifications are stored, and the code never is.
			if err := s.notifications.Enqueue(ctx, tx, notify.Message{Kind: c.rule.Notify, Order: snap, Email: o.Email, Channels: s.notifyChannels}); err != nil {
				return false, err
			}
		}
		if c.rule.Effect == domain.NoEffect || c.nothingHeld {
			continue
		}
		line := ""
		if c.rule.Effect == domain.ReleaseLine {
			line = c.entry.LineID
		}
		var wantHolds *int
		if c.rule.Effect == domain.CommitAll {
			n := o.activeLines() // one hold per active line: what the commit must end
			wantHolds = &n
		}
		if _, err := tx.Exec(ctx, `INSERT INTO order_effects (order_id, kind, line_id, reason, want_holds) VALUES ($1, $2, $3, $4, $5)`,
			o.ID, int16(c.rule.Effect), line, int16(releaseReason(c.action)), wantHolds); err != nil {
			return false, fmt.Errorf("record %s effect of order %s: %w", c.rule.Event, o.ID, err)
		}
		if c.entry.From == domain.Pending && c.rule.Effect == domain.ReleaseAll {
			// A reserve of an order ended while PENDING may still be under way (its caller
			// timed out; inventory decides a batch it had begun): release again once any such
			// reserve has landed, or its holds would wait for their deadline.
			if err := releaseAfter(ctx, tx, o.ID, c.action, s.lateReserve()); err != nil {
				return false, err
			}
		}
		effects = true
	}
	if !o.extendTo.IsZero() {
		// want_holds: the holds the extension should find open, so that only an answer with
		// fewer costs the order's transaction (see lapseIfUnheld).
		if _, err := tx.Exec(ctx, `INSERT INTO order_effects (order_id, kind, deadline, want_holds) VALUES ($1, $2, $3, $4)`,
			o.ID, int16(domain.ExtendHolds), o.extendTo, o.activeLines()); err != nil {
			return false, fmt.Errorf("record hold extension of order %s: %w", o.ID, err)
		}
		o.extendTo = time.Time{}
	}
	return effects, nil
}

// releaseAfter records a release of the order's holds due after the given time (at once for
// zero), in order after any effect the order has pending; it is harmless when nothing is held.
func releaseAfter(ctx context.Context, q execer, orderID string, a domain.Action, after time.Duration) error {
	if _, err := q.Exec(ctx, `INSERT INTO order_effects (order_id, kind, reason, due) VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')`,
		orderID, int16(domain.ReleaseAll), int16(releaseReason(a)), after.Milliseconds()); err != nil {
		return fmt.Errorf("record a release of order %s: %w", orderID, err)
	}
	return nil
}

// lateReserve is how long after a reserve was sent it may still hold stock: its caller's
// timeout plus Config.LateReserve.
func (s *Service) lateReserve() time.Duration { return s.cfg.ReserveTimeout + s.cfg.LateReserve }

// afterCommit starts what follows a committed change at once rather than at the next sweep:
// the effects worker, and local watchers, which get the order as it is now (o's history is
// handed over whole when complete, else the changes' entries; o is not kept). Both are also
// driven from the database and the order events, so a crash before this point only delays
// them.
func (s *Service) afterCommit(o *order, changes []change, effects bool) {
	for _, c := range changes {
		if c.entry.To != c.entry.From {
			orderTransitions.WithLabelValues(domain.StateName(c.entry.To)).Inc()
		}
		if k := kindOf(c.action, c.entry.From); k != "" {
			s.timerFired(o, k)
		}
	}
	if effects {
		if slices.ContainsFunc(changes, func(c change) bool { return c.rule.Effect != domain.NoEffect && !c.nothingHeld }) {
			failpoint(failpointAfterTransition)
		}
		select {
		case s.effectsWake <- struct{}{}:
		default:
		}
	}
	if u := s.hub.localUpdate(o, changes); u != nil {
		s.hub.publish(*u)
	}
}

// orderTransitions counts orders reaching each state: the business at a glance (orders placed,
// confirmed, rejected for want of stock, collected, expired), and the dashboard's first panel.
var orderTransitions = func() *prometheus.CounterVec {
	c := promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_fulfilment_order_transitions_total",
		Help: "Orders that reached each state (pending: placed), counted by the copy that committed the change.",
	}, []string{"state"})
	for _, st := range domain.States {
		c.WithLabelValues(domain.StateName(st)) // every series from the start, at 0: a rate needs two samples
	}
	return c
}()

// maxHoldAhead caps how far ahead a hold deadline is set: inventory accepts at most seven days.
// An order open for longer gets its holds refreshed by the timer loop.
const maxHoldAhead = 6 * 24 * time.Hour

// holdTarget is the deadline o's holds should have (see domain.HoldDeadline).
func (s *Service) holdTarget(o *order, now time.Time) time.Time {
	t := domain.HoldDeadline(o.State, now, o.ReadyBy, o.Timers.PickupDeadline, o.Timers.AbandonAt, o.PickupWindow, s.cfg.HoldGrace)
	if limit := now.Add(maxHoldAhead); t.After(limit) {
		return limit
	}
	return t
}

// keepHolds keeps an open order's holds alive: when the deadline they should have
// (holdTarget) is later than the one asked for so far by more than a minute (so that a slightly
// changed estimate costs nothing), the order takes the new deadline and record writes an extend
// effect in the same transaction. So the short placement holds are extended right after the
// confirmation, to the end of the pickup window the order would have if ready by its estimate
// (counting the store's open hours, as its abandon time does) + grace: from then on the order
// keeps its stock through an outage between fulfilment and inventory of that length, however
// soon or late staff act. Extending only near the deadline would leave the order hanging on inventory being
// reachable at that one moment; a hold swept then is stock sold twice, and a hand-over that
// commits nothing. The extension is no request of its own: the effects worker sends it with
// every other effect of its round in one change_holds request.
//
// An order that becomes ready late gets its pickup window the same way. Once the deadline is
// within HoldRefreshMargin (an order open for long: order.timerAt brings the timer loop back
// then), any later deadline is taken, and an order not ready yet gets at least
// PlacementHoldTTL more, so that its next refresh is still ahead whatever the store's pickup
// window and HoldGrace; a READY order's holds already outlive its pickup deadline.
func (s *Service) keepHolds(o *order, now time.Time) {
	if !domain.Open(o.State) {
		return
	}
	target := s.holdTarget(o, now)
	slack := time.Minute
	if !o.HoldDeadline.IsZero() && o.HoldDeadline.Sub(now) <= s.cfg.HoldRefreshMargin {
		slack = 0
		if floor := now.Add(s.cfg.PlacementHoldTTL); o.State != domain.Ready && target.Before(floor) {
			target = floor
		}
		if limit := now.Add(maxHoldAhead); target.After(limit) {
			target = limit
		}
	}
	if target.After(o.HoldDeadline.Add(slack)) && target.After(now) {
		o.HoldDeadline, o.extendTo = target, target
	}
}

// insert writes a new order with its holds kept and its next timer (see insertOrder for an
// order that exists already).
func (s *Service) insert(ctx context.Context, w execer, o *order, now time.Time) error {
	s.keepHolds(o, now)
	return insertOrder(ctx, w, o, o.timerAt(now, s.cfg.HoldRefreshMargin))
}

// update writes a changed order with its holds kept and its next timer.
func (s *Service) update(ctx context.Context, w execer, o *order, now time.Time) error {
	s.keepHolds(o, now)
	return updateOrder(ctx, w, o, o.timerAt(now, s.cfg.HoldRefreshMargin))
}

// write queues, in w, the order row and everything its changes entail; it reports whether any
// inventory effect is among them.
func (s *Service) write(ctx context.Context, w *writeBatch, o *order, changes []change, insert bool, now time.Time) (bool, error) {
	var err error
	if insert {
		err = s.insert(ctx, w, o, now)
	} else {
		err = s.update(ctx, w, o, now)
	}
	if err != nil {
		return false, err
	}
	return s.record(ctx, w, o, changes)
}

// scope is whose orders a caller may touch: a shopper their own, staff their store's.
type scope struct {
	customerID string
	storeID    string
}

func (sc scope) allows(o *order) bool {
	return (sc.customerID == "" || o.CustomerID == sc.customerID) && (sc.storeID == "" || o.StoreID == sc.storeID)
}

// commitAnyway wraps a refusal whose bookkeeping (a wrong pickup code counted) must be kept:
// the transaction commits, then the caller gets the refusal.
type commitAnyway struct{ err error }

func (c *commitAnyway) Error() string { return c.err.Error() }
func (c *commitAnyway) Unwrap() error { return c.err }

// apiError maps domain refusals to gRPC statuses (the rest are statuses already, or internal).
func apiError(err error) error {
	var illegal *domain.IllegalTransition
	if errors.As(err, &illegal) {
		return rpcerr.FailedPrecondition("%s", illegal.Error())
	}
	return err
}
