package inventory_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

func commitChange(orderID string) *inventoryv1.HoldChange {
	return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Commit{Commit: &inventoryv1.CommitHoldsRequest{OrderId: orderID}}}
}

func releaseChange(orderID, lineID string) *inventoryv1.HoldChange {
	return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Release{Release: &inventoryv1.ReleaseHoldsRequest{
		OrderId: orderID, LineId: lineID, Reason: inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED}}}
}

func extendChange(orderID string, to time.Time) *inventoryv1.HoldChange {
	return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Extend{Extend: &inventoryv1.ExtendHoldsRequest{OrderId: orderID, ExpireTime: timestamppb.New(to)}}}
}

func (e *env) changeHolds(changes ...*inventoryv1.HoldChange) *inventoryv1.ChangeHoldsResponse {
	e.t.Helper()
	var res inventoryv1.ChangeHoldsResponse
	if err := e.call(inventory.SubjectChangeHolds, &inventoryv1.ChangeHoldsRequest{Changes: changes}, &res); err != nil {
		e.t.Fatalf("change holds: %v", err)
	}
	if len(res.GetResults()) != len(changes) {
		e.t.Fatalf("%d results for %d changes", len(res.GetResults()), len(changes))
	}
	return &res
}

func TestChangeHoldsCommitsManyOrdersAtOnceAndARedeliveredBatchChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.addCopy() // redeliveries are spread over two copies
	for _, st := range []string{"s1", "s2"} {
		e.createStore(storeAt(st, 47.61, -122.33))
		e.setStock(st, "LATTE", 500, 0)
		e.setStock(st, "MUFFIN", 500, 0)
	}
	const orders = 60
	var changes []*inventoryv1.HoldChange
	for i := range orders {
		id := fmt.Sprintf("o-%02d", i)
		e.mustReserve(order(id, fmt.Sprintf("s%d", i%2+1), "LATTE", 2, "MUFFIN", 1))
		switch {
		case i < 40:
			changes = append(changes, commitChange(id))
		case i < 50:
			changes = append(changes, releaseChange(id, "l2"), commitChange(id)) // a dropped line, then the rest sold
		default:
			changes = append(changes, releaseChange(id, ""))
		}
	}
	res := e.changeHolds(changes...)
	for i, r := range res.GetResults() {
		if r.GetErrorCode() != 0 || len(r.GetHolds()) == 0 {
			t.Fatalf("change %d: %d holds, error %d %q", i, len(r.GetHolds()), r.GetErrorCode(), r.GetErrorMessage())
		}
	}
	check := func(when string) {
		t.Helper()
		// 40 orders sold whole, 10 sold without their muffin, 10 given back: per store half.
		for _, st := range []string{"s1", "s2"} {
			if l := e.level(st, "LATTE"); l.GetOnHand() != 500-25*2 || l.GetReserved() != 0 {
				t.Fatalf("%s: LATTE at %s on hand %d reserved %d, want 450 and 0", when, st, l.GetOnHand(), l.GetReserved())
			}
			if l := e.level(st, "MUFFIN"); l.GetOnHand() != 500-20 || l.GetReserved() != 0 {
				t.Fatalf("%s: MUFFIN at %s on hand %d reserved %d, want 480 and 0", when, st, l.GetOnHand(), l.GetReserved())
			}
		}
		if n := e.count(`SELECT count(*) FROM holds WHERE state = 'committed'`); n != 40*2+10 {
			t.Fatalf("%s: %d holds committed, want 90", when, n)
		}
		if n := e.count(`SELECT count(*) FROM holds WHERE state = 'released'`); n != 10+10*2 {
			t.Fatalf("%s: %d holds released, want 30", when, n)
		}
		// Every hold ended once: one ledger row and (released) one event each.
		if n := e.count(`SELECT count(*) FROM (SELECT hold_id FROM movements WHERE kind IN ('hold_committed', 'hold_released')
			GROUP BY hold_id HAVING count(*) <> 1) x`); n != 0 {
			t.Fatalf("%s: %d holds ended more than once in the ledger", when, n)
		}
		if n := e.count(`SELECT count(*) FROM movements WHERE kind IN ('hold_committed', 'hold_released')`); n != 120 {
			t.Fatalf("%s: %d ledger rows for ended holds, want 120", when, n)
		}
		if n := len(e.outboxEvents(inventory.SubjectHoldReleased)); n != 30 {
			t.Fatalf("%s: %d hold released events, want 30", when, n)
		}
		e.requireInvariants()
		e.requireLedgerMatches()
	}
	check("after the batch")

	// The effects worker died before deleting its effects, or the answer was lost: the same
	// batch comes again, several times, some at once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, r := range e.changeHolds(changes...).GetResults() {
				if len(r.GetHolds()) != 0 || r.GetErrorCode() != 0 {
					t.Errorf("a redelivered change ended %d holds (error %q), want none", len(r.GetHolds()), r.GetErrorMessage())
				}
			}
		})
	}
	wg.Wait()
	check("after redeliveries")
}

func TestChangeHoldsMakesEachOrdersChangesInOrder(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.setStock("s1", "MUFFIN", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 1, "MUFFIN", 1))
	to := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Microsecond)
	res := e.changeHolds(extendChange("o1", to), releaseChange("o1", "l2"), commitChange("o1"), extendChange("o1", to.Add(time.Hour)))
	r := res.GetResults()
	if len(r[0].GetHolds()) != 2 || !r[0].GetHolds()[0].GetExpireTime().AsTime().Equal(to) || r[0].GetHolds()[0].GetState() != inventoryv1.HoldState_HOLD_STATE_OPEN {
		t.Fatalf("extend: %v, want both holds open until %s", r[0].GetHolds(), to)
	}
	if len(r[1].GetHolds()) != 1 || r[1].GetHolds()[0].GetLineId() != "l2" || r[1].GetHolds()[0].GetState() != inventoryv1.HoldState_HOLD_STATE_RELEASED {
		t.Fatalf("release of l2: %v", r[1].GetHolds())
	}
	if len(r[2].GetHolds()) != 1 || r[2].GetHolds()[0].GetLineId() != "l1" || r[2].GetHolds()[0].GetState() != inventoryv1.HoldState_HOLD_STATE_COMMITTED {
		t.Fatalf("commit after the release: %v, want l1 only", r[2].GetHolds())
	}
	if len(r[3].GetHolds()) != 0 {
		t.Fatalf("extend after the commit: %v, want no open holds", r[3].GetHolds())
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE order_id = 'o1' AND expire_time = $1`, to); n != 2 {
		t.Fatalf("%d holds carry the extended deadline, want 2", n)
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 9 || l.GetReserved() != 0 {
		t.Fatalf("LATTE %v, want on hand 9, reserved 0", l)
	}
	if l := e.level("s1", "MUFFIN"); l.GetOnHand() != 10 || l.GetReserved() != 0 {
		t.Fatalf("MUFFIN %v, want on hand 10, reserved 0", l)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestChangeHoldsRefusesBadChangesAloneAndMakesTheRest(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 1))
	e.mustReserve(order("o2", "s1", "LATTE", 1))
	res := e.changeHolds(
		commitChange(""),
		extendChange("o1", time.Now().Add(-time.Minute)),
		&inventoryv1.HoldChange{},
		commitChange("o2"),
	)
	r := res.GetResults()
	for i, field := range []string{"changes[0].commit.order_id", "changes[1].extend.expire_time", "changes[2].change"} {
		if codes.Code(r[i].GetErrorCode()) != codes.InvalidArgument || !strings.Contains(r[i].GetErrorMessage(), field) {
			t.Errorf("change %d: error %d %q, want InvalidArgument naming %s", i, r[i].GetErrorCode(), r[i].GetErrorMessage(), field)
		}
	}
	if len(r[3].GetHolds()) != 1 || r[3].GetErrorCode() != 0 {
		t.Fatalf("the good change: %v (error %q)", r[3].GetHolds(), r[3].GetErrorMessage())
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 9 || l.GetReserved() != 1 {
		t.Fatalf("LATTE %v, want o2 sold and o1 still held", l)
	}
	var none inventoryv1.ChangeHoldsResponse
	err := e.call(inventory.SubjectChangeHolds, &inventoryv1.ChangeHoldsRequest{}, &none)
	requireStatus(t, err, codes.InvalidArgument, "changes")
	e.requireInvariants()
}

func TestExtendingHoldsDoesNotWaitForTheirStockRows(t *testing.T) {
	// An extension changes no stock: it must not lock stock rows, or every extension round
	// would queue behind (and hold up) the reserves at those stores.
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 1))

	tx, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(t.Context()))
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM stock WHERE store_id = 's1' AND sku = 'LATTE' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	to := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Microsecond)
	done := make(chan *inventoryv1.ChangeHoldsResponse, 1)
	go func() { done <- e.changeHolds(extendChange("o1", to)) }()
	select {
	case res := <-done:
		if hs := res.GetResults()[0].GetHolds(); len(hs) != 1 || !hs[0].GetExpireTime().AsTime().Equal(to) {
			t.Fatalf("extend: %v, want the hold open until %s", hs, to)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("extending a hold waited for its stock row, locked by another transaction")
	}
}

func TestExtendingManyOrdersAtOnceExtendsOnlyTheirOpenHolds(t *testing.T) {
	// fulfilment's round after its checkouts: extensions only, each order once, some of
	// whose holds have ended meanwhile.
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 100, 0)
	e.setStock("s1", "MUFFIN", 100, 0)
	for _, id := range []string{"o-a", "o-b", "o-c"} {
		e.mustReserve(order(id, "s1", "LATTE", 1, "MUFFIN", 1))
	}
	e.changeHolds(commitChange("o-b"), releaseChange("o-c", "l1"))

	to := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Microsecond)
	r := e.changeHolds(extendChange("o-c", to), extendChange("o-a", to.Add(time.Minute)), extendChange("o-b", to), extendChange("o-unknown", to)).GetResults()
	lines := func(hs []*inventoryv1.Hold, until time.Time) string {
		var out []string
		for _, h := range hs {
			if h.GetState() != inventoryv1.HoldState_HOLD_STATE_OPEN || !h.GetExpireTime().AsTime().Equal(until) {
				t.Errorf("hold %v: want open until %s", h, until)
			}
			out = append(out, h.GetOrderId()+"/"+h.GetLineId())
		}
		return strings.Join(out, ",")
	}
	if got := lines(r[0].GetHolds(), to); got != "o-c/l2" {
		t.Errorf("o-c extended %s, want its open line l2 only", got)
	}
	if got := lines(r[1].GetHolds(), to.Add(time.Minute)); got != "o-a/l1,o-a/l2" {
		t.Errorf("o-a extended %s, want both lines in line order", got)
	}
	if len(r[2].GetHolds()) != 0 || len(r[3].GetHolds()) != 0 {
		t.Errorf("a committed order and an unknown one extended %v and %v, want nothing", r[2].GetHolds(), r[3].GetHolds())
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE expire_time >= $1`, to); n != 3 {
		t.Errorf("%d holds carry an extended deadline, want 3", n)
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE state <> 'open' AND expire_time >= $1`, to); n != 0 {
		t.Errorf("%d ended holds were extended", n)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// An extension delivered late or again (fulfilment retries one whose answer it lost) never
// moves a deadline earlier than a later extension set: the ready order's stock would be freed
// for someone else while the order still waits for its shopper. Every path is tried: the
// extend-only round, a round mixed with other changes, and ExtendHolds.
func TestALateExtensionNeverShortensAHold(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 1))
	e.mustReserve(order("o2", "s1", "LATTE", 1))

	later := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Microsecond)
	earlier := later.Add(-2 * time.Hour)
	e.changeHolds(extendChange("o1", later))
	expect := func(how string, hs []*inventoryv1.Hold) {
		t.Helper()
		if len(hs) != 1 || !hs[0].GetExpireTime().AsTime().Equal(later) {
			t.Fatalf("%s: answered %v; want the hold still until %s", how, hs, later)
		}
		var until time.Time
		if err := e.pool.QueryRow(t.Context(), `SELECT expire_time FROM holds WHERE order_id = 'o1'`).Scan(&until); err != nil || !until.Equal(later) {
			t.Fatalf("%s: the hold is now until %s (%v); want %s", how, until, err, later)
		}
	}
	expect("an extend-only round", e.changeHolds(extendChange("o1", earlier)).GetResults()[0].GetHolds())
	expect("a mixed round", e.changeHolds(releaseChange("o2", ""), extendChange("o1", earlier)).GetResults()[1].GetHolds())
	var res inventoryv1.ExtendHoldsResponse
	if err := e.call(inventory.SubjectExtendHolds, &inventoryv1.ExtendHoldsRequest{OrderId: "o1", ExpireTime: timestamppb.New(earlier)}, &res); err != nil {
		t.Fatal(err)
	}
	expect("ExtendHolds", res.GetHolds())
	e.requireInvariants()
	e.requireLedgerMatches()
}

// The combined transaction of a change_holds request committed, but its COMMIT's reply was
// lost (the connection broke): the changes must not be made again one by one, which would find
// the holds ended already and answer that the commits ended nothing, for fulfilment a certain
// sign that goods left the store unheld although their sale was recorded. Inventory asks
// Postgres how the transaction ended and answers with the holds it changed.
func TestChangeHoldsAnswersWhatACommitWhoseReplyWasLostDid(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.setStock("s1", "MUFFIN", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 2, "MUFFIN", 1))
	e.mustReserve(order("o2", "s1", "LATTE", 1))
	inventory.LoseCommitReplies(e.copies[0], true)
	res := e.changeHolds(commitChange("o1"), releaseChange("o2", ""))
	inventory.LoseCommitReplies(e.copies[0], false)
	for i, want := range []int{2, 1} {
		r := res.GetResults()[i]
		if r.GetErrorCode() != 0 || len(r.GetHolds()) != want {
			t.Errorf("change %d: %d holds, error %d %q; want the %d it ended", i, len(r.GetHolds()), r.GetErrorCode(), r.GetErrorMessage(), want)
		}
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 8 || l.GetReserved() != 0 {
		t.Fatalf("LATTE on hand %d reserved %d, want 8 and 0", l.GetOnHand(), l.GetReserved())
	}
	if n := e.count(`SELECT count(*) FROM movements WHERE kind IN ('hold_committed', 'hold_released')`); n != 3 {
		t.Fatalf("%d ledger rows for ended holds, want 3", n)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}
