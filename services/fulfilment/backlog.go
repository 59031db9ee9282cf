package fulfilment

import (
	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// Backlog is fulfilment's work in waiting as /metrics reports it (package backlog), beside its
// outbox: order timers past due (expiry, reminders, escalations, hold refreshes, and the
// recovery of PENDING orders), inventory effects not yet carried out (releases, commits and
// extensions of holds), and customer notifications past due. While the loops run, a timer is
// at most a sweep (a second) late and an effect is done within seconds; an effect older than
// a few minutes means inventory keeps refusing or cannot be reached, and its holds wait.
func Backlog() []backlog.Query {
	return []backlog.Query{
		backlog.Late(backlog.Gauge{Name: "handoff_fulfilment_timers_late_seconds",
			Help: "How far past due the most overdue order timer is (expiry, reminder, escalation, hold refresh, recovery of a PENDING order); a sweep (1s) at most while the timer and recovery loops run."},
			"orders", "timer_at", "timer_at IS NOT NULL"),
		backlog.Waiting(
			backlog.Gauge{Name: "handoff_fulfilment_effects_backlog", Help: "Inventory effects of committed order changes (release, commit, extend holds) not yet carried out (counted up to 100,000)."},
			backlog.Gauge{Name: "handoff_fulfilment_oldest_effect_age_seconds", Help: "How long the oldest inventory effect not yet carried out has waited; seconds while inventory answers."},
			"order_effects", "id", "create_time"),
		notify.Backlog(),
	}
}
