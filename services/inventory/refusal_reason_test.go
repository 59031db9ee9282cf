package inventory_test

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Each refusal of a stock change for the stock as it stands carries, over gRPC, a
// google.rpc.ErrorInfo whose reason says which (below 0, below the reserved units, above the
// maximum), so that the pos-adapter decides from it, not from the message; the message still
// names the field. The literal strings are the contract the pos-adapter reads.
func TestStockRefusalsCarryAMachineReadableReason(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "CAKE", 5, 0)
	e.mustReserve(order("o1", "s1", "CAKE", 4))
	e.setStock("s1", "FULL", 1_000_000_000, 0)

	adjust := func(sku string, delta int32, reason inventoryv1.AdjustmentReason, key string) error {
		_, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: sku, Delta: delta, Reason: reason, IdempotencyKey: key})
		return err
	}
	damage, delivery := inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGE, inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY
	_, countErr := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "CAKE", OnHand: 3, IdempotencyKey: "count-low"})
	if err := adjust("CAKE", -1, damage, "used-key"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, field, reason string
		err                 error
	}{
		{"a sale of a SKU never stocked", "delta", "STOCK_BELOW_ZERO", adjust("NEVER", -1, damage, "k-never")},
		{"a change below the reserved units", "delta", "STOCK_BELOW_RESERVED", adjust("CAKE", -2, damage, "k-reserved")},
		{"a count below the reserved units", "on_hand", "STOCK_BELOW_RESERVED", countErr},
		{"a delivery past the maximum", "delta", "STOCK_ABOVE_MAXIMUM", adjust("FULL", 1, delivery, "k-max")},
		{"an idempotency key used for another change", "idempotency_key", "", adjust("CAKE", -2, damage, "used-key")},
	} {
		st, _ := status.FromError(tc.err)
		if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), tc.field+": ") {
			t.Errorf("%s: %v; want FailedPrecondition naming %s", tc.name, tc.err, tc.field)
			continue
		}
		var infos []*errdetails.ErrorInfo
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				infos = append(infos, info)
			}
		}
		switch {
		case tc.reason == "" && len(infos) != 0:
			t.Errorf("%s: ErrorInfo %v; want none (not a refusal for the stock as it stands)", tc.name, infos)
		case tc.reason != "" && (len(infos) != 1 || infos[0].GetReason() != tc.reason || infos[0].GetDomain() != "inventory.handoff.dev"):
			t.Errorf("%s: ErrorInfo %v; want one of domain inventory.handoff.dev, reason %s", tc.name, infos, tc.reason)
		}
	}
}
