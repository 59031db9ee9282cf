package posadapter

import "github.com/handoff-dev/handoff/internal/backlog"

// Backlog is the adapter's work in waiting as /metrics reports it (package backlog), beside its
// outbox: how far past due the most overdue delivery to a vendor's webhook is. A receiver that
// refuses is retried later, so this grows only when no dispatcher sends (stopped, or stuck).
func Backlog() []backlog.Query {
	return []backlog.Query{backlog.Late(backlog.Gauge{Name: "handoff_pos_webhooks_late_seconds",
		Help: "How far past due the most overdue delivery to a store's POS webhook is; about the dispatcher's poll while it runs."},
		"webhook_deliveries", "next_attempt_time", "state = 'pending'")}
}
