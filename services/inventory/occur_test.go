package inventory_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

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
