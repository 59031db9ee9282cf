package inventory_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// writesSnapshot is everything a hold change writes: a change that fails must leave all of it as
// it was.
type writesSnapshot struct {
	openHolds, holds, movements, outbox int
	levels                              string
}

func (e *env) writes() writesSnapshot {
	e.t.Helper()
	var levels string
	if err := e.pool.QueryRow(e.ctx(), `SELECT coalesce(string_agg(format('%s/%s %s/%s', store_id, sku, on_hand, reserved), ', '
		ORDER BY store_id, sku), '') FROM stock`).Scan(&levels); err != nil {
		e.t.Fatal(err)
	}
	return writesSnapshot{
		openHolds: e.count(`SELECT count(*) FROM holds WHERE state = 'open'`),
		holds:     e.count(`SELECT count(*) FROM holds`),
		movements: e.count(`SELECT count(*) FROM movements`),
		outbox:    e.count(`SELECT count(*) FROM outbox`),
		levels:    levels,
	}
}

// The writes of a reserve or a hold change go in one round trip with their COMMIT, so a write
// that changes fewer rows than decided must stop the transaction on the server: found in Go,
// after reading the results, it would come after the commit, and holds, ledger rows and events
// would be durable without their stock change (reserved no longer the sum of open holds). A
// failpoint makes the stock UPDATE leave out one of its rows.
func TestWriteChangingFewerRowsThanDecidedCommitsNothing(t *testing.T) {
	e := newEnv(t)
	svc := e.copies[0]
	e.createStore(storeAt("s1", 47.61, -122.33))
	e.setStock("s1", "A", 10, 0)
	e.setStock("s1", "B", 10, 0)
	for _, id := range []string{"o1", "o2"} {
		if res := e.mustReserve(order(id, "s1", "A", 1, "B", 1)); res.GetOutcome() != reserved {
			t.Fatalf("reserve %s: %v", id, res)
		}
	}
	before := e.writes()
	requireNothingWritten := func(what string) {
		t.Helper()
		if after := e.writes(); after != before {
			t.Fatalf("%s failed but wrote: before %+v, after %+v", what, before, after)
		}
	}
	requireRowCheck := func(what, msg string) {
		t.Helper()
		if !strings.Contains(msg, "update stock levels changed 1 rows, want 2") {
			t.Fatalf("%s: error %q does not name the row count check", what, msg)
		}
	}

	inventory.FailDropStockDelta(svc, true)

	res, err := svc.ReserveHolds(e.ctx(), order("o3", "s1", "A", 1, "B", 1))
	if err == nil {
		t.Fatalf("reserve with a stock row left out succeeded: %v", res)
	}
	requireRowCheck("reserve", err.Error())
	requireNothingWritten("reserve")

	// Several orders together, then (the batch having failed) each alone: every one must fail,
	// none may find its holds already ended by a commit of the failed batch.
	changed, err := svc.ChangeHolds(e.ctx(), &inventoryv1.ChangeHoldsRequest{Changes: []*inventoryv1.HoldChange{
		commitChange("o1"), releaseChange("o2", ""),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range changed.GetResults() {
		if r.GetErrorCode() == int32(codes.OK) {
			t.Fatalf("change %d with a stock row left out succeeded: %v", i, r)
		}
		requireRowCheck("change holds", r.GetErrorMessage())
	}
	requireNothingWritten("change holds")

	if _, err := svc.ReleaseHolds(e.ctx(), "o1", "", inventoryv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED); err == nil {
		t.Fatal("release with a stock row left out succeeded")
	}
	requireNothingWritten("release")

	inventory.FailDropStockDelta(svc, false)
	if got := e.commit("o1"); len(got) != 2 {
		t.Fatalf("commit o1 after the failpoint: %d holds, want 2", len(got))
	}
	if got := e.release("o2", ""); len(got) != 2 {
		t.Fatalf("release o2 after the failpoint: %d holds, want 2", len(got))
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}
