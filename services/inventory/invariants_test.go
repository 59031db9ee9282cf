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

// CheckInvariants sees a hold that never ended in time and one whose ledger does not tell how it
// ended, though every sum adds up: (a) an open hold an hour past its deadline (no sweep ran), (b)
// a hold recorded as committed whose ledger end is a release (on hand never came down: a sale
// lost). Before, both passed as ok.
func TestCheckInvariantsFindsAnOverdueHoldAndOneEndedOtherwiseThanItsLedgerSays(t *testing.T) {
	e := newEnv(t) // no sweeper running
	e.createStore(storeAt("inv-2", 47.61, -122.33))
	e.setStock("inv-2", "SKU-L", 10, 0)
	e.mustReserve(order("leak", "inv-2", "SKU-L", 2))
	e.mustReserve(order("lost", "inv-2", "SKU-L", 3))
	e.release("lost", "")
	e.requireInvariants()
	if _, err := e.pool.Exec(e.ctx(), `UPDATE holds SET expire_time = now() - interval '1 hour' WHERE order_id = 'leak'`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx(), `UPDATE holds SET state = 'committed', release_reason = '' WHERE order_id = 'lost'`); err != nil {
		t.Fatal(err)
	}
	for _, store := range []string{"", "inv-2"} {
		res, err := e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{StoreId: store})
		if err != nil {
			t.Fatal(err)
		}
		rules := map[string]int{}
		for _, v := range res.GetViolations() {
			rules[v.GetRule()]++
			t.Logf("store %q: %s: %s", store, v.GetRule(), v.GetDetail())
		}
		if res.GetOk() || rules[inventory.RuleHoldEndsInTime] != 1 || rules[inventory.RuleHoldEndsOnce] != 1 {
			t.Errorf("store %q: ok %v, violations %v; want one of %q and one of %q", store, res.GetOk(), rules,
				inventory.RuleHoldEndsInTime, inventory.RuleHoldEndsOnce)
		}
	}
}
