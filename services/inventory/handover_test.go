package inventory_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// A commit's hand-over dated before its hold was placed (a zero Timestamp from a client is
// 1970; a clock far behind) is taken as no earlier than the hold: its goods come off on hand.
// Before, it passed the count taken before the hold as having seen them gone, took nothing
// off, and the units that left the store were promised again.
func TestACommitHandedOverBeforeItsHoldExistedStillSells(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("ho-1", 47.61, -122.33))
	e.setStock("ho-1", "SKU-A", 10, 0) // a count: now
	time.Sleep(10 * time.Millisecond)
	e.mustReserve(order("o-1", "ho-1", "SKU-A", 3))
	var res inventoryv1.CommitHoldsResponse
	if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "o-1",
		OccurTime: &timestamppb.Timestamp{}}, &res); err != nil {
		t.Fatal(err)
	}
	e.requireInvariants()
	if l := e.level("ho-1", "SKU-A"); l.GetOnHand() != 7 || l.GetReserved() != 0 {
		t.Fatalf("commit of 3 units handed over 'in 1970': on_hand %d, reserved %d; want 7, 0", l.GetOnHand(), l.GetReserved())
	}
}

// A correction found by counting (AdjustStock COUNT) is what was counted less on hand as Handoff
// shows it, so it measures the shelf again, as a count does. Here 10 on hand, 5 held by an order
// handed over before the counts; a count finds 2 (the 5 gone, 3 more lost) and is clamped at the
// 5 reserved; one more unit is then found: the shelf holds 3, Handoff shows 5, so the
// correction is -2 (clamped too). The commit must leave the 3 on the shelf: it takes off what
// the correction could not, not that and what the count before it could not as well.
func TestACountCorrectionMeasuresTheShelfAgain(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("ho-2", 47.61, -122.33))
	e.setStock("ho-2", "SKU-C", 10, 0)
	e.mustReserve(order("o-3", "ho-2", "SKU-C", 5))
	// The hold was placed a while ago and its order handed over 5 minutes ago, inventory away.
	if _, err := e.pool.Exec(e.ctx(), `UPDATE holds SET create_time = now() - interval '10 minutes' WHERE order_id = 'o-3'`); err != nil {
		t.Fatal(err)
	}
	handed := time.Now().Add(-5 * time.Minute)
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "ho-2", Sku: "SKU-C", OnHand: 2, KeepSafetyStock: true,
		ClampToReserved: true, IdempotencyKey: nextKey("set")}); err != nil {
		t.Fatal(err)
	}
	shown := e.level("ho-2", "SKU-C").GetOnHand()
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "ho-2", Sku: "SKU-C", Delta: 3 - shown,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_COUNT, ClampToReserved: true, IdempotencyKey: nextKey("adj")}); err != nil {
		t.Fatal(err)
	}
	var res inventoryv1.CommitHoldsResponse
	if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "o-3", OccurTime: timestamppb.New(handed)}, &res); err != nil {
		t.Fatal(err)
	}
	e.requireInvariants()
	if l := e.level("ho-2", "SKU-C"); l.GetOnHand() != 3 || l.GetReserved() != 0 {
		t.Fatalf("after the commit: on_hand %d, reserved %d; the shelf holds 3 (want 3, 0)", l.GetOnHand(), l.GetReserved())
	}
}
