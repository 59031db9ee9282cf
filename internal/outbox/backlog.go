package outbox

import "github.com/handoff-dev/handoff/internal/backlog"

// Backlog is the outbox's queue as a service's /metrics reports it (see package backlog): the
// events committed and not yet relayed, and how long the oldest has waited. While a relay
// runs, the age stays within a poll interval (a second); it grows when no copy relays (NATS
// unreachable, JetStream refusing, a copy frozen holding the relay's lock).
func Backlog() backlog.Query {
	return backlog.Waiting(
		backlog.Gauge{Name: "handoff_outbox_backlog_events", Help: "Events committed to the schema's outbox and not yet relayed to JetStream (counted up to 100,000)."},
		backlog.Gauge{Name: "handoff_outbox_oldest_event_age_seconds", Help: "How long the oldest event not yet relayed has waited; about a second at most while a relay runs."},
		"outbox", "seq", "occurred_at")
}
