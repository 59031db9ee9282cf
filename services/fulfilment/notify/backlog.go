package notify

import "github.com/handoff-dev/handoff/internal/backlog"

// Backlog is the notification queue as /metrics reports it (package backlog): how far past due
// the most overdue notification is. A failing channel's retries are due later, so this grows
// only when no dispatcher sends (stopped, or stuck), not when a receiver refuses.
func Backlog() backlog.Query {
	return backlog.Late(backlog.Gauge{Name: "handoff_notify_late_seconds",
		Help: "How far past due the most overdue customer notification is; about the dispatcher's poll (a second) while it runs."},
		"notifications", "next_attempt_at", "state = 'pending'")
}
