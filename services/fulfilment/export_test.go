package fulfilment

import (
	"context"
	"time"
)

// QueueAhead is queueAhead as a checkout calls it (the shared read on the pool), for tests.
func (s *Service) QueueAhead(ctx context.Context, storeID string) (int, error) {
	return s.queueAhead(ctx, nil, storeID)
}

// QueuedChanges is how many changes of orders wait for the running combined one, for tests.
func (s *Service) QueuedChanges() int { return s.changes.Queued() }

// ClaimEffectsSQL is the effects worker's claim, for tests of its plan.
const ClaimEffectsSQL = claimEffectsSQL

// LoseCommitReplies makes combined changes fail after they commit, as a connection lost during
// COMMIT does, for tests.
func LoseCommitReplies(s *Service, on bool) { s.loseCommitReply.Store(on) }

// FailStoreLookups makes lookups of stores not cached fail as Unavailable, for tests.
func FailStoreLookups(s *Service, on bool) { s.stores.failLookups.Store(on) }

// SetEffectLease sets how long a claimed effect is left to its worker (rounds take half), for
// tests; it must be called before any worker runs, and the returned func restores it.
func SetEffectLease(d time.Duration) (restore func()) {
	old := effectLease
	effectLease = d
	return func() { effectLease = old }
}
