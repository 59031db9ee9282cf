package posadapter

import "github.com/handoff-dev/handoff/internal/backlog"

// Backlog is the adapter's work in waiting as /metrics reports it (package backlog), beside its
// outbox: how far past due the most overdue delivery to a vendor's webhook is, and how long the
// oldest ticket not yet delivered to its vendor has waited. A receiver that refuses is retried
// later, so the first grows only when no dispatcher sends (stopped, or stuck); the second grows
// too when a vendor refuses or does not answer, which the first never shows and the dead
// letters show only once the retries end (WebhookGiveUpAfter, 72 h).
func Backlog() []backlog.Query {
	return []backlog.Query{
		backlog.Late(backlog.Gauge{Name: "handoff_pos_webhooks_late_seconds",
			Help: "How far past due the most overdue delivery to a store's POS webhook is; about the dispatcher's poll while it runs."},
			"webhook_deliveries", "next_attempt_time", "state = 'pending'"),
		backlog.Late(backlog.Gauge{Name: "handoff_pos_webhook_oldest_undelivered_seconds",
			Help: "How long the oldest ticket not yet delivered to its store's POS webhook has waited (since raised, or replayed); seconds while vendors answer, growing while one refuses or does not answer."},
			"webhook_deliveries", "create_time", "state = 'pending'"),
	}
}
