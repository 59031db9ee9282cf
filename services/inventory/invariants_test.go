package inventory_test

import (
	"testing"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// CheckInvariants sees an oversell at the time of reserving even when today's levels look fine:
// a hold the ledger says was placed beyond on hand less safety stock (here a forged ledger row
// whose deltas are zero, so every sum still adds up) is reported, naming the rule.
func TestCheckInvariantsFindsAHoldPlacedBeyondOnHandLessSafetyStock(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("inv-1", 47.61, -122.33))
	e.setStock("inv-1", "LATTE-16", 10, 2)
	e.mustReserve(order("o-1", "inv-1", "LATTE-16", 8)) // exactly what may be promised
	e.requireInvariants()

	if _, err := e.pool.Exec(e.ctx(), `INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta,
		on_hand_after, reserved_after, safety_stock_after, actor_kind, actor_id, order_id)
		VALUES ('inv-1', 'LATTE-16', 'hold_placed', 0, 0, 10, 9, 2, 'system', 'forged', 'o-2')`); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || len(res.GetViolations()) != 1 || res.GetViolations()[0].GetRule() != inventory.RuleHeldWithinStock {
		t.Fatalf("CheckInvariants = ok %v, %v; want one violation of %q", res.GetOk(), res.GetViolations(), inventory.RuleHeldWithinStock)
	}
}
