package inventory_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// Deadlines and occurrence times in requests are judged by the database's clock, which the
// sweeps that end holds read, whatever this process's own clock says. A copy whose clock ran
// ten minutes fast refused every reserve (its deadline "in the past"), and one running slow
// took deadlines the sweeper had passed already and refused a till's sale at the right time
// ("in the future").
func TestDeadlinesAreJudgedByTheDatabasesClockNotTheProcesss(t *testing.T) {
	for _, skew := range []time.Duration{10 * time.Minute, -10 * time.Minute} {
		t.Run(fmt.Sprintf("process clock %v off", skew), func(t *testing.T) {
			e := newEnv(t, withLocalClock(skew))
			e.createStore(storeAt("s1", 47.61, -122.33))
			e.setStock("s1", "SCONE", 100, 0)

			// The database's clock is this test's (one machine).
			soon := order("soon", "s1", "SCONE", 1)
			soon.ExpireTime = timestamppb.New(time.Now().Add(2 * time.Minute))
			if res, err := e.reserve(soon); err != nil || res.GetOutcome() != reserved {
				t.Errorf("a deadline 2 minutes ahead of the database's clock: %v, %v; want reserved", res, err)
			}
			past := order("past", "s1", "SCONE", 1)
			past.ExpireTime = timestamppb.New(time.Now().Add(-time.Minute))
			_, err := e.reserve(past)
			requireStatus(t, err, codes.InvalidArgument, "expire_time")

			var ext inventoryv1.ExtendHoldsResponse
			err = e.call(inventory.SubjectExtendHolds, &inventoryv1.ExtendHoldsRequest{OrderId: "soon", ExpireTime: timestamppb.New(time.Now().Add(-time.Minute))}, &ext)
			requireStatus(t, err, codes.InvalidArgument, "expire_time")

			// A delivery recorded at the right time, just now.
			if _, err := e.admin.AdjustStock(e.ctx(), &inventoryv1.AdjustStockRequest{StoreId: "s1", Sku: "SCONE", Delta: 1,
				Reason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DELIVERY, OccurTime: timestamppb.New(time.Now()), IdempotencyKey: nextKey("adjust")}); err != nil {
				t.Errorf("a delivery at the database's time now: %v", err)
			}
		})
	}
}
