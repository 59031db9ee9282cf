package inventory_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

const (
	reserved     = inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED
	insufficient = inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK
	unavailable  = inventoryv1.ReserveOutcome_RESERVE_OUTCOME_STORE_UNAVAILABLE
)

func TestFiveHundredConcurrentReservesForTenUnitsMakeExactlyTenHolds(t *testing.T) {
	e := newEnv(t)
	e.addCopy() // two copies side by side share the requests
	e.createStore(storeAt("hot-store", 47.61, -122.33))
	e.setStock("hot-store", "HOT-1", 12, 2) // 10 may be promised

	const callers = 500
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		got     = map[inventoryv1.ReserveOutcome]int{}
		badMsgs []string
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.reserve(order(fmt.Sprintf("order-%03d", i), "hot-store", "HOT-1", 1))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				badMsgs = append(badMsgs, err.Error())
				return
			}
			got[res.GetOutcome()]++
			if res.GetOutcome() == insufficient {
				sh := res.GetShortages()
				if len(sh) != 1 || sh[0].GetSku() != "HOT-1" || sh[0].GetRequested() != 1 || sh[0].GetAvailable() != 0 || !strings.Contains(res.GetMessage(), "HOT-1") {
					badMsgs = append(badMsgs, fmt.Sprintf("unclear out-of-stock answer: %v", res))
				}
			}
		}()
	}
	wg.Wait()
	for _, m := range badMsgs[:min(len(badMsgs), 5)] {
		t.Errorf("bad answer: %s", m)
	}
	if got[reserved] != 10 || got[insufficient] != callers-10 {
		t.Fatalf("outcomes %v; want 10 reserved and %d insufficient", got, callers-10)
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE state = 'open'`); n != 10 {
		t.Errorf("%d open holds, want 10", n)
	}
	if l := e.level("hot-store", "HOT-1"); l.GetReserved() != 10 || l.GetAvailable() != 0 || l.GetOnHand() != 12 {
		t.Errorf("level %v; want on hand 12, reserved 10, available 0", l)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestSameSKUOnTwoLinesIsSummedAndRefusedAsAWhole(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "MUG", 3, 0)
	e.setStock("s1", "TEA", 10, 0)

	res := e.mustReserve(order("o-2x2", "s1", "MUG", 2, "TEA", 1, "MUG", 2))
	if res.GetOutcome() != insufficient {
		t.Fatalf("2 + 2 of 3: outcome %v, want insufficient", res.GetOutcome())
	}
	want := []*inventoryv1.Shortage{{Sku: "MUG", Requested: 4, Available: 3}}
	if !slices.EqualFunc(res.GetShortages(), want, func(a, b *inventoryv1.Shortage) bool { return proto.Equal(a, b) }) {
		t.Errorf("shortages %v, want %v", res.GetShortages(), want)
	}
	if n := e.count(`SELECT count(*) FROM holds`); n != 0 {
		t.Errorf("%d holds after a refused order, want none (the TEA line must not be held alone)", n)
	}
	if l := e.level("s1", "TEA"); l.GetReserved() != 0 {
		t.Errorf("TEA reserved %d after a refused order", l.GetReserved())
	}

	res = e.mustReserve(order("o-2x1", "s1", "MUG", 2, "MUG", 1))
	if res.GetOutcome() != reserved || len(res.GetHolds()) != 2 {
		t.Fatalf("2 + 1 of 3: %v, want two holds", res)
	}
	if l := e.level("s1", "MUG"); l.GetReserved() != 3 || l.GetAvailable() != 0 {
		t.Errorf("MUG level %v; want reserved 3", l)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestRetriedAndRedeliveredReserveMakesOneHoldSet(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "BEAN", 100, 0)

	req := order("o-retry", "s1", "BEAN", 2, "BEAN", 3)
	first := e.mustReserve(req)
	if first.GetOutcome() != reserved {
		t.Fatalf("first reserve: %v", first)
	}
	for i := range 5 {
		again := e.mustReserve(req)
		if !proto.Equal(again, first) {
			t.Fatalf("retry %d answered %v, want the first answer %v", i+1, again, first)
		}
	}

	// Redelivered: the same request arriving many times at once, at both copies.
	req = order("o-redeliver", "s1", "BEAN", 1)
	answers := make([]*inventoryv1.ReserveHoldsResponse, 10)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = e.mustReserve(req) }()
	}
	wg.Wait()
	for i, a := range answers {
		if a.GetOutcome() != reserved || len(a.GetHolds()) != 1 || a.GetHolds()[0].GetHoldId() != answers[0].GetHolds()[0].GetHoldId() {
			t.Errorf("answer %d = %v; want the one hold %s", i, a, answers[0].GetHolds()[0].GetHoldId())
		}
	}
	if n := e.count(`SELECT count(*) FROM holds`); n != 3 {
		t.Errorf("%d holds, want 3 (two lines of o-retry, one of o-redeliver)", n)
	}
	if l := e.level("s1", "BEAN"); l.GetReserved() != 6 {
		t.Errorf("reserved %d, want 6", l.GetReserved())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A reserve is idempotent by order id only for the same lines: an order id asked again for other
// lines (a checkout edited and its key used again) is refused, alone, at a named store or the
// nearest, and at once in one batch, and nothing changes; the same lines still get the holds.
func TestReserveForAnOrderWithHoldsForOtherLinesIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "BEAN", 100, 0)
	e.setStock("s1", "MILK", 100, 0)
	first := e.mustReserve(order("o-changed", "s1", "BEAN", 2))
	if first.GetOutcome() != reserved {
		t.Fatalf("first reserve: %v", first)
	}
	near := func(req *inventoryv1.ReserveHoldsRequest) *inventoryv1.ReserveHoldsRequest {
		req.StoreId, req.Near, req.RadiusMeters = "", &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, 5000
		return req
	}
	for name, req := range map[string]*inventoryv1.ReserveHoldsRequest{
		"another SKU":      order("o-changed", "s1", "MILK", 2),
		"another quantity": order("o-changed", "s1", "BEAN", 3),
		"another line":     order("o-changed", "s1", "BEAN", 2, "MILK", 1),
		"nearest":          near(order("o-changed", "", "MILK", 2)),
	} {
		_, err := e.reserve(req)
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s: %v; want FailedPrecondition", name, err)
		}
	}
	// Two requests for one new order at once, one of them for other lines.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, req := range []*inventoryv1.ReserveHoldsRequest{order("o-twice", "s1", "BEAN", 1), order("o-twice", "s1", "MILK", 1)} {
		wg.Go(func() { _, errs[i] = e.reserve(req) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("one order reserved at once for two sets of lines: %v, %v; want one held, one refused", errs[0], errs[1])
	}
	if again := e.mustReserve(order("o-changed", "s1", "BEAN", 2)); !proto.Equal(again, first) {
		t.Errorf("the same lines again answered %v, want %v", again, first)
	}
	// The same lines and other lines at once: each answered on its own, whichever comes first.
	for range 5 {
		var same *inventoryv1.ReserveHoldsResponse
		var sameErr, otherErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, otherErr = e.reserve(order("o-changed", "s1", "MILK", 2)) })
		wg.Go(func() { same, sameErr = e.reserve(order("o-changed", "s1", "BEAN", 2)) })
		wg.Wait()
		if sameErr != nil || !proto.Equal(same, first) || status.Code(otherErr) != codes.FailedPrecondition {
			t.Fatalf("the same lines beside other lines: %v, %v and %v; want the holds, and FailedPrecondition", same, sameErr, otherErr)
		}
	}
	if l := e.level("s1", "MILK"); l.GetReserved() > 1 {
		t.Errorf("MILK reserved %d; want at most o-twice's 1", l.GetReserved())
	}
	if l := e.level("s1", "BEAN"); l.GetReserved() > 3 {
		t.Errorf("BEAN reserved %d; want o-changed's 2 and at most o-twice's 1", l.GetReserved())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// Two requests for one order in one batch (a retry racing its first attempt, one candidate
// store apart): a request the first answered without placing anything is decided on its own
// store and lines, not given the first's answer; once the first has placed holds, they answer.
func TestSameOrderTwiceInOneBatchIsDecidedAtEachStore(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"sa", "sb"} {
		e.createStore(storeAt(id, 47.61, -122.33))
	}
	e.setStock("sa", "BEAN", 0, 0)
	e.setStock("sb", "BEAN", 10, 0)
	res, errs, err := inventory.ReserveInOneBatch(e.copies[0], order("o-1", "sa", "BEAN", 1), order("o-1", "sb", "BEAN", 1))
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || res[0].GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_INSUFFICIENT_STOCK {
		t.Errorf("at sa (none): %v, %v; want INSUFFICIENT_STOCK", res[0], errs[0])
	}
	if errs[1] != nil || res[1].GetOutcome() != reserved || res[1].GetHolds()[0].GetStoreId() != "sb" {
		t.Fatalf("at sb (10): %v, %v; want held at sb, not the first request's answer", res[1], errs[1])
	}
	// The other way round: the holds placed at sb answer the request at sa (the same lines).
	res, errs, err = inventory.ReserveInOneBatch(e.copies[0], order("o-2", "sb", "BEAN", 1), order("o-2", "sa", "BEAN", 1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range res {
		if errs[i] != nil || res[i].GetOutcome() != reserved || res[i].GetHolds()[0].GetStoreId() != "sb" {
			t.Errorf("request %d for o-2: %v, %v; want the holds at sb", i, res[i], errs[i])
		}
	}
	if got := e.level("sb", "BEAN").GetReserved(); got != 2 {
		t.Errorf("sb BEAN reserved %d; want 2 (one hold for each order)", got)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// twoCopiesTwoStores is inventory in two copies, with two stores (s1, s2) that have onHand
// units of CAKE each.
func twoCopiesTwoStores(t *testing.T, onHand int32) *env {
	e := newEnv(t)
	e.addCopy()
	for _, id := range []string{"s1", "s2"} {
		e.createStore(storeAt(id, 47.61, -122.33))
		e.setStock(id, "CAKE", onHand, 0)
	}
	return e
}

func TestSameOrderAtTwoStoresAtOnceIsHeldAtOne(t *testing.T) {
	// Two copies deciding the same order at different stores lock different stock rows: the
	// order's own lock makes the second wait for the first and find its holds (the holds'
	// unique (order, line) key backs it up), and the loser must answer with the winner's holds.
	e := twoCopiesTwoStores(t, 1000)
	for round := range 20 {
		id := fmt.Sprintf("o-split-%d", round)
		var a, b *inventoryv1.ReserveHoldsResponse
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); a = e.mustReserve(order(id, "s1", "CAKE", 1)) }()
		go func() { defer wg.Done(); b = e.mustReserve(order(id, "s2", "CAKE", 1)) }()
		wg.Wait()
		if a.GetOutcome() != reserved || !proto.Equal(a, b) {
			t.Fatalf("round %d: answers differ:\n%v\n%v", round, a, b)
		}
	}
	if n := e.count(`SELECT count(*) FROM holds`); n != 20 {
		t.Errorf("%d holds for 20 orders of one line", n)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// One order id asked at once for other lines at another store (one idempotency key sent with
// two carts' checkouts, decided by two copies): the two transactions lock different stock rows
// and the holds' unique (order, line) key cannot see lines with other ids, so only the order's
// own lock makes the second wait and find the first's holds. Both are let go at the same
// moment, from behind a transaction that has both stores' stock locked, so without that lock
// each reads the order's holds before the other has committed and both hold.
func TestSameOrderForOtherLinesAtTwoStoresAtOnceIsHeldOnce(t *testing.T) {
	e := twoCopiesTwoStores(t, 100)
	const rounds = 5
	for round := range rounds {
		id := fmt.Sprintf("o-two-carts-%d", round)
		reqs := []*inventoryv1.ReserveHoldsRequest{order(id, "s1", "CAKE", 1), order(id, "s2", "CAKE", 2)}
		reqs[0].Lines[0].LineId, reqs[1].Lines[0].LineId = "cart-a-line", "cart-b-line"

		ctx := e.ctx()
		blocker, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := blocker.Exec(ctx, `SELECT 1 FROM stock WHERE sku = 'CAKE' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		res, errs := make([]*inventoryv1.ReserveHoldsResponse, 2), make([]error, 2)
		var wg sync.WaitGroup
		for i, req := range reqs {
			wg.Go(func() { res[i], errs[i] = e.copies[i].ReserveHolds(ctx, req) })
		}
		// Both wait for a lock (the stock rows, or the order's) before they are let go.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			waiting := e.count(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`)
			if waiting >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d reserves waiting behind the locked stock, want 2", round, waiting)
			}
		}
		if err := blocker.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()

		held := 0
		for i := range reqs {
			switch {
			case errs[i] == nil && res[i].GetOutcome() == reserved:
				held++
			case status.Code(errs[i]) != codes.FailedPrecondition:
				t.Fatalf("round %d, request %d: %v, %v; want the holds or FailedPrecondition", round, i, res[i], errs[i])
			}
		}
		if held != 1 {
			t.Errorf("round %d: %d of the two sets of lines held for order %s; want one held, the other refused", round, held, id)
		}
		if n := e.count(`SELECT count(*) FROM holds WHERE order_id = $1`, id); n != 1 {
			t.Errorf("round %d: order %s has %d holds, want 1", round, id, n)
		}
	}
	e.requireInvariants() // reserved is the sum of the open holds: nothing left over from the refused
	e.requireLedgerMatches()
}

func TestReleaseAndCommitEndEachHoldOnce(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 1)
	e.setStock("s1", "MUFFIN", 5, 0)

	res := e.mustReserve(order("o1", "s1", "LATTE", 2, "MUFFIN", 1, "LATTE", 1))
	if res.GetOutcome() != reserved || res.GetStoreId() != "s1" || len(res.GetHolds()) != 3 {
		t.Fatalf("reserve: %v", res)
	}

	// One line given back (staff marked it unavailable).
	got := e.release("o1", "l2")
	if len(got) != 1 || got[0].GetSku() != "MUFFIN" || got[0].GetState() != inventoryv1.HoldState_HOLD_STATE_RELEASED {
		t.Fatalf("release line l2: %v", got)
	}
	if again := e.release("o1", "l2"); len(again) != 0 {
		t.Errorf("release retried released %v again", again)
	}
	if l := e.level("s1", "MUFFIN"); l.GetReserved() != 0 || l.GetOnHand() != 5 {
		t.Errorf("MUFFIN after release: %v", l)
	}

	// Hand-over: the rest becomes a sale.
	got = e.commit("o1")
	if len(got) != 2 {
		t.Fatalf("commit: %v, want the two LATTE holds", got)
	}
	if again := e.commit("o1"); len(again) != 0 {
		t.Errorf("commit retried committed %v again", again)
	}
	if again := e.release("o1", ""); len(again) != 0 {
		t.Errorf("release after commit released %v", again)
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 7 || l.GetReserved() != 0 || l.GetAvailable() != 6 {
		t.Errorf("LATTE after commit: %v; want on hand 7, reserved 0", l)
	}
	if n := len(e.outboxEvents(inventory.SubjectHoldReleased)); n != 1 {
		t.Errorf("%d hold.released events, want 1", n)
	}
	// A retried reserve of an order that has ended reports its holds as they are: no new ones.
	again := e.mustReserve(order("o1", "s1", "LATTE", 2, "MUFFIN", 1, "LATTE", 1))
	if n := e.count(`SELECT count(*) FROM holds`); n != 3 || again.GetHolds()[0].GetState() == inventoryv1.HoldState_HOLD_STATE_OPEN {
		t.Errorf("late retry of an ended order: %d holds, answer %v", n, again)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestExtendHoldsMovesTheDeadlineOfOpenHolds(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 1, "LATTE", 1))
	e.release("o1", "l1")

	later := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	var res inventoryv1.ExtendHoldsResponse
	if err := e.call(inventory.SubjectExtendHolds, &inventoryv1.ExtendHoldsRequest{OrderId: "o1", ExpireTime: timestamppb.New(later)}, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.GetHolds()) != 1 || res.GetHolds()[0].GetLineId() != "l2" || !res.GetHolds()[0].GetExpireTime().AsTime().Equal(later) {
		t.Fatalf("extend: %v; want line l2 until %v", res.GetHolds(), later)
	}
	err := e.call(inventory.SubjectExtendHolds, &inventoryv1.ExtendHoldsRequest{OrderId: "o1", ExpireTime: timestamppb.New(time.Now().Add(-time.Minute))}, &res)
	requireStatus(t, err, codes.InvalidArgument, "expire_time")
}

// Each expired hold is released once, by one of two sweepers, neither before its deadline nor
// long after.
func TestSweeperReleasesExpiredHoldsOnceBesideASecondSweeper(t *testing.T) {
	const sweep = 50 * time.Millisecond
	e := newEnv(t, withSweeper(sweep))
	e.addCopy(withSweeper(sweep))
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "SCONE", 100, 0)

	deadline := time.Now().Add(time.Second)
	const expiring, staying = 40, 5
	for i := range expiring {
		req := order(fmt.Sprintf("short-%d", i), "s1", "SCONE", 1, "SCONE", 1)
		req.ExpireTime = timestamppb.New(deadline)
		if res := e.mustReserve(req); res.GetOutcome() != reserved {
			t.Fatalf("reserve: %v", res)
		}
	}
	for i := range staying {
		e.mustReserve(order(fmt.Sprintf("long-%d", i), "s1", "SCONE", 1))
	}

	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n := e.count(`SELECT count(*) FROM holds WHERE state = 'open'`); n != staying {
			return fmt.Errorf("%d open holds, want %d", n, staying)
		}
		return nil
	})
	if n := e.count(`SELECT count(*) FROM holds WHERE state = 'expired' AND release_reason = 'deadline_passed'`); n != 2*expiring {
		t.Errorf("%d expired holds, want %d", n, 2*expiring)
	}
	// Exactly one ledger row and one event per expired hold, whoever swept it.
	if n := e.count(`SELECT count(*) FROM (SELECT hold_id FROM movements WHERE kind = 'hold_released' GROUP BY hold_id HAVING count(*) <> 1) x`); n != 0 {
		t.Errorf("%d holds released more than once in the ledger", n)
	}
	if n := e.count(`SELECT count(*) FROM movements WHERE kind = 'hold_released'`); n != 2*expiring {
		t.Errorf("%d release movements, want %d", n, 2*expiring)
	}
	if n := len(e.outboxEvents(inventory.SubjectHoldExpired)); n != 2*expiring {
		t.Errorf("%d hold.expired events, want %d", n, 2*expiring)
	}
	// Never later than the deadline plus a sweep (with room for a slow machine).
	if n := e.count(`SELECT count(*) FROM holds WHERE state = 'expired' AND end_time > expire_time + interval '5 seconds'`); n != 0 {
		t.Errorf("%d holds ended more than 5s after their deadline", n)
	}
	// Nor earlier: a hold is the order's until its deadline.
	if n := e.count(`SELECT count(*) FROM holds WHERE state = 'expired' AND end_time < expire_time`); n != 0 {
		t.Errorf("%d holds ended before their deadline", n)
	}
	if l := e.level("s1", "SCONE"); l.GetReserved() != staying {
		t.Errorf("reserved %d, want %d", l.GetReserved(), staying)
	}
	// An expired hold cannot be released or sold afterwards.
	if got := e.release("short-0", ""); len(got) != 0 {
		t.Errorf("released an expired hold: %v", got)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

func TestMultiLineOrdersInOppositeOrdersNeverDeadlock(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	e.createStore(storeAt("s1", 47.61, -122.33))
	skus := []string{"A", "B", "C", "D"}
	for _, sku := range skus {
		e.setStock("s1", sku, 10_000, 0)
	}
	deadlocks := retries(t, "deadlock")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Lines in every rotation and direction of A, B, C, D.
			var args []any
			for j := range skus {
				k := (i + j) % len(skus)
				if i%2 == 1 {
					k = (i - j + 2*len(skus)) % len(skus)
				}
				args = append(args, skus[k], 1+j)
			}
			id := fmt.Sprintf("o-%d", i)
			if res := e.mustReserve(order(id, "s1", args...)); res.GetOutcome() != reserved {
				t.Errorf("reserve %s: %v", id, res)
				return
			}
			if i%3 == 0 {
				e.commit(id)
			} else {
				e.release(id, "")
			}
		}()
	}
	wg.Wait()
	if n := retries(t, "deadlock") - deadlocks; n != 0 {
		t.Errorf("%v transactions deadlocked", n)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A hand-over whose commit reaches inventory only after the order's holds expired (inventory
// out of reach past their grace): the goods left the store all the same. They are sold then,
// once, as in-store sales of the order's holds, so on hand does not go on promising them; but
// no lower than what a later order reserved of the stock the expiry freed, the ledger noting
// the units short for staff to settle.
func TestACommitAfterItsHoldsExpiredSellsTheGoodsLateOnce(t *testing.T) {
	e := newEnv(t, withSweeper(50*time.Millisecond))
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.setStock("s1", "SCONE", 3, 0)
	req := order("o1", "s1", "LATTE", 2, "SCONE", 2)
	req.ExpireTime = timestamppb.New(time.Now().Add(time.Second))
	e.mustReserve(req)
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n := e.count(`SELECT count(*) FROM holds WHERE order_id = 'o1' AND state = 'expired'`); n != 2 {
			return fmt.Errorf("%d of o1's holds expired", n)
		}
		return nil
	})
	// The next shopper reserves two of the three scones the expiry freed.
	if res := e.mustReserve(order("o2", "s1", "SCONE", 2)); res.GetOutcome() != reserved {
		t.Fatalf("reserve o2: %v", res)
	}

	commit := func() *inventoryv1.CommitHoldsResponse {
		t.Helper()
		var res inventoryv1.CommitHoldsResponse
		if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "o1"}, &res); err != nil {
			t.Fatalf("commit o1: %v", err)
		}
		return &res
	}
	res := commit()
	if len(res.GetCommitted()) != 0 || len(res.GetSoldLate()) != 2 {
		t.Fatalf("commit after expiry: committed %v, sold late %v; want both lines sold late", res.GetCommitted(), res.GetSoldLate())
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 8 || l.GetReserved() != 0 {
		t.Errorf("LATTE on hand %d, reserved %d; want 8, 0: the two handed over sold", l.GetOnHand(), l.GetReserved())
	}
	// One scone of the two left was free; the other is o2's, which keeps it.
	if l := e.level("s1", "SCONE"); l.GetOnHand() != 2 || l.GetReserved() != 2 {
		t.Errorf("SCONE on hand %d, reserved %d; want 2, 2", l.GetOnHand(), l.GetReserved())
	}
	if n := e.count(`SELECT count(*) FROM movements WHERE kind = 'in_store_sale' AND order_id = 'o1' AND hold_id IS NOT NULL`); n != 2 {
		t.Errorf("%d in-store sales of o1's holds in the ledger, want 2", n)
	}
	if n := e.count(`SELECT count(*) FROM movements WHERE kind = 'in_store_sale' AND sku = 'SCONE' AND on_hand_delta = -1 AND note LIKE '%1 units short%'`); n != 1 {
		t.Errorf("%d scone sales noting the unit short, want 1", n)
	}

	// The commit sent again (its answer lost): nothing more is sold.
	if again := commit(); len(again.GetCommitted())+len(again.GetSoldLate()) != 0 {
		t.Errorf("commit retried: %v; want nothing", again)
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 8 {
		t.Errorf("LATTE on hand %d after a retried commit, want 8", l.GetOnHand())
	}
	// A release of an expired hold sells nothing.
	if got := e.release("o1", ""); len(got) != 0 {
		t.Errorf("released %v of o1", got)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// waitExpired waits until n holds of orderID were swept.
func (e *env) waitExpired(orderID string, n int) {
	e.t.Helper()
	testenv.CheckFor(e.t, 15*time.Second, 20*time.Millisecond, func() error {
		if got := e.count(`SELECT count(*) FROM holds WHERE order_id = $1 AND state = 'expired'`, orderID); got != n {
			return fmt.Errorf("%d of %s's holds expired", got, orderID)
		}
		return nil
	})
}

// shortExpiry is o's reserve request with holds expiring in a second.
func shortExpiry(o *inventoryv1.ReserveHoldsRequest) *inventoryv1.ReserveHoldsRequest {
	o.ExpireTime = timestamppb.New(time.Now().Add(time.Second))
	return o
}

// A line dropped (marked unavailable) before the hand-over, both reaching inventory after the
// order's holds expired: its goods never left the store, so the late commit does not sell
// them, whether the release comes in the commit's batch (fulfilment's round) or before it.
func TestALateReleaseKeepsItsLineFromTheLateSale(t *testing.T) {
	e := newEnv(t, withSweeper(50*time.Millisecond))
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.setStock("s1", "MUFFIN", 10, 0)
	e.mustReserve(shortExpiry(order("batched", "s1", "LATTE", 2, "MUFFIN", 3)))
	e.mustReserve(shortExpiry(order("apart", "s1", "LATTE", 1, "MUFFIN", 4)))
	e.waitExpired("batched", 2)
	e.waitExpired("apart", 2)

	res := e.changeHolds(releaseChange("batched", "l2"), commitChange("batched"))
	if sold := res.GetResults()[1].GetSoldLate(); len(sold) != 1 || sold[0].GetLineId() != "l1" {
		t.Errorf("the commit after its line l2 was dropped sold late %v; want l1 only", sold)
	}
	e.release("apart", "l2")
	var apart inventoryv1.CommitHoldsResponse
	if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "apart"}, &apart); err != nil {
		t.Fatal(err)
	}
	if sold := apart.GetSoldLate(); len(sold) != 1 || sold[0].GetLineId() != "l1" {
		t.Errorf("the commit after its line l2 was released sold late %v; want l1 only", sold)
	}
	if l := e.level("s1", "MUFFIN"); l.GetOnHand() != 10 {
		t.Errorf("MUFFIN on hand %d, want 10: the dropped lines' muffins never left the store", l.GetOnHand())
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 7 {
		t.Errorf("LATTE on hand %d, want 7", l.GetOnHand())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A late sale cut short (the stock its expiry freed reserved since) still left the shelf in
// full: a count taken before it and reported after takes all of it off, as it does a till sale
// clamped the same way (the control, at s2).
func TestACountReportedLateTakesOffAShortenedLateSaleInFull(t *testing.T) {
	e := newEnv(t, withSweeper(50*time.Millisecond))
	for _, st := range []string{"s1", "s2"} {
		e.createStore(storeAt(st, 47.61, -122.33))
		e.setStock(st, "LATTE", 10, 0)
	}
	e.mustReserve(shortExpiry(order("o1", "s1", "LATTE", 5)))
	e.waitExpired("o1", 1)
	e.mustReserve(order("o2", "s1", "LATTE", 8))
	e.mustReserve(order("c2", "s2", "LATTE", 8))

	time.Sleep(20 * time.Millisecond)
	countedAt := time.Now() // staff count 10 on the shelf of each store, then 5 lattes leave each
	time.Sleep(20 * time.Millisecond)
	if res := e.changeHolds(commitChange("o1")); len(res.GetResults()[0].GetSoldLate()) != 1 {
		t.Fatalf("o1's commit: %v", res)
	}
	if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s2", Sku: "LATTE", Delta: -5,
		Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_IN_STORE_SALE, ClampToReserved: true, IdempotencyKey: nextKey("sale")}); err != nil {
		t.Fatal(err)
	}
	e.release("o2", "")
	e.release("c2", "")
	for _, st := range []string{"s2", "s1"} {
		if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: st, Sku: "LATTE", OnHand: 10, KeepSafetyStock: true,
			OccurTime: timestamppb.New(countedAt), IdempotencyKey: nextKey("count")}); err != nil {
			t.Fatal(err)
		}
	}
	if l := e.level("s2", "LATTE"); l.GetOnHand() != 5 {
		t.Fatalf("control: s2 on hand %d after the count, want 5", l.GetOnHand())
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 5 {
		t.Errorf("s1 on hand %d after the count, want 5: 10 counted, 5 handed over since", l.GetOnHand())
	}
	e.requireLedgerMatches()
}

// handedOverAt is commitChange for an order handed over at at.
func handedOverAt(orderID string, at time.Time) *inventoryv1.HoldChange {
	return &inventoryv1.HoldChange{Change: &inventoryv1.HoldChange_Commit{Commit: &inventoryv1.CommitHoldsRequest{
		OrderId: orderID, OccurTime: timestamppb.New(at)}}}
}

// stockCountedAgo sets sku's stock at store as counted ago before now: hand-overs the test
// times in the last minutes then came after the row's last count.
func (e *env) stockCountedAgo(store, sku string, onHand int32, ago time.Duration) {
	e.t.Helper()
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: onHand,
		OccurTime: timestamppb.New(time.Now().Add(-ago)), IdempotencyKey: nextKey("set")}); err != nil {
		e.t.Fatalf("SetStock(%s, %s): %v", store, sku, err)
	}
}

// countStock is a count of sku at store, reported now.
func (e *env) countStock(store, sku string, onHand int32, clamp bool) {
	e.t.Helper()
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: store, Sku: sku, OnHand: onHand, KeepSafetyStock: true,
		ClampToReserved: clamp, IdempotencyKey: nextKey("count")}); err != nil {
		e.t.Fatalf("count %s at %s: %v", sku, store, err)
	}
}

// Goods handed over before a count whose commit reaches inventory only after it (fulfilment
// out of touch with inventory meanwhile): the count did not find them, so the commit must not
// take them off on hand again. Where the count was cut short at what open orders reserved
// (these goods' own holds among them), the commit takes off what the count could not. A
// hand-over after the count is a sale like any other.
func TestACommitOfGoodsHandedOverBeforeACountTakesOffOnlyWhatTheCountLeft(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.stockCountedAgo("s1", "LATTE", 12, 10*time.Minute)
	e.stockCountedAgo("s1", "SCONE", 10, 10*time.Minute)
	e.mustReserve(order("o1", "s1", "LATTE", 2))
	e.mustReserve(order("o2", "s1", "LATTE", 4))
	e.mustReserve(order("o3", "s1", "SCONE", 4))
	e.mustReserve(order("o4", "s1", "LATTE", 1))
	e.mustReserve(order("o5", "s1", "SCONE", 2))
	e.stockCountedAgo("s1", "CAKE", 10, 10*time.Minute)
	e.mustReserve(order("o6", "s1", "CAKE", 3))
	e.mustReserve(order("o7", "s1", "CAKE", 3))

	e.mustReserve(order("o8", "s1", "LATTE", 1))

	// o1, o3, o6 and o7 left the store two minutes before the count; o8 ten seconds before it,
	// which is within the clocks' margin (handOverTime): taken for after the count.
	handedOver, justBefore := time.Now().Add(-2*time.Minute), time.Now().Add(-10*time.Second)
	e.countStock("s1", "LATTE", 9, false) // 12 less o1's 2 and o8's 1
	// 10 less o3's 4, and one scone gone missing: 5 found, which the count may not take on
	// hand below the 6 reserved (o3's 4, o5's 2).
	e.countStock("s1", "SCONE", 5, true)
	e.countStock("s1", "CAKE", 3, true) // 10 less 6, one missing: kept at the 6 reserved
	time.Sleep(20 * time.Millisecond)
	afterCount := time.Now() // o4 leaves after the count

	res := e.changeHolds(handedOverAt("o1", handedOver), handedOverAt("o3", handedOver), handedOverAt("o4", afterCount),
		handedOverAt("o8", justBefore))
	for i, r := range res.GetResults() {
		if len(r.GetHolds()) != 1 || r.GetErrorCode() != 0 {
			t.Fatalf("commit %d: %v", i, r)
		}
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 7 || l.GetReserved() != 4 {
		t.Errorf("LATTE on hand %d, reserved %d; want 7, 4: counted 9 after o1 left, o4's 1 sold since, o8's 1 taken off again, o2's 4 held",
			l.GetOnHand(), l.GetReserved())
	}
	if l := e.level("s1", "SCONE"); l.GetOnHand() != 5 || l.GetReserved() != 2 {
		t.Errorf("SCONE on hand %d, reserved %d; want 5, 2: 5 found after o3's 4 left, o5's 2 held", l.GetOnHand(), l.GetReserved())
	}
	if n := e.count(`SELECT count(*) FROM movements WHERE order_id = 'o1' AND kind = 'hold_committed' AND on_hand_delta = 0
		AND occur_time IS NOT NULL AND note LIKE '%before the count%'`); n != 1 {
		t.Errorf("%d ledger rows of o1's commit noting the count, want 1", n)
	}
	// Sent again, the commits change nothing, and what the count left is not taken twice.
	e.changeHolds(handedOverAt("o1", handedOver), handedOverAt("o3", handedOver))
	if l := e.level("s1", "SCONE"); l.GetOnHand() != 5 {
		t.Errorf("SCONE on hand %d after the commits were sent again, want 5", l.GetOnHand())
	}
	// Two orders' goods gone before one count: each commit takes off only what the count left
	// and the other has not taken.
	e.changeHolds(handedOverAt("o6", handedOver))
	e.changeHolds(handedOverAt("o7", handedOver))
	if l := e.level("s1", "CAKE"); l.GetOnHand() != 3 || l.GetReserved() != 0 {
		t.Errorf("CAKE on hand %d, reserved %d; want 3, 0: 3 found after o6's and o7's 6 left", l.GetOnHand(), l.GetReserved())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A count taken after a hand-over, reported after the hand-over's commit was recorded, does
// not take the goods off again: the commit's ledger row says when they left. So too a late
// sale (the order's holds expired before its commit came) of goods handed over before a count
// recorded meanwhile: the count did not find them.
func TestACountTakenAfterAHandOverDoesNotTakeItsGoodsOffAgain(t *testing.T) {
	e := newEnv(t, withSweeper(50*time.Millisecond))
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.stockCountedAgo("s1", "MUFFIN", 10, 10*time.Minute)
	e.stockCountedAgo("s1", "BAGEL", 10, 10*time.Minute)
	e.mustReserve(order("o1", "s1", "MUFFIN", 3))
	e.mustReserve(shortExpiry(order("o2", "s1", "BAGEL", 2)))
	e.waitExpired("o2", 1)
	// Placed before they were handed over, as holds are: a hand-over is never taken for
	// earlier than its hold.
	if _, err := e.pool.Exec(e.ctx(), `UPDATE holds SET create_time = now() - interval '5 minutes' WHERE order_id IN ('o1', 'o2')`); err != nil {
		t.Fatal(err)
	}

	handedOver := time.Now().Add(-3 * time.Minute) // o1 and o2 left the store
	countedAt := time.Now().Add(-time.Minute)      // 7 muffins counted, reported later
	e.countStock("s1", "BAGEL", 8, false)          // 10 less o2's 2
	if res := e.changeHolds(handedOverAt("o1", handedOver), handedOverAt("o2", handedOver)); len(res.GetResults()[1].GetSoldLate()) != 1 {
		t.Fatalf("commits: %v", res)
	}
	if l := e.level("s1", "BAGEL"); l.GetOnHand() != 8 {
		t.Errorf("BAGEL on hand %d, want 8: counted after o2's 2 left", l.GetOnHand())
	}
	if l := e.level("s1", "MUFFIN"); l.GetOnHand() != 7 {
		t.Fatalf("MUFFIN on hand %d after o1's commit, want 7", l.GetOnHand())
	}
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "MUFFIN", OnHand: 7, KeepSafetyStock: true,
		OccurTime: timestamppb.New(countedAt), IdempotencyKey: nextKey("count")}); err != nil {
		t.Fatal(err)
	}
	if l := e.level("s1", "MUFFIN"); l.GetOnHand() != 7 {
		t.Errorf("MUFFIN on hand %d after the count reported late, want 7: counted after o1's 3 left", l.GetOnHand())
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A row whose last count was taken before count_short was kept (migration 00010 left it
// NULL): what that count left is not known, so the commit of goods handed over before it takes
// them off in full, as inventory did before. Were it taken as 0, a count cut short at the
// reserved units would leave its phantom units on hand, to be promised again.
func TestACommitAfterACountFromBeforeCountShortWasKeptTakesItsGoodsOff(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.stockCountedAgo("s1", "CAKE", 2, 10*time.Minute)
	e.mustReserve(order("o1", "s1", "CAKE", 2))
	handedOver := time.Now().Add(-2 * time.Minute) // o1's 2 cakes left the store
	e.countStock("s1", "CAKE", 0, true)            // none found: kept at the 2 reserved
	if _, err := e.pool.Exec(e.ctx(), `UPDATE stock SET count_short = NULL WHERE store_id = 's1' AND sku = 'CAKE'`); err != nil {
		t.Fatal(err) // as the row of a count from before the upgrade is
	}
	e.changeHolds(handedOverAt("o1", handedOver))
	if l := e.level("s1", "CAKE"); l.GetOnHand() != 0 || l.GetReserved() != 0 {
		t.Errorf("CAKE on hand %d, reserved %d after o1's commit; want 0, 0: the count found none and o1's goods are gone",
			l.GetOnHand(), l.GetReserved())
	}
	e.requireLedgerMatches()
}

// A count dated ahead of inventory's clock (a POS clock running fast, within the skew allowed)
// is taken as of when it was recorded: an order reserved and handed over after that is sold
// as ever, not passed as counted already.
func TestACountDatedAheadDoesNotSwallowLaterSales(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	if _, err := e.admin.SetStock(e.ctx(), &inventoryv1.SetStockRequest{StoreId: "s1", Sku: "LATTE", OnHand: 10, KeepSafetyStock: true,
		OccurTime: timestamppb.New(time.Now().Add(3 * time.Minute)), IdempotencyKey: nextKey("count")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	e.mustReserve(order("o1", "s1", "LATTE", 2))
	if r := e.changeHolds(handedOverAt("o1", time.Now())).GetResults()[0]; len(r.GetHolds()) != 1 {
		t.Fatalf("commit: %v", r)
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 8 || l.GetReserved() != 0 {
		t.Errorf("LATTE on hand %d, reserved %d; want 8, 0: 2 sold after the count was recorded", l.GetOnHand(), l.GetReserved())
	}
	e.requireLedgerMatches()
}

// Orders handed over before a clamped count commit from two copies at once while the count is
// taken again: every good is gone, and what the counts could not take off is taken once.
func TestConcurrentCommitsOfGoodsHandedOverBeforeAClampedCount(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 100, 0)
	for i := range 20 {
		e.mustReserve(order(fmt.Sprintf("o%02d", i), "s1", "LATTE", 5))
	}
	handedOver := time.Now().Add(-2 * time.Minute)
	e.countStock("s1", "LATTE", 0, true)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			var res inventoryv1.CommitHoldsResponse
			if err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: fmt.Sprintf("o%02d", i),
				OccurTime: timestamppb.New(handedOver)}, &res); err != nil {
				t.Errorf("commit %d: %v", i, err)
			}
		})
		if i == 10 {
			wg.Go(func() { e.countStock("s1", "LATTE", 0, true) })
		}
	}
	wg.Wait()
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 0 || l.GetReserved() != 0 {
		t.Errorf("on hand %d, reserved %d; want 0, 0", l.GetOnHand(), l.GetReserved())
	}
	if n := e.count(`SELECT count(*) FROM stock WHERE count_short <> 0`); n != 0 {
		t.Errorf("%d rows with count_short left", n)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}

// A hand-over time in the future (beyond the clocks' skew) is refused, naming the field, and
// commits nothing.
func TestACommitHandedOverInTheFutureIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "LATTE", 10, 0)
	e.mustReserve(order("o1", "s1", "LATTE", 2))
	future := time.Now().Add(time.Hour)
	r := e.changeHolds(handedOverAt("o1", future)).GetResults()[0]
	if codes.Code(r.GetErrorCode()) != codes.InvalidArgument || !strings.Contains(r.GetErrorMessage(), "changes[0].commit.occur_time") {
		t.Errorf("change_holds: %v; want InvalidArgument naming changes[0].commit.occur_time", r)
	}
	var res inventoryv1.CommitHoldsResponse
	err := e.call(inventory.SubjectCommitHolds, &inventoryv1.CommitHoldsRequest{OrderId: "o1", OccurTime: timestamppb.New(future)}, &res)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "occur_time") {
		t.Errorf("commit_holds: %v; want InvalidArgument naming occur_time", err)
	}
	if l := e.level("s1", "LATTE"); l.GetOnHand() != 10 || l.GetReserved() != 2 {
		t.Errorf("LATTE on hand %d, reserved %d; want 10, 2: nothing committed", l.GetOnHand(), l.GetReserved())
	}
}
