package notify

import (
	"testing"
	"time"
)

// NotifyGap is how long after a NOTIFY an Enqueue of this process leaves its own out.
const NotifyGap = notifyGap

// SetServedLookEvery sets how often Writers look whether a channel is served, until t ends.
func SetServedLookEvery(t *testing.T, d time.Duration) {
	old := servedLookEvery
	servedLookEvery = d
	t.Cleanup(func() { servedLookEvery = old })
}

// Looked reports whether w's WatchServed has looked at the table (and the look succeeded).
func Looked(w *Writer) bool { return w.served.Load() != nil }

// RoundSQL is the dispatcher's round, for tests that look at its plan.
const RoundSQL = roundSQL

// ServedGrace is how long a channel stamped by a copy counts as served.
const ServedGrace = servedGrace
