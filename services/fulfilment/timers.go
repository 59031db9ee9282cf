package fulfilment

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
)

// timerActor is the timer loop in order histories.
var timerActor = systemActor("timers")

// timersBatch is how many due orders one round of the timer loop takes.
const timersBatch = 64

// runTimers fires the timers of open orders until ctx ends: expiry of READY orders past their
// pickup deadline (their holds are released), the expiring-soon reminder, the not-accepted
// escalation, and the refresh of holds whose deadline comes near while the order is still open.
// The timers are columns of the order, so they survive restarts; a timer that came due while no
// process ran fires at the next round.
func (s *Service) runTimers(ctx context.Context) {
	for {
		n, err := s.timersRound(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("timer round failed; trying again", "err", err)
		} else if n == timersBatch {
			continue
		}
		if !sleep(ctx, s.cfg.SweepInterval) {
			return
		}
	}
}

// timersRound fires what is due on up to timersBatch orders in one transaction. Rows another
// copy has locked are skipped: it is firing them.
//
// What is due is decided by the database's clock, one for every copy: a copy whose own clock
// ran ahead (a VM resumed, NTP stepping) fired expiries and escalations early by as much, and
// one behind fired them late. The reading also keeps the copy's offset from the database's clock
// (dbclock) up to date, for the times written where nothing reads the database's clock first.
func (s *Service) timersRound(ctx context.Context) (int, error) {
	type fired struct {
		o       *order
		changes []change
		effects bool
	}
	var done []fired
	var now time.Time
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		if now, err = s.clock.Read(ctx, tx); err != nil {
			return err
		}
		orders, err := queryOrders(ctx, tx, `SELECT `+orderColumns+` FROM orders
			WHERE state IN (2, 3, 4) AND timer_at <= $1 ORDER BY timer_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, timersBatch)
		if err != nil {
			return err
		}
		done = done[:0]
		var w writeBatch
		for _, o := range orders {
			var changes []change
			if a, due := o.Timers.Due(o.State, now); due {
				c, err := s.fire(o, a, now)
				if err != nil {
					return err
				}
				changes = append(changes, c)
			}
			// Written even when nothing fired: the holds may need extending (update keeps
			// them), and timer_at moves on to the next timer.
			effects, err := s.write(ctx, &w, o, changes, false, now)
			if err != nil {
				return err
			}
			done = append(done, fired{o, changes, effects})
		}
		if len(orders) == 0 {
			return nil
		}
		return w.sendIn(ctx, tx)
	})
	if err != nil {
		return 0, err
	}
	for _, f := range done {
		s.afterCommit(f.o, f.changes, f.effects)
	}
	return len(done), nil
}

// timerKind is what a timer did to an order, as counted and logged: an expiry's cause is what
// tells a store that does not work its orders (expired_not_accepted, expired_not_ready) from
// shoppers who do not come (expired_not_collected), which the order's state alone does not.
type timerKind string

const (
	escalatedNotAccepted timerKind = "escalated_not_accepted"
	expiredNotAccepted   timerKind = "expired_not_accepted"
	expiredNotReady      timerKind = "expired_not_ready"
	expiredNotCollected  timerKind = "expired_not_collected"
	remindedExpiringSoon timerKind = "reminded_expiring_soon"
)

var timerKinds = []timerKind{escalatedNotAccepted, expiredNotAccepted, expiredNotReady, expiredNotCollected, remindedExpiringSoon}

// kindOf names timer action a on an order in state from; "" for an action no timer takes.
func kindOf(a domain.Action, from domain.State) timerKind {
	switch {
	case a == domain.EscalateNotAccepted:
		return escalatedNotAccepted
	case a == domain.RemindExpiringSoon:
		return remindedExpiringSoon
	case a != domain.Expire:
		return ""
	case from == domain.Ready:
		return expiredNotCollected
	case from == domain.Confirmed:
		return expiredNotAccepted
	default:
		return expiredNotReady
	}
}

// timerActions counts what the timers did, by kind (see timerKind); every kind is served at 0
// from the start, for rate() and increase() to see the first.
var timerActions = func() *prometheus.CounterVec {
	c := promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_fulfilment_timer_actions_total",
		Help: "Order timers fired, by action: escalated_not_accepted, expired_not_accepted and expired_not_ready (the store did not work the order), expired_not_collected (the shopper did not come), reminded_expiring_soon.",
	}, []string{"action"})
	for _, k := range timerKinds {
		c.WithLabelValues(string(k))
	}
	return c
}()

// timerFired counts and logs what a timer did to o, once committed (by the timer loop, or by a
// staff action that found the order overdue: expireOverdue): one line per order and action, naming the store, so that a store whose orders escalate and expire unmade (its
// terminals all gone, say) can be found in the logs. Reminders, the normal course of every
// ready order, are logged at debug.
func (s *Service) timerFired(o *order, kind timerKind) {
	timerActions.WithLabelValues(string(kind)).Inc()
	level := slog.LevelInfo
	if kind == remindedExpiringSoon {
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "order timer fired", "action", string(kind), "order_id", o.ID, "store_id", o.StoreID)
}

// fire applies the timer action a to o in memory, with the reason the shopper is given.
func (s *Service) fire(o *order, a domain.Action, now time.Time) (change, error) {
	wasReady := o.State == domain.Ready
	c, err := o.step(a, timerActor, s.timerReason(o, a, now), "", now)
	if err != nil {
		return change{}, err
	}
	switch {
	case a == domain.Expire && wasReady:
		o.Reason = "not collected within the pickup window"
	case a == domain.Expire:
		o.Reason = "the store did not get the order ready within its pickup window"
	}
	return c, nil
}

func (s *Service) timerReason(o *order, a domain.Action, now time.Time) string {
	switch a {
	case domain.Expire:
		if o.State != domain.Ready {
			return fmt.Sprintf("not made ready by the end of the pickup window it would have had, and %s more", domain.AbandonGrace)
		}
		return fmt.Sprintf("not collected within the pickup window of %s", o.PickupWindow)
	case domain.RemindExpiringSoon:
		// On the store's clock, with the day when it is not today there: a window counts open
		// hours only, so one reminded of before closing ends the next day.
		return "the pickup window ends at " + hours.ClockText(o.Timers.PickupDeadline, hours.Location(o.StoreTimeZone, time.UTC), now)
	case domain.EscalateNotAccepted:
		return fmt.Sprintf("not accepted within %s of the store's open time since confirmation", s.cfg.NotAcceptedAfter)
	}
	return ""
}
