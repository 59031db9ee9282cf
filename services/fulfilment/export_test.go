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

// FailStoreLookups makes reads of stores from inventory fail as Unavailable (a store cached,
// even stale, is still used), for tests.
func FailStoreLookups(s *Service, on bool) { s.stores.failLookups.Store(on) }

// AfterStoreRead makes Accept and MarkReady call fn between reading the store's details and
// their transition, for tests (nil: nothing).
func AfterStoreRead(s *Service, fn func()) {
	if fn == nil {
		s.storeReadHook.Store(nil)
		return
	}
	s.storeReadHook.Store(&fn)
}

// StoreCacheGeneration is how many times the store cache marked stores stale, for tests.
func StoreCacheGeneration(s *Service) uint64 { return s.stores.generation() }

// SetEffectLease sets how long a claimed effect is left to its worker (rounds take half), for
// tests; it must be called before any worker runs, and the returned func restores it.
func SetEffectLease(d time.Duration) (restore func()) {
	old := effectLease
	effectLease = d
	return func() { effectLease = old }
}

// MakeReadsStale makes the next n changes of orders (made together or alone) write their order
// as if another transaction had written it since they read it, for tests: updateOrder refuses
// each of them (40001).
func MakeReadsStale(s *Service, n int32) { s.staleReads.Store(n) }

// CheckEventsStream is one look of the stream watch (re-announcing the open orders when the
// events stream was made anew), for tests; it returns how many orders it announced again.
func (s *Service) CheckEventsStream(ctx context.Context) (int, error) {
	return s.checkEventsStream(ctx)
}

// OnReannounced runs f after each re-announcement has committed and before its stream is
// remembered, for tests; nil removes it.
func OnReannounced(s *Service, f func()) {
	if f == nil {
		s.reannouncedHook.Store(nil)
		return
	}
	s.reannouncedHook.Store(&f)
}

// SetReannounceBatch sets how many open orders a re-announcement's transaction takes, for
// tests; the returned func restores it.
func SetReannounceBatch(n int) (restore func()) {
	old := reannounceBatch
	reannounceBatch = n
	return func() { reannounceBatch = old }
}
