package inventory_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// mixDuration is how long the random mix runs; the issue caps it at 10 s.
const mixDuration = 10 * time.Second

func TestRandomMixOfHoldsAndAdjustmentsKeepsInvariantsAndLedger(t *testing.T) {
	const sweep = 100 * time.Millisecond
	e := newEnv(t, withSweeper(sweep))
	e.addCopy(withSweeper(sweep)) // two copies, two sweepers
	stores := []string{"m1", "m2"}
	skus := []string{"HOT-A", "HOT-B", "HOT-C", "HOT-D"}
	for _, st := range stores {
		e.createStore(storeAt(st, 47.61, -122.33))
		for i, sku := range skus {
			e.setStock(st, sku, 40, int32(i%3))
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	deadlocks := retries(t, "deadlock")

	var (
		ops      [8]atomic.Int64 // by kind, see names
		names    = [8]string{"reserve", "retry", "release order", "release line", "commit", "adjust", "set", "extend"}
		refused  atomic.Int64
		stopAt   = time.Now().Add(mixDuration)
		wg       sync.WaitGroup
		failOnce sync.Once
		fail     = func(format string, args ...any) { failOnce.Do(func() { t.Errorf(format, args...) }) }
	)
	// Meanwhile, the invariants must hold in every committed state, not only at the end.
	checkerDone := make(chan struct{})
	go func() {
		defer close(checkerDone)
		for time.Now().Before(stopAt) {
			res, err := e.admin.CheckInvariants(t.Context(), &inventoryv1.CheckInvariantsRequest{})
			if err != nil || !res.GetOk() {
				fail("invariants during the mix: %v %v", err, res.GetViolations())
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()

	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			type placed struct {
				req   *inventoryv1.ReserveHoldsRequest
				holds []string
			}
			var mine []placed
			pick := func() (placed, bool) {
				if len(mine) == 0 {
					return placed{}, false
				}
				return mine[rng.IntN(len(mine))], true
			}
			for n := 0; time.Now().Before(stopAt); n++ {
				switch r := rng.IntN(100); {
				case r < 40: // reserve 1-3 lines, maybe the same SKU twice
					ops[0].Add(1)
					store := stores[rng.IntN(len(stores))]
					var args []any
					for range 1 + rng.IntN(3) {
						args = append(args, skus[rng.IntN(len(skus))], 1+rng.IntN(3))
					}
					req := order(fmt.Sprintf("w%d-o%d", w, n), store, args...)
					if rng.IntN(3) == 0 {
						req.ExpireTime = timestamppb.New(time.Now().Add(time.Duration(300+rng.IntN(1500)) * time.Millisecond))
					}
					res, err := e.reserve(req)
					if err != nil {
						fail("reserve %s: %v", req.GetOrderId(), err)
						return
					}
					if res.GetOutcome() == reserved {
						var ids []string
						for _, h := range res.GetHolds() {
							ids = append(ids, h.GetHoldId())
						}
						mine = append(mine, placed{req, ids})
					}
				case r < 45: // a retry returns the same holds, whatever became of them
					ops[1].Add(1)
					p, ok := pick()
					if !ok {
						continue
					}
					p.req.ExpireTime = timestamppb.New(time.Now().Add(time.Minute))
					res, err := e.reserve(p.req)
					if err != nil {
						fail("retry %s: %v", p.req.GetOrderId(), err)
						return
					}
					var ids []string
					for _, h := range res.GetHolds() {
						ids = append(ids, h.GetHoldId())
					}
					if !slices.Equal(ids, p.holds) {
						fail("retry of %s answered holds %v, want %v", p.req.GetOrderId(), ids, p.holds)
					}
				case r < 55:
					ops[2].Add(1)
					if p, ok := pick(); ok {
						e.release(p.req.GetOrderId(), "")
					}
				case r < 62:
					ops[3].Add(1)
					if p, ok := pick(); ok {
						e.release(p.req.GetOrderId(), p.req.GetLines()[rng.IntN(len(p.req.GetLines()))].GetLineId())
					}
				case r < 72:
					ops[4].Add(1)
					if p, ok := pick(); ok {
						e.commit(p.req.GetOrderId())
					}
				case r < 90: // a delivery, sale, damage or count, refused when it would undercut holds
					ops[5].Add(1)
					delta := int32(1 + rng.IntN(6))
					reason := inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY
					switch rng.IntN(4) {
					case 0:
						delta, reason = -delta, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE
					case 1:
						delta, reason = -delta, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE
					case 2:
						reason = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_RETURN
					}
					_, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: stores[rng.IntN(len(stores))], Sku: skus[rng.IntN(len(skus))],
						Delta: delta, Reason: reason, IdempotencyKey: fmt.Sprintf("w%d-a%d", w, n)})
					if isStatus(err, codes.FailedPrecondition) {
						refused.Add(1)
					} else if err != nil {
						fail("adjust: %v", err)
						return
					}
				case r < 95:
					ops[6].Add(1)
					_, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: stores[rng.IntN(len(stores))], Sku: skus[rng.IntN(len(skus))],
						OnHand: int32(rng.IntN(50)), SafetyStock: int32(rng.IntN(3)), IdempotencyKey: fmt.Sprintf("w%d-s%d", w, n)})
					if isStatus(err, codes.FailedPrecondition) {
						refused.Add(1)
					} else if err != nil {
						fail("set stock: %v", err)
						return
					}
				default:
					ops[7].Add(1)
					if p, ok := pick(); ok {
						var res inventoryv1.ExtendHoldsResponse
						if err := e.call(inventory.SubjectExtendHolds, &inventoryv1.ExtendHoldsRequest{OrderId: p.req.GetOrderId(),
							ExpireTime: timestamppb.New(time.Now().Add(time.Duration(200+rng.IntN(1000)) * time.Millisecond))}, &res); err != nil {
							fail("extend: %v", err)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	<-checkerDone
	var summary []string
	for i, n := range names {
		summary = append(summary, fmt.Sprintf("%s %d", n, ops[i].Load()))
	}
	t.Logf("ops: %v; %d stock changes refused", summary, refused.Load())
	t.Logf("holds by state: open %d, committed %d, released %d, expired %d",
		e.count(`SELECT count(*) FROM holds WHERE state = 'open'`), e.count(`SELECT count(*) FROM holds WHERE state = 'committed'`),
		e.count(`SELECT count(*) FROM holds WHERE state = 'released'`), e.count(`SELECT count(*) FROM holds WHERE state = 'expired'`))

	e.requireInvariants()
	e.requireLedgerMatches()
	// Every hold ended at most once, and an ended hold has exactly one ending in the ledger.
	if n := e.count(`SELECT count(*) FROM holds h WHERE (SELECT count(*) FROM movements m
			WHERE m.hold_id = h.id AND m.kind IN ('hold_released', 'hold_committed')) <> CASE WHEN h.state = 'open' THEN 0 ELSE 1 END`); n != 0 {
		t.Errorf("%d holds whose ledger endings do not match their state", n)
	}
	if n := retries(t, "deadlock") - deadlocks; n != 0 {
		t.Errorf("%v transactions deadlocked (and were retried): lock order is not deterministic", n)
	}
	if ops[0].Load() < 100 {
		t.Errorf("only %d reserves in %v: the mix did not exercise much", ops[0].Load(), mixDuration)
	}
}
