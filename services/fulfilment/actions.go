package fulfilment

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// Limits of free text in actions.
const (
	maxReasonLen = 500
	maxBayLen    = 32
	// maxCheckIns caps an order's check-ins: the first and at most 4 changes of bay. Each one
	// writes a history entry and an order.checked_in event, and puts a ticket on every terminal
	// of the store (and its webhook), so a shopper changing bays without end would flood them.
	// A shopper who moves more often than that can tell the staff.
	maxCheckIns = 5
)

// textProblem says what is wrong with a free-text field, or "".
func textProblem(v string, max int, required bool) string {
	switch {
	case required && strings.TrimSpace(v) == "":
		return "required"
	case !utf8.ValidString(v):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(v) > max:
		return fmt.Sprintf("at most %d characters, got %d", max, utf8.RuneCountInString(v))
	}
	return ""
}

func checkText(field, v string, max int, required bool) error {
	if p := textProblem(v, max, required); p != "" {
		return rpcerr.Invalid(field, p)
	}
	return nil
}

// simple applies one table action with no fields of its own besides the reason. Staff moving
// on an order whose expiry is due expire it instead (see expireOverdue).
func (s *Service) simple(ctx context.Context, id string, sc scope, a domain.Action, actor *commonv1.Actor, reason string, mutate func(o *order, now time.Time)) (*order, error) {
	o, err := s.transact(ctx, id, sc, func(o *order, now time.Time) ([]change, error) {
		if a == domain.Accept || a == domain.MarkReady {
			if _, _, err := domain.Decide(o.State, a); err != nil {
				return nil, err
			}
			if cs, err := s.expireOverdue(o, now); cs != nil {
				return cs, err
			}
		}
		c, err := o.step(a, actor, reason, "", now)
		if err != nil {
			return nil, err
		}
		if mutate != nil {
			mutate(o, now)
		}
		return []change{c}, nil
	})
	if status.Code(err) == codes.FailedPrecondition {
		if done := s.repeated(ctx, id, sc, a, actor, ""); done != nil {
			return done, nil
		}
	}
	return o, err
}

// repeated returns the order when its last change was a (of line lineID, for a line's), made by
// actor: a retry of a change
// whose answer was lost (a deadline, a dropped connection; the change committed all the same)
// gets the order that change made, as a retried hand-over gets the collected order, not a
// refusal that reads like a failure. nil when it was not, or the order cannot be read.
func (s *Service) repeated(ctx context.Context, id string, sc scope, a domain.Action, actor *commonv1.Actor, lineID string) *order {
	o, err := readOrder(ctx, s.db, id, 0)
	if err != nil || o == nil || !sc.allows(o) || len(o.History) == 0 {
		return nil
	}
	last := o.History[len(o.History)-1]
	rule := domain.RuleOf(a)
	if last.Event != rule.Event || (rule.To != 0 && last.To != rule.To) || last.LineID != lineID ||
		last.Actor.GetKind() != actor.GetKind() || last.Actor.GetId() != actor.GetId() {
		return nil
	}
	return o
}

// CancelByCustomer cancels one of the shopper's orders before preparation starts; its holds
// are released.
func (s *Service) CancelByCustomer(ctx context.Context, customerID string, actor *commonv1.Actor, orderID, reason string) (*order, error) {
	if err := checkText("reason", reason, maxReasonLen, false); err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "cancelled by the shopper"
	}
	return s.simple(ctx, orderID, scope{customerID: customerID}, domain.CustomerCancel, actor, reason, func(o *order, _ time.Time) {
		o.Reason = reason
	})
}

// CheckIn records that the shopper has arrived (at a bay, optionally). Checking in again with
// the same bay changes nothing; a change of bay is one more check-in, and one beyond
// maxCheckIns is refused (FailedPrecondition) with nothing written or told to the store.
func (s *Service) CheckIn(ctx context.Context, customerID string, actor *commonv1.Actor, orderID, bay string) (*order, error) {
	if err := checkText("bay", bay, maxBayLen, false); err != nil {
		return nil, err
	}
	return s.transact(ctx, orderID, scope{customerID: customerID}, func(o *order, now time.Time) ([]change, error) {
		again := !o.CheckInTime.IsZero() && o.CheckInBay == bay && domain.Open(o.State)
		// The order's state is judged first: a check-in it does not allow is refused for that.
		if _, _, err := domain.Decide(o.State, domain.CheckIn); err != nil && !again {
			return nil, err
		}
		// An order whose time is up expires, rather than the shopper being told they are
		// checked in for it (again, too) and the store ticketed.
		if cs, err := s.expireOverdue(o, now); cs != nil {
			return cs, err
		}
		if again {
			return nil, nil
		}
		if o.CheckIns >= maxCheckIns {
			return nil, rpcerr.FailedPrecondition("bay: the order has been checked in %d times (the first and %d changes of bay), the most it may be: tell the store's staff where you are",
				o.CheckIns, o.CheckIns-1)
		}
		reason := "arrived"
		if bay != "" {
			reason = "arrived at " + bay
		}
		c, err := o.step(domain.CheckIn, actor, reason, "", now)
		if err != nil {
			return nil, err
		}
		o.CheckInTime, o.CheckInBay = now, bay
		o.CheckIns++
		return []change{c}, nil
	})
}

// Accept starts preparation: CONFIRMED → PREPARING. An order accepted after its estimate
// has passed (a queue longer than the estimate counts) is given its time to be made ready
// from now: staff are preparing it, and it must not expire under their hands. That time counts
// the store's open hours, as the pickup window does (domain.AbandonAt). Should the store's
// details be unreadable (inventory away, nothing cached), it counts plain time, and the order
// keeps the abandon time of its confirmation if that is later: staff are not held up for it.
func (s *Service) Accept(ctx context.Context, storeID string, actor *commonv1.Actor, orderID string) (*order, error) {
	gen := s.stores.generation()
	store, err := s.stores.get(ctx, storeID, 0)
	if err != nil {
		s.log.WarnContext(ctx, "store's hours unknown; the time to make the order ready runs in plain time", "store_id", storeID, "order_id", orderID, "err", err)
	}
	s.afterStoreRead()
	o, err := s.simple(ctx, orderID, scope{storeID: storeID}, domain.Accept, actor, "accepted", func(o *order, now time.Time) {
		o.AcceptTime = now
		if at := domain.AbandonAt(o.ReadyBy, o.AcceptTime, o.PickupWindow, store.pickupDeadline); at.After(o.Timers.AbandonAt) {
			o.Timers.AbandonAt = at
		}
	})
	if err == nil {
		s.recountIfStoreChanged(ctx, o, gen)
	}
	return o, err
}

// MarkReady finishes preparation: PREPARING → READY; the pickup window starts now and counts
// the store's open hours only (storeInfo.pickupDeadline). Should the store's details be
// unreadable (inventory away, nothing cached), the window runs in plain time: the order is
// ready, and staff are not held up for it.
func (s *Service) MarkReady(ctx context.Context, storeID string, actor *commonv1.Actor, orderID string) (*order, error) {
	gen := s.stores.generation()
	store, err := s.stores.get(ctx, storeID, 0)
	if err != nil {
		s.log.WarnContext(ctx, "store's hours unknown; the pickup window runs in plain time", "store_id", storeID, "order_id", orderID, "err", err)
	}
	s.afterStoreRead()
	o, err := s.simple(ctx, orderID, scope{storeID: storeID}, domain.MarkReady, actor, "ready for pickup", func(o *order, now time.Time) {
		window := o.PickupWindow
		if window <= 0 {
			window = defaultPickupWindow
		}
		o.Timers.OnReady(store.pickupTimes(now, window, s.cfg.ExpiringSoonBefore))
	})
	if err == nil {
		s.recountIfStoreChanged(ctx, o, gen)
	}
	return o, err
}

// CancelByStaff cancels an order of the store at any point before collection, with a reason
// the shopper is shown; its holds are released.
func (s *Service) CancelByStaff(ctx context.Context, storeID string, actor *commonv1.Actor, orderID, reason string) (*order, error) {
	if err := checkText("reason", reason, maxReasonLen, true); err != nil {
		return nil, err
	}
	return s.simple(ctx, orderID, scope{storeID: storeID}, domain.StaffCancel, actor, reason, func(o *order, _ time.Time) {
		o.Reason = reason
	})
}

// MarkLineUnavailable drops a line the store cannot supply: its hold is released, the total
// falls, the shopper is told. The last remaining line cannot be dropped (cancel instead).
func (s *Service) MarkLineUnavailable(ctx context.Context, storeID string, actor *commonv1.Actor, orderID, lineID, reason string) (*order, error) {
	if err := checkText("line_id", lineID, 64, true); err != nil {
		return nil, err
	}
	if err := checkText("reason", reason, maxReasonLen, false); err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "not available at the store"
	}
	o, err := s.transact(ctx, orderID, scope{storeID: storeID}, func(o *order, now time.Time) ([]change, error) {
		if _, _, err := domain.Decide(o.State, domain.MarkLineUnavailable); err != nil {
			return nil, err
		}
		if cs, err := s.expireOverdue(o, now); cs != nil {
			return cs, err
		}
		l := o.line(lineID)
		switch {
		case l == nil:
			return nil, rpcerr.NotFound("line", lineID)
		case l.Unavailable:
			return nil, rpcerr.FailedPrecondition("line %q is already marked unavailable", lineID)
		case o.activeLines() == 1:
			return nil, rpcerr.FailedPrecondition("line %q is the order's last one: cancel the order instead", lineID)
		}
		c, err := o.step(domain.MarkLineUnavailable, actor, reason, lineID, now)
		if err != nil {
			return nil, err
		}
		l.Unavailable, l.Reason = true, reason
		return []change{c}, nil
	})
	if status.Code(err) == codes.FailedPrecondition {
		if done := s.repeated(ctx, orderID, scope{storeID: storeID}, domain.MarkLineUnavailable, actor, lineID); done != nil {
			return done, nil
		}
	}
	return o, err
}

// HandOver checks the pickup code and completes the order: READY → COLLECTED, and inventory
// turns the holds into a sale. Wrong codes are counted on the order; each PickupMaxWrong of
// them in a row lock hand-over, for PickupLockout and twice as long each time after
// (domain.PickupAttempts; published as pickup_locked).
func (s *Service) HandOver(ctx context.Context, storeID string, actor *commonv1.Actor, orderID, code string) (*order, error) {
	if len(code) > 32 {
		return nil, rpcerr.Invalid("pickup_code", "at most 32 characters")
	}
	// A code that could never be one (blank, a slip of the keyboard) is refused as such, and
	// not counted against the order's tries: it guesses nothing.
	if p := domain.PickupCodeProblem(code); p != "" {
		return nil, rpcerr.Invalid("pickup_code", p)
	}
	limits := domain.PickupAttempts{MaxWrong: s.cfg.PickupMaxWrong, Lockout: s.cfg.PickupLockout}
	return s.transact(ctx, orderID, scope{storeID: storeID}, func(o *order, now time.Time) ([]change, error) {
		if o.State == domain.Collected && domain.CheckPickupCode(s.secret, o.ID, code) {
			// A retry of the hand-over that collected it (its answer lost on the way to the
			// terminal) gets the collected order, not a refusal that reads like a failure.
			return nil, nil
		}
		if _, _, err := domain.Decide(o.State, domain.HandOver); err != nil {
			return nil, err
		}
		if cs, err := s.expireOverdue(o, now); cs != nil {
			return cs, err
		}
		verdict, wrong, lockedUntil := limits.Judge(now, o.WrongCodes, o.PickupLockedUntil, domain.CheckPickupCode(s.secret, o.ID, code))
		o.WrongCodes, o.PickupLockedUntil = wrong, lockedUntil
		switch verdict {
		case domain.HandOverLocked:
			return nil, lockedError(lockedUntil.Sub(now))
		case domain.CodeWrong:
			left := limits.Left(wrong)
			return nil, &commitAnyway{rpcerr.PermissionDenied("wrong pickup code; %d more and hand-over locks for %s",
				left, limits.LockoutAt(wrong+left))}
		case domain.CodeWrongNowLocked:
			c, err := o.step(domain.LockPickup, actor, fmt.Sprintf("%d wrong pickup codes in a row", wrong), "", now)
			if err != nil {
				return nil, err
			}
			return []change{c}, &commitAnyway{lockedError(lockedUntil.Sub(now))}
		}
		c, err := o.step(domain.HandOver, actor, "handed over", "", now)
		if err != nil {
			return nil, err
		}
		return []change{c}, nil
	})
}

// lockedError refuses hand-over while it is locked, saying when to try again.
func lockedError(retryIn time.Duration) error {
	retryIn = max(retryIn.Round(time.Second), time.Second)
	st := status.Newf(codes.ResourceExhausted, "too many wrong pickup codes: hand-over is locked for %s", retryIn)
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryIn)}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// expireOverdue expires o when its expiry is due but the timer loop has not got to it yet (a
// backlog after an outage), and answers the action asked for with FailedPrecondition; it
// returns no changes when o is not overdue. Accepting, readying, handing over or dropping a
// line of such an order would otherwise give it a new lease of life on holds inventory may
// already have swept at their deadline, and hand over stock that is no longer held for it; a
// check-in would tell the shopper and the store of an order about to expire.
func (s *Service) expireOverdue(o *order, now time.Time) ([]change, error) {
	if a, due := o.Timers.Due(o.State, now); !due || a != domain.Expire {
		return nil, nil
	}
	ready, deadline := o.State == domain.Ready, o.Timers.AbandonAt
	if ready {
		deadline = o.Timers.PickupDeadline
	}
	c, err := s.fire(o, domain.Expire, now)
	if err != nil {
		return nil, err
	}
	at := deadline.UTC().Format(time.RFC3339)
	if ready {
		return []change{c}, &commitAnyway{rpcerr.FailedPrecondition("the pickup window of order %s ended at %s: it has expired", o.ID, at)}
	}
	return []change{c}, &commitAnyway{rpcerr.FailedPrecondition("order %s was not made ready by %s: it has expired", o.ID, at)}
}
