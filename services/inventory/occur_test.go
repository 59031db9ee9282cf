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

const (
	tillSale     = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE
	tillDelivery = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY
	tillCorrect  = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT
)

// till reports one SKU's changes at one store after the fact, as a vendor POS does: each as of
// some minutes before the test began, sales shortened to what is reserved, counts keeping the
// safety stock.
type till struct {
	t          *testing.T
	e          *env
	store, sku string
	now        time.Time
}

// newTill creates store and a till reporting sku there.
func newTill(t *testing.T, e *env, store, sku string) *till {
	e.createStore(storeAt(store, 47.61, -122.33))
	return &till{t: t, e: e, store: store, sku: sku, now: time.Now()}
}

// ago is m minutes before the test began (negative: after).
func (tl *till) ago(m int) *timestamppb.Timestamp {
	return timestamppb.New(tl.now.Add(-time.Duration(m) * time.Minute))
}

func (tl *till) change(reason inventoryv1.AdjustmentReason, delta int32, key string, at *timestamppb.Timestamp) (*inventoryv1.AdjustStockResponse, error) {
	return tl.e.admin.AdjustStock(tl.e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: tl.store, Sku: tl.sku, Delta: delta,
		Reason: reason, IdempotencyKey: key, OccurTime: at, ClampToReserved: true})
}

func (tl *till) mustChange(reason inventoryv1.AdjustmentReason, delta int32, key string, at *timestamppb.Timestamp) *inventoryv1.StockMovement {
	tl.t.Helper()
	res, err := tl.change(reason, delta, key, at)
	if err != nil {
		tl.t.Fatalf("%v %+d (%s): %v", reason, delta, key, err)
	}
	return res.GetMovement()
}

func (tl *till) count(onHand int32, key string, at *timestamppb.Timestamp) (*inventoryv1.SetStockResponse, error) {
	return tl.e.admin.SetStock(tl.e.ctx(), &inventoryv1.SetStockRequest{StoreId: tl.store, Sku: tl.sku, OnHand: onHand,
		KeepSafetyStock: true, IdempotencyKey: key, OccurTime: at, ClampToReserved: true})
}

func (tl *till) mustCount(onHand int32, key string, at *timestamppb.Timestamp) *inventoryv1.SetStockResponse {
	tl.t.Helper()
	res, err := tl.count(onHand, key, at)
	if err != nil {
		tl.t.Fatalf("count %d (%s): %v", onHand, key, err)
	}
	return res
}

// expect fails the test unless on hand is want.
func (tl *till) expect(what string, want int32) {
	tl.t.Helper()
	if got := tl.e.level(tl.store, tl.sku).GetOnHand(); got != want {
		tl.t.Fatalf("%s: on hand %d, want %d", what, got, want)
	}
}

// A till's sales and counts, reported after the fact, arrive out of the order they happened
// in. Each is applied as of when it happened: a count taken before sales already recorded
// keeps them, a sale from before the last count (in the count already) is not taken off
// again, and a count older than the last one leaves on hand as it is. The ledger records
// every one, with when it happened.
func TestStockChangesReportedAfterTheFactApplyInTheOrderTheyHappened(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-1", "LATTE")
	noted := func(what string, m *inventoryv1.StockMovement, note string) {
		t.Helper()
		if !strings.Contains(m.GetNote(), note) || m.GetOccurTime() == nil {
			t.Fatalf("%s: the movement says %q (happened %v); want %q and when it happened", what, m.GetNote(), m.GetOccurTime(), note)
		}
	}

	tl.mustChange(tillDelivery, 20, "d-1", tl.ago(60))
	tl.expect("a delivery an hour ago", 20)
	tl.mustChange(tillSale, -2, "s-1", tl.ago(10))
	tl.expect("a sale ten minutes ago", 18)
	// A count of 17 taken twenty minutes ago, before that sale: 17, less the sale since.
	first := tl.mustCount(17, "c-1", tl.ago(20))
	tl.expect("a count from before the sale", 15)
	noted("the count", first.GetMovement(), "-2 recorded since")
	// A sale half an hour ago is in that count already.
	early := tl.mustChange(tillSale, -1, "s-2", tl.ago(30))
	tl.expect("a sale from before the count", 15)
	noted("the early sale", early, "before the count")
	if early.GetOnHandDelta() != 0 || early.GetRequested() != -1 {
		t.Fatalf("a sale from before the count moved on hand by %d (asked %d); want 0, -1 asked", early.GetOnHandDelta(), early.GetRequested())
	}
	noted("an older count", tl.mustCount(99, "c-2", tl.ago(25)).GetMovement(), "before the count")
	tl.expect("a count older than the last", 15)
	tl.mustChange(tillSale, -1, "s-3", tl.ago(5))
	tl.expect("a sale after the count", 14)

	// Retries answer as the first time and change nothing.
	if again := tl.mustCount(17, "c-1", tl.ago(20)); again.GetMovement().GetId() != first.GetMovement().GetId() || again.GetLevel().GetOnHand() != 15 {
		t.Fatalf("the count retried: %v; want the first answer (movement %d, on hand 15)", again, first.GetMovement().GetId())
	}
	if again := tl.mustChange(tillSale, -1, "s-2", tl.ago(30)); again.GetId() != early.GetId() {
		t.Fatalf("the early sale retried made movement %d; want the first, %d", again.GetId(), early.GetId())
	}
	tl.expect("after the retries", 14)

	_, err := tl.change(tillSale, -1, "s-future", tl.ago(-60))
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
	_, err = tl.count(3, "c-old", tl.ago(25*60))
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
	tl.expect("after refused changes", 14)
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A till sale shortened to what was reserved (on hand kept at the reserved units) still took
// its units off the shelf: a count from before it, arriving after, keeps the whole sale, not
// only what was applied.
func TestALateCountKeepsAShortenedSaleWhole(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-2", "LATTE")
	tl.mustChange(tillDelivery, 5, "d", tl.ago(60))
	e.mustReserve(order("o1", tl.store, tl.sku, 5)) // all 5 held for an order
	if sale := tl.mustChange(tillSale, -2, "s", tl.ago(10)); sale.GetOnHandDelta() != 0 || sale.GetRequested() != -2 {
		t.Fatalf("the till's sale of 2: %v; want on hand kept at the reserved 5, -2 asked", sale)
	}
	if res := tl.mustCount(9, "c", tl.ago(20)); res.GetLevel().GetOnHand() != 7 || res.GetMovement().GetRequested() != 9 {
		t.Fatalf("a count of 9 from before the sale: %v; want on hand 7, 9 counted", res)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A till sale reported while the SKU shows nothing on hand (the till restocked without saying)
// is recorded with what was sold, not refused: a count from before it, arriving later, must
// keep it.
func TestATillSaleAtNothingOnHandIsKeptForALateCount(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-5", "LATTE")
	tl.mustChange(tillDelivery, 2, "d", tl.ago(60))
	tl.mustChange(tillSale, -2, "s-1", tl.ago(50))
	if sale := tl.mustChange(tillSale, -1, "s-2", tl.ago(10)); sale.GetOnHandDelta() != 0 || sale.GetRequested() != -1 ||
		!strings.Contains(sale.GetNote(), "more than on hand") {
		t.Fatalf("a till sale at nothing on hand: %v; want it recorded at 0, -1 asked", sale)
	}
	tl.mustCount(6, "c", tl.ago(20))
	tl.expect("counted 6, then 1 sold", 5)
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A correction found by counting (AdjustStock's COUNT) is a count too: an absolute count
// taken before it, arriving after, leaves on hand as it is, and the correction is not added
// to it.
func TestACountCorrectionIsACount(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-6", "LATTE")
	tl.mustChange(tillDelivery, 10, "d", tl.ago(60))
	tl.mustChange(tillCorrect, -2, "missing", tl.ago(5))
	tl.mustCount(8, "till-count", tl.ago(10))
	tl.expect("the correction at -5m is the newer count", 8)
}

// A count superseded by a later one leaves on hand, but the safety stock it sets is a
// setting, not part of the count: it applies. A retry under its key with another safety
// stock, or a sale's key used again for another time, is another change: refused.
func TestASupersededCountStillSetsTheSafetyStock(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-7", "LATTE")
	e.setStock(tl.store, tl.sku, 10, 0)
	old := &inventoryv1.SetStockRequest{StoreId: tl.store, Sku: tl.sku, OnHand: 4, SafetyStock: 3, IdempotencyKey: "c-old", OccurTime: tl.ago(10)}
	res, err := e.admin.SetStock(e.ctx(), old)
	if err != nil || res.GetLevel().GetOnHand() != 10 || res.GetLevel().GetSafetyStock() != 3 {
		t.Fatalf("a superseded count with safety stock 3: %v, %v; want on hand 10, safety stock 3", res, err)
	}
	old.SafetyStock = 5
	_, err = e.admin.SetStock(e.ctx(), old)
	requireStatus(t, err, codes.FailedPrecondition, "idempotency_key")

	tl.mustChange(tillSale, -1, "s", tl.ago(-1))
	_, err = tl.change(tillSale, -1, "s", tl.ago(-2))
	requireStatus(t, err, codes.FailedPrecondition, "idempotency_key")
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A count applied once and retried after it turned 24 hours old (the vendor's retry of an
// answer it lost) is answered as the first time, not refused for its age.
func TestACountRetriedOnceItIsOldIsAnsweredAsFirst(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-3", "LATTE")
	at := timestamppb.New(time.Now().Add(-24*time.Hour + time.Second))
	first := tl.mustCount(4, "c", at)
	time.Sleep(1500 * time.Millisecond)
	if again := tl.mustCount(4, "c", at); again.GetMovement().GetId() != first.GetMovement().GetId() {
		t.Fatalf("the count retried: %v; want the first answer", again)
	}
	_, err := tl.count(4, "c-new", at)
	requireStatus(t, err, codes.InvalidArgument, "occur_time")
}

// The demo load is a count as of its time: a till sale from before it, reported after, is in
// it already.
func TestASaleFromBeforeTheInitialLoadIsInItAlready(t *testing.T) {
	e := newEnv(t)
	chain := demo.Seattle()
	before := timestamppb.New(time.Now().Add(-time.Minute))
	if _, err := e.copies[0].LoadDemo(e.ctx(), chain); err != nil {
		t.Fatal(err)
	}
	tl := &till{t: t, e: e, store: "sea-pike-place-01", sku: chain.SKUs()[0].SKU}
	tl.mustChange(tillSale, -1, "s", before)
	tl.expect("the sale came before the load", chain.Stock(tl.store, tl.sku).OnHand)
}

// A count taken a moment ago arrives while shoppers' orders of that SKU are being placed and
// collected: every sale committed since the count was taken is kept, whichever side of the
// count's scan (before or after it locks the row) it landed on.
func TestALateCountAmidConcurrentSalesKeepsEverySaleSince(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	const buyers = 60
	tl := newTill(t, e, "occ-4", "HOT")
	tl.mustChange(tillDelivery, 500, "d", tl.ago(60))
	takenAt := timestamppb.New(time.Now().Add(-time.Second)) // before every sale below
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Go(func() {
			id := fmt.Sprintf("buyer-%02d", i)
			if res, err := e.reserve(order(id, tl.store, tl.sku, 1)); err != nil || res.GetOutcome() != reserved {
				t.Errorf("reserve %s: %v, %v", id, res, err)
				return
			}
			e.changeHolds(commitChange(id))
		})
		if i == buyers/2 {
			wg.Go(func() {
				if _, err := tl.count(300, "count", takenAt); err != nil {
					t.Errorf("count: %v", err)
				}
			})
		}
	}
	wg.Wait()
	tl.expect(fmt.Sprintf("counted 300, then %d sold", buyers), 300-buyers)
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A SKU sold down to nothing before versions and count times were kept (what migrations 00005
// and 00006 leave: version 0, no count time, ledger rows without them) was stocked all the
// same: a till sale reported for it now is recorded with what was sold, so a late count keeps
// it. Only a SKU with no stock row at the store is refused.
func TestATillSaleAtNothingOnHandOfARowFromBeforeTheUpgradeIsKept(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-8", "LATTE")
	tl.mustChange(tillDelivery, 2, "d", nil)
	tl.mustChange(tillSale, -2, "s-1", nil)
	if _, err := e.pool.Exec(e.ctx(), `UPDATE stock SET version = 0, count_time = NULL;
		UPDATE movements SET stock_version = NULL, occur_time = NULL, requested = NULL`); err != nil {
		t.Fatal(err)
	}
	if sale := tl.mustChange(tillSale, -1, "s-2", tl.ago(10)); sale.GetRequested() != -1 {
		t.Fatalf("the sale: %v; want it recorded, -1 asked", sale)
	}
	tl.mustCount(6, "c", tl.ago(20))
	tl.expect("counted 6, then 1 sold", 5)
	e.requireInvariants()
	e.requireLedgerMatches()

	_, err := (&till{t: t, e: e, store: tl.store, sku: "NEVER-HERE"}).change(tillSale, -1, "s-3", nil)
	requireStatus(t, err, codes.FailedPrecondition, "below 0")
}

// 0001-01-01T00:00:00Z is Go's zero time, yet a time the request gave like any other: a count
// taken then is refused as too old, naming occur_time, as one a second later is (it was
// applied as a count taken now), and a sale then is recorded as happening then, before the
// last count, leaving on hand as it is (it was taken off now).
func TestTheFirstInstantOfYearOneIsAnOccurTimeLikeAnyOther(t *testing.T) {
	e := newEnv(t)
	tl := newTill(t, e, "occ-y1", "LATTE")
	tl.mustCount(10, "c-1", tl.ago(5))
	yearOne := timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, at := range []*timestamppb.Timestamp{yearOne, {Seconds: yearOne.GetSeconds() + 1}} {
		_, err := tl.count(3, fmt.Sprint("c-", at.GetSeconds()), at)
		requireStatus(t, err, codes.InvalidArgument, "occur_time")
		tl.expect(fmt.Sprintf("a count taken at %s", at.AsTime()), 10)
	}
	sale := tl.mustChange(tillSale, -2, "s-y1", yearOne)
	tl.expect("a sale at the first instant of year 1", 10)
	if !sale.GetOccurTime().AsTime().Equal(yearOne.AsTime()) {
		t.Fatalf("the sale's movement says it happened at %v; want %s", sale.GetOccurTime(), yearOne.AsTime())
	}
	if again := tl.mustChange(tillSale, -2, "s-y1", yearOne); again.GetId() != sale.GetId() {
		t.Fatalf("a retry of the sale recorded movement %d; want %d again", again.GetId(), sale.GetId())
	}
}
