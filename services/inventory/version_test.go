package inventory_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// stockEvents decodes the StockLevelChanged events of one stock row in the outbox.
func (e *env) stockEvents(store, sku string) []*inventoryv1.StockLevelChanged {
	e.t.Helper()
	var out []*inventoryv1.StockLevelChanged
	for _, b := range e.outboxEvents(inventory.SubjectStockChanged) {
		var ev inventoryv1.StockLevelChanged
		if err := proto.Unmarshal(b, &ev); err != nil {
			e.t.Fatal(err)
		}
		if ev.GetLevel().GetStoreId() == store && ev.GetLevel().GetSku() == sku {
			out = append(out, &ev)
		}
	}
	return out
}

// Hundreds of reserves, releases and sales of one hot SKU at once, over two copies: every
// change of the row publishes one event with the next version (1, 2, 3… with no gap and no
// repeat), and a cache that keeps the highest version, fed the events in any order (late,
// twice), ends at the row as it is. update_time cannot order them: it is when each
// transaction began.
func TestStockEventsOfAHotSKUCarryOneVersionPerChangeAndOrderACache(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	const store, sku, callers = "ver-1", "HOT-V", 200
	e.createStore(storeAt(store, 47.61, -122.33))
	e.setStock(store, sku, 150, 0)

	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			id := fmt.Sprintf("o-%03d", i)
			res, err := e.reserve(order(id, store, sku, 1))
			if err != nil {
				t.Errorf("reserve %s: %v", id, err)
				return
			}
			if res.GetOutcome() != reserved {
				return
			}
			switch i % 3 {
			case 0:
				e.release(id, "")
			case 1:
				e.changeHolds(commitChange(id))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	row := e.level(store, sku)
	events := e.stockEvents(store, sku)
	var versions []int64
	for _, ev := range events {
		versions = append(versions, ev.GetLevel().GetVersion())
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("event versions %v: want 1 to %d, each once", versions, len(versions))
		}
	}
	if row.GetVersion() != int64(len(events)) {
		t.Fatalf("the row is at version %d after %d events", row.GetVersion(), len(events))
	}

	for round := range 5 {
		feed := slices.Clone(events)
		feed = append(feed, events[rand.IntN(len(events))], events[rand.IntN(len(events))]) // twice
		rand.Shuffle(len(feed), func(i, j int) { feed[i], feed[j] = feed[j], feed[i] })
		var cached *inventoryv1.StockLevel
		for _, ev := range feed {
			if cached == nil || ev.GetLevel().GetVersion() > cached.GetVersion() {
				cached = ev.GetLevel()
			}
		}
		if cached.GetOnHand() != row.GetOnHand() || cached.GetReserved() != row.GetReserved() || cached.GetAvailable() != row.GetAvailable() {
			t.Fatalf("round %d: the cache holds %v; the row is %v", round, cached, row)
		}
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A transaction that changes a row several times (a release and a sale of one SKU in one
// round) publishes one event for it, with the level after both: two events with one version
// would leave a reader unable to tell which came last.
func TestOneRoundOfChangesPublishesOneEventPerRow(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("ver-2", 47.61, -122.33))
	e.setStock("ver-2", "LATTE", 10, 0)
	e.mustReserve(order("o1", "ver-2", "LATTE", 2))
	e.mustReserve(order("o2", "ver-2", "LATTE", 3))
	before := len(e.stockEvents("ver-2", "LATTE"))

	e.changeHolds(releaseChange("o1", ""), commitChange("o2"))
	events := e.stockEvents("ver-2", "LATTE")[before:]
	row := e.level("ver-2", "LATTE")
	if len(events) != 1 {
		t.Fatalf("%d events for one round; want 1", len(events))
	}
	got := events[0]
	if got.GetLevel().GetVersion() != row.GetVersion() || got.GetLevel().GetOnHand() != 7 || got.GetLevel().GetReserved() != 0 ||
		got.GetKind() != inventoryv1.MovementKind_MOVEMENT_KIND_HOLD_COMMITTED {
		t.Fatalf("event %v; want on hand 7, reserved 0, version %d, the last change's kind (a sale)", got, row.GetVersion())
	}
	e.requireInvariants()
}

// CheckInvariants reports a row whose version is not its last ledger row's, a ledger whose
// versions go back, and a version written by two transactions.
func TestCheckInvariantsFindsVersionsOutOfOrder(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("ver-3", 47.61, -122.33))
	e.setStock("ver-3", "LATTE", 10, 0)
	e.mustReserve(order("o1", "ver-3", "LATTE", 2))
	e.requireInvariants()

	if _, err := e.pool.Exec(e.ctx(), `UPDATE movements SET stock_version = 1 WHERE store_id = 'ver-3' AND kind = 'hold_placed'`); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || len(res.GetViolations()) == 0 || res.GetViolations()[0].GetRule() != inventory.RuleVersionInOrder {
		t.Fatalf("CheckInvariants = ok %v, %v; want a violation of %q", res.GetOk(), res.GetViolations(), inventory.RuleVersionInOrder)
	}
}

func TestCheckInvariantsFindsAVersionWrittenTwice(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("ver-4", 47.61, -122.33))
	e.setStock("ver-4", "LATTE", 10, 0)
	e.mustReserve(order("o1", "ver-4", "LATTE", 2)) // version 2
	e.requireInvariants()

	// A second transaction's ledger row claiming version 2 too (its deltas are zero: every
	// sum still adds up, and the row's version is still the last one's).
	if _, err := e.pool.Exec(e.ctx(), `INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta,
		on_hand_after, reserved_after, safety_stock_after, actor_kind, actor_id, order_id, stock_version)
		VALUES ('ver-4', 'LATTE', 'hold_placed', 0, 0, 10, 2, 0, 'system', 'forged', 'o2', 2)`); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || len(res.GetViolations()) != 1 || res.GetViolations()[0].GetRule() != inventory.RuleVersionInOrder ||
		!strings.Contains(res.GetViolations()[0].GetDetail(), "more than one transaction") {
		t.Fatalf("CheckInvariants = ok %v, %v; want a version written twice", res.GetOk(), res.GetViolations())
	}
	// Per store too.
	res, err = e.admin.CheckInvariants(e.ctx(), &inventoryv1.CheckInvariantsRequest{StoreId: "ver-4"})
	if err != nil || res.GetOk() {
		t.Fatalf("CheckInvariants of the store = %v, %v; want the violation", res, err)
	}
}
