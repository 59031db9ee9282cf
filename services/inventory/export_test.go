package inventory

import (
	"context"
	"time"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// FailDropStockDelta makes s's next transactions write one stock row fewer than they decided
// (while expecting all of them): the row count check must then refuse to commit.
func FailDropStockDelta(s *Service, on bool) { s.failDropDelta.Store(on) }

// CachedStore returns the store cache's entry for id: its state and version.
func CachedStore(s *Service, id string) (state string, version int64, ok bool) {
	e := s.stores.get([]string{id})[id]
	if e == nil {
		return "", 0, false
	}
	return e.row.state, e.row.version, true
}

// KeyedPlansSQL and KeyedStatements: the plan settings of the transactions over stock and
// holds and of the locator's stock read, and the statements they run that read or change rows
// by key.
var KeyedPlansSQL = keyedPlansSQL

var KeyedStatements = map[string]string{
	"lock levels": lockLevelsSQL, "batch holds": batchHoldsSQL, "changed stores": changedStoresSQL,
	"insert holds": insertHoldsSQL, "lock order holds": lockOrderHoldsSQL, "lock order levels": lockOrderLevelsSQL,
	"extend holds": extendHoldsByIDSQL, "end holds": endHoldsSQL, "apply deltas": applyDeltasSQL,
	"insert movements": insertMovementsSQL, "extend order holds": extendOrderHoldsSQL,
	"read stock": readStockSQL, "lock late holds": lockLateHoldsSQL, "lock order levels and late": lockOrderLevelsLateSQL,
	"settle late holds": markSettledLateSQL, "take from count short": takeCountShortSQL,
}

// ReserveInOneBatch decides reqs in one reserve batch, as concurrent requests sharing a
// transaction are, and returns each request's answer or error.
func ReserveInOneBatch(s *Service, reqs ...*inventoryv1.ReserveHoldsRequest) ([]*inventoryv1.ReserveHoldsResponse, []error, error) {
	jobs := make([]*reserveJob, len(reqs))
	for i, r := range reqs {
		v, err := s.validateReserve(r, time.Now())
		if err != nil {
			return nil, nil, err
		}
		jobs[i] = &reserveJob{req: v, queued: time.Now()}
	}
	answers, err := s.reserveBatch(context.Background(), jobs)
	if err != nil {
		return nil, nil, err
	}
	res, errs := make([]*inventoryv1.ReserveHoldsResponse, len(answers)), make([]error, len(answers))
	for i, a := range answers {
		res[i], errs[i] = a.res, a.err
	}
	return res, errs, nil
}

// LoseCommitReplies makes s's change_holds transactions fail after they commit, as a
// connection lost during COMMIT does, for tests.
func LoseCommitReplies(s *Service, on bool) { s.loseCommitReply.Store(on) }

// InvalidateStoreCache makes s's next use of its store cache check the whole table first.
func InvalidateStoreCache(s *Service) { s.stores.invalidate() }

// ScanBudgetPairs bounds the (store, SKU) pairs one locator scan reads.
const ScanBudgetPairs = scanBudgetPairs
