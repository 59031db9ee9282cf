package inventory

import "github.com/handoff-dev/handoff/internal/backlog"

// Backlog is inventory's work in waiting as /metrics reports it (package backlog), beside its
// outbox: how long the hold most past its deadline has stayed open. Fulfilment extends the
// holds of open orders before their deadline, and the sweeper releases the rest within
// Config.SweepInterval (5s) of it; DESIGN.md's invariant 2 allows one sweep.
func Backlog() []backlog.Query {
	return []backlog.Query{backlog.Late(backlog.Gauge{Name: "handoff_inventory_holds_overdue_seconds",
		Help: "How long the open hold most past its deadline has stayed open; under the sweep interval (5s) while the sweeper runs."},
		"holds", "expire_time", "state = 'open'")}
}
