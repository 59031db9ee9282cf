package inventory_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// Invariants 7 and 1 together: bad reserves mixed into a stampede on one hot SKU, through two
// copies, land in the same batches as the good ones. Each bad one is refused alone with its
// own code naming its field and holds nothing; the good ones are decided as if the bad ones
// were never sent (exactly the 10 units that may be promised); the books balance.
func TestBadReservesInAStampedeOnAHotSKUFailAloneAndHoldNothing(t *testing.T) {
	e := newEnv(t)
	e.addCopy()
	e.createStore(storeAt("hot-store", 47.61, -122.33))
	e.setStock("hot-store", "HOT-1", 12, 2) // 10 may be promised
	e.setStock("hot-store", "BEAN", 1000, 0)

	const good, conflicts, each = 200, 40, 40
	// Orders already holding BEAN: a reserve of HOT-1 for them is for other lines.
	for i := range conflicts {
		e.mustReserve(order(fmt.Sprintf("held-%03d", i), "hot-store", "BEAN", 1))
	}
	type kind struct {
		name  string
		req   func(i int) *inventoryv1.ReserveHoldsRequest
		code  codes.Code
		field string
	}
	bad := []kind{
		{"other lines", func(i int) *inventoryv1.ReserveHoldsRequest {
			return order(fmt.Sprintf("held-%03d", i%conflicts), "hot-store", "HOT-1", 1)
		}, codes.FailedPrecondition, ""},
		{"zero quantity", func(i int) *inventoryv1.ReserveHoldsRequest {
			return order(fmt.Sprintf("zero-%03d", i), "hot-store", "HOT-1", 0)
		}, codes.InvalidArgument, "lines[0].quantity"},
		{"past deadline", func(i int) *inventoryv1.ReserveHoldsRequest {
			r := order(fmt.Sprintf("past-%03d", i), "hot-store", "HOT-1", 1)
			r.ExpireTime = timestamppb.New(time.Now().Add(-time.Minute))
			return r
		}, codes.InvalidArgument, "expire_time"},
		{"unknown store", func(i int) *inventoryv1.ReserveHoldsRequest {
			return order(fmt.Sprintf("nostore-%03d", i), "no-such-store", "HOT-1", 1)
		}, codes.NotFound, "store_id"},
		{"line twice", func(i int) *inventoryv1.ReserveHoldsRequest {
			r := order(fmt.Sprintf("twice-%03d", i), "hot-store", "HOT-1", 1)
			r.Lines = append(r.Lines, &inventoryv1.HoldLine{LineId: "l1", Sku: "HOT-1", Quantity: 1})
			return r
		}, codes.InvalidArgument, "lines[1].line_id"},
	}

	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		gate     = make(chan struct{})
		outcomes = map[inventoryv1.ReserveOutcome]int{}
		problems []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	for i := range good {
		wg.Go(func() {
			<-gate
			res, err := e.reserve(order(fmt.Sprintf("good-%03d", i), "hot-store", "HOT-1", 1))
			if err != nil {
				fail("good reserve %d: %v", i, err)
				return
			}
			mu.Lock()
			outcomes[res.GetOutcome()]++
			mu.Unlock()
		})
		if i >= each {
			continue
		}
		for _, k := range bad {
			wg.Go(func() {
				<-gate
				res, err := e.reserve(k.req(i))
				st := status.Convert(err)
				switch {
				case err == nil:
					fail("%s %d: answered %v, want %v", k.name, i, res, k.code)
				case st.Code() != k.code:
					fail("%s %d: %v, want %v", k.name, i, err, k.code)
				case k.field != "" && !strings.Contains(st.Message(), k.field):
					fail("%s %d: %q does not name %s", k.name, i, st.Message(), k.field)
				}
			})
		}
	}
	close(gate)
	wg.Wait()
	for _, p := range problems[:min(len(problems), 10)] {
		t.Error(p)
	}
	if outcomes[reserved] != 10 || outcomes[insufficient] != good-10 {
		t.Fatalf("good reserves %v; want 10 reserved and %d insufficient", outcomes, good-10)
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE order_id NOT LIKE 'good-%' AND order_id NOT LIKE 'held-%'`); n != 0 {
		t.Errorf("%d holds of refused reserves", n)
	}
	if n := e.count(`SELECT count(*) FROM holds WHERE order_id LIKE 'held-%' AND sku <> 'BEAN'`); n != 0 {
		t.Errorf("%d HOT-1 holds added to orders that held other lines", n)
	}
	if l := e.level("hot-store", "HOT-1"); l.GetReserved() != 10 || l.GetOnHand() != 12 {
		t.Errorf("HOT-1 level %v; want on hand 12, reserved 10", l)
	}
	e.requireInvariants()
	e.requireLedgerMatches()
}
