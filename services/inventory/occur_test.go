package inventory_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/demo"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// A till's sales and counts, reported after the fact, arrive out of the order they happened
// in. Each is applied as of when it happened: a count taken before sales already recorded
// keeps them, a sale from before the last count (in the count already) is not taken off
// again, and a count older than the last one changes nothing. The ledger records every one.
func TestStockChangesReportedAfterTheFactApplyInTheOrderTheyHappened(t *testing.T) {
	e := newEnv(t)
	const store, sku = "occ-1", "LATTE"
	e.createStore(storeAt(store, 47.61, -122.33))
	now := time.Now()
	ago := func(m int) *timestamppb.Timestamp { return timestamppb.New(now.Add(-time.Duration(m) * time.Minute)) }
	adjust := func(reason inventoryv1.AdjustmentReason, delta int32, at *timestamppb.Timestamp, key string) *inventoryv1.AdjustStockResponse {
		t.Helper()
		res, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: delta, Reason: reason,
			IdempotencyKey: key, OccurTime: at})
		if err != nil {
			t.Fatalf("adjust %+d: %v", delta, err)
		}
		return res
	}
	count := func(onHand int32, at *timestamppb.Timestamp, key string) *inventoryv1.SetStockResponse {
		t.Helper()
		res, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: onHand, KeepSafetyStock: true,
			IdempotencyKey: key, OccurTime: at})
		if err != nil {
			t.Fatalf("count %d: %v", onHand, err)
		}
		return res
	}
	expect := func(what string, want int32, m *inventoryv1.StockMovement, note string) {
		t.Helper()
		if got := e.level(store, sku).GetOnHand(); got != want {
			t.Fatalf("%s: on hand %d, want %d", what, got, want)
		}
		if !strings.Contains(m.GetNote(), note) || m.GetOccurTime() == nil {
			t.Fatalf("%s: the movement says %q (happened %v); want %q and when it happened", what, m.GetNote(), m.GetOccurTime(), note)
		}
	}
	sale, delivery := inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY

	expect("a delivery an hour ago", 20, adjust(delivery, 20, ago(60), "d-1").GetMovement(), "")
	expect("a sale ten minutes ago", 18, adjust(sale, -2, ago(10), "s-1").GetMovement(), "")
	// A count of 17 taken twenty minutes ago, before that sale: 17, less the sale since.
	first := count(17, ago(20), "c-1")
	expect("a count from before the sale", 15, first.GetMovement(), "-2 recorded since")
	// A sale half an hour ago is in that count already.
	m := adjust(sale, -1, ago(30), "s-2").GetMovement()
	expect("a sale from before the count", 15, m, "before the count")
	if m.GetOnHandDelta() != 0 {
		t.Fatalf("a sale from before the count moved on hand by %d", m.GetOnHandDelta())
	}
	expect("a count older than the last", 15, count(99, ago(25), "c-2").GetMovement(), "before the count")
	expect("a sale after the count", 14, adjust(sale, -1, ago(5), "s-3").GetMovement(), "")

	// Retries answer as the first time and change nothing.
	again := count(17, ago(20), "c-1")
	if again.GetMovement().GetId() != first.GetMovement().GetId() || again.GetLevel().GetOnHand() != 15 {
		t.Fatalf("the count retried: %v; want the first answer (movement %d, on hand 15)", again, first.GetMovement().GetId())
	}
	if got := adjust(sale, -1, ago(30), "s-2").GetMovement(); got.GetId() != m.GetId() {
		t.Fatalf("the early sale retried made movement %d; want the first, %d", got.GetId(), m.GetId())
	}
	expect("after the retries", 14, m, "before the count")

	_, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -1, Reason: sale,
		IdempotencyKey: "s-future", OccurTime: timestamppb.New(now.Add(time.Hour))})
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
	_, err = e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 3,
		IdempotencyKey: "c-old", OccurTime: timestamppb.New(now.Add(-25 * time.Hour))})
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
	if got := e.level(store, sku).GetOnHand(); got != 14 {
		t.Fatalf("after refused changes: on hand %d, want 14", got)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A till sale shortened to what was reserved (on hand kept at the reserved units) still took
// its units off the shelf: a count from before it, arriving after, keeps the whole sale, not
// only what was applied.
func TestALateCountKeepsAShortenedSaleWhole(t *testing.T) {
	e := newEnv(t)
	const store, sku = "occ-2", "LATTE"
	e.createStore(storeAt(store, 47.61, -122.33))
	now := time.Now()
	ago := func(m int) *timestamppb.Timestamp { return timestamppb.New(now.Add(-time.Duration(m) * time.Minute)) }
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: 5,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "d", OccurTime: ago(60)}); err != nil {
		t.Fatal(err)
	}
	e.mustReserve(order("o1", store, sku, 5)) // all 5 held for an order
	sale, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -2,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "s", OccurTime: ago(10), ClampToReserved: true})
	if err != nil || sale.GetMovement().GetOnHandDelta() != 0 || sale.GetMovement().GetRequested() != -2 {
		t.Fatalf("the till's sale of 2: %v, %v; want it kept at the reserved 5, recording -2 asked", sale, err)
	}
	res, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 9, KeepSafetyStock: true,
		IdempotencyKey: "c", OccurTime: ago(20), ClampToReserved: true})
	if err != nil || res.GetLevel().GetOnHand() != 7 || res.GetMovement().GetRequested() != 9 {
		t.Fatalf("a count of 9 from before the sale: %v, %v; want on hand 7, recording 9 counted", res, err)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A count applied once and retried after it turned 24 hours old (the vendor's retry of an
// answer it lost) is answered as the first time, not refused for its age.
func TestACountRetriedOnceItIsOldIsAnsweredAsFirst(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("occ-3", 47.61, -122.33))
	req := &inventoryv1.SetStockRequest{StoreId: "occ-3", Sku: "LATTE", OnHand: 4, KeepSafetyStock: true, IdempotencyKey: "c",
		OccurTime: timestamppb.New(time.Now().Add(-24*time.Hour + time.Second))}
	first, err := e.admin.SetStock(e.ctx(), req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	again, err := e.admin.SetStock(e.ctx(), req)
	if err != nil || again.GetMovement().GetId() != first.GetMovement().GetId() {
		t.Fatalf("the count retried: %v, %v; want the first answer", again, err)
	}
	req.IdempotencyKey = "c-new"
	_, err = e.admin.SetStock(e.ctx(), req)
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
}

// The demo load is a count as of its time: a till sale from before it, reported after, is in
// it already.
func TestASaleFromBeforeTheInitialLoadIsInItAlready(t *testing.T) {
	e := newEnv(t)
	chain := demo.Seattle()
	before := time.Now().Add(-time.Minute)
	if _, err := e.copies[0].LoadDemo(e.ctx(), chain); err != nil {
		t.Fatal(err)
	}
	sku := chain.SKUs()[0].SKU
	want := chain.Stock("sea-pike-place-01", sku).OnHand
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "sea-pike-place-01", Sku: sku, Delta: -1,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "s", OccurTime: timestamppb.New(before),
		ClampToReserved: true}); err != nil {
		t.Fatal(err)
	}
	if got := e.level("sea-pike-place-01", sku).GetOnHand(); got != want {
		t.Fatalf("on hand %d; want %d (the sale came before the load)", got, want)
	}
}

// A count taken a moment ago arrives while shoppers' orders of that SKU are being placed and
// collected: every sale committed since the count was taken is kept, whichever side of the
// count's scan (before or after it locks the row) it landed on.
func TestALateCountAmidConcurrentSalesKeepsEverySaleSince(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	const store, sku, buyers = "occ-4", "HOT", 60
	e.createStore(storeAt(store, 47.61, -122.33))
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: 500,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "d",
		OccurTime: timestamppb.New(time.Now().Add(-time.Hour))}); err != nil {
		t.Fatal(err)
	}
	takenAt := timestamppb.New(time.Now().Add(-time.Second)) // before every sale below
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Go(func() {
			id := fmt.Sprintf("buyer-%02d", i)
			if res, err := e.reserve(order(id, store, sku, 1)); err != nil || res.GetOutcome() != reserved {
				t.Errorf("reserve %s: %v, %v", id, res, err)
				return
			}
			e.changeHolds(commitChange(id))
		})
		if i == buyers/2 {
			wg.Go(func() {
				if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 300,
					KeepSafetyStock: true, IdempotencyKey: "count", OccurTime: takenAt}); err != nil {
					t.Errorf("count: %v", err)
				}
			})
		}
	}
	wg.Wait()
	if got := e.level(store, sku).GetOnHand(); got != 300-buyers {
		t.Fatalf("on hand %d; want %d (counted 300, then %d sold)", got, 300-buyers, buyers)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A till sale reported while the SKU shows nothing on hand (the till restocked without saying)
// is recorded with what was sold, not refused: a count from before it, arriving later, must
// keep it.
func TestATillSaleAtNothingOnHandIsKeptForALateCount(t *testing.T) {
	e := newEnv(t)
	const store, sku = "occ-5", "LATTE"
	e.createStore(storeAt(store, 47.61, -122.33))
	now := time.Now()
	ago := func(m int) *timestamppb.Timestamp { return timestamppb.New(now.Add(-time.Duration(m) * time.Minute)) }
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: 2,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "d", OccurTime: ago(60)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -2,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "s-1", OccurTime: ago(50)}); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -1, ClampToReserved: true,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, IdempotencyKey: "s-2", OccurTime: ago(10)})
	if err != nil || res.GetMovement().GetOnHandDelta() != 0 || res.GetMovement().GetRequested() != -1 ||
		!strings.Contains(res.GetMovement().GetNote(), "more than on hand") {
		t.Fatalf("a till sale at nothing on hand: %v, %v; want it recorded at 0, -1 asked", res, err)
	}
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 6, KeepSafetyStock: true,
		IdempotencyKey: "c", OccurTime: ago(20)}); err != nil {
		t.Fatal(err)
	}
	if got := e.level(store, sku).GetOnHand(); got != 5 {
		t.Fatalf("on hand %d; want 5 (counted 6, then 1 sold)", got)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A correction found by counting (AdjustStock's COUNT) is a count too: an absolute count
// taken before it, arriving after, changes nothing, and the correction is not added to it.
func TestACountCorrectionIsACount(t *testing.T) {
	e := newEnv(t)
	const store, sku = "occ-6", "LATTE"
	e.createStore(storeAt(store, 47.61, -122.33))
	now := time.Now()
	ago := func(m int) *timestamppb.Timestamp { return timestamppb.New(now.Add(-time.Duration(m) * time.Minute)) }
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: 10,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, IdempotencyKey: "d", OccurTime: ago(60)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -2,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT, IdempotencyKey: "missing", OccurTime: ago(5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 8, KeepSafetyStock: true,
		IdempotencyKey: "till-count", OccurTime: ago(10)}); err != nil {
		t.Fatal(err)
	}
	if got := e.level(store, sku).GetOnHand(); got != 8 {
		t.Fatalf("on hand %d; want 8 (the correction at -5m is the newer count)", got)
	}
}

// A count superseded by a later one leaves on hand, but the safety stock it sets is a
// setting, not part of the count: it applies. A retry under its key with another safety
// stock, or a sale's key used again for another time, is another change: refused.
func TestASupersededCountStillSetsTheSafetyStock(t *testing.T) {
	e := newEnv(t)
	const store, sku = "occ-7", "LATTE"
	e.createStore(storeAt(store, 47.61, -122.33))
	e.setStock(store, sku, 10, 0)
	old := &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: 4, SafetyStock: 3, IdempotencyKey: "c-old",
		OccurTime: timestamppb.New(time.Now().Add(-10 * time.Minute))}
	res, err := e.admin.SetStock(e.ctx(), old)
	if err != nil || res.GetLevel().GetOnHand() != 10 || res.GetLevel().GetSafetyStock() != 3 {
		t.Fatalf("a superseded count with safety stock 3: %v, %v; want on hand 10, safety stock 3", res, err)
	}
	old.SafetyStock = 5
	_, err = e.admin.SetStock(e.ctx(), old)
	requireStatus(t, err, codes.FailedPrecondition, "idempotency_key")

	sale := &inventoryv1.AdjustStockRequest{StoreId: store, Sku: sku, Delta: -1, IdempotencyKey: "s",
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, OccurTime: timestamppb.New(time.Now().Add(time.Minute))}
	if _, err := e.admin.AdjustStock(e.ctx(), sale); err != nil {
		t.Fatal(err)
	}
	sale.OccurTime = timestamppb.New(time.Now().Add(2 * time.Minute))
	_, err = e.admin.AdjustStock(e.ctx(), sale)
	requireStatus(t, err, codes.FailedPrecondition, "idempotency_key")
	e.requireInvariants()
	e.requireLedgerMatches()
}
