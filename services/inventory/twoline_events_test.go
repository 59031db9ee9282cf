package inventory_test

import (
	"testing"
)

// A reservation of two lines writes two StockLevelChanged events in one EnqueueBatch, through
// queuedTx (ledger.go), a pgx.Tx that only queues and has no connection. The second event
// comes within outbox.NotifyGap of the first, so the outbox asks the transaction for its
// schema (pgdb.SchemaOf(tx.Conn())): queuedTx's embedded Tx is nil, and the reservation must
// not fail for it.
func TestAReservationOfTwoLinesIsMadeAndAnnounced(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "MILK", 10, 0)
	e.setStock("s1", "BEAN", 10, 0)

	res := e.mustReserve(order("o-two-lines", "s1", "MILK", 1, "BEAN", 1))
	if res.GetOutcome() != reserved {
		t.Fatalf("outcome %v (%s), want reserved", res.GetOutcome(), res.GetMessage())
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE subject LIKE 'handoff.inventory.stock.%'`); n < 4 {
		t.Errorf("%d stock events in the outbox, want the two levels set and the two reserved", n)
	}
	e.requireInvariants()
}
