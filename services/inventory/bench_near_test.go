package inventory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/testenv"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// BenchmarkReserveNear measures what the load run's shoppers do: reserve "at the nearest store"
// (Near, a 10 km radius holding all 50 stores of a city) with 1–3 lines, through NATS, with
// callers 16 and 64, each case for at least HANDOFF_BENCH_SECONDS (default 2). Besides holds/s
// and Go CPU per order it reports the database work per order: round trips (statements sent
// alone plus pipelines, each one network exchange) and statements.
func BenchmarkReserveNear(b *testing.B) {
	const (
		stores = 50
		skus   = 50
	)
	ctx := context.Background()
	schema := testenv.UniqueSchema(b, "bench_near")
	base := benchPool(b, testenv.DatabaseURL(b), schema, int32(envInt("HANDOFF_BENCH_POOL", 8)))
	seedBenchStock(b, base, stores, skus)
	trace := &pgTrace{}
	svc := inventory.New(inventory.Config{Pool: tracedPool(b, base, trace), Logger: testenv.Logger(b)})
	ns := testenv.NATS(b)
	rpc, err := natsrpc.AddService(testenv.NATSConn(b, ns), "inventory", "0.0.0", "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rpc.Stop() })
	if err := svc.RegisterNATS(rpc); err != nil {
		b.Fatal(err)
	}
	nc := testenv.NATSConn(b, ns)

	var seq atomic.Int64
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			start := seq.Load()
			trace.take()
			runCallers(b, callers, func(rng *rand.Rand) error {
				req := &inventoryv1.ReserveHoldsRequest{OrderId: fmt.Sprintf("near-%d", seq.Add(1)),
					Near:         &commonv1.LatLng{Latitude: 47.5 + rng.Float64()*0.05, Longitude: -122.3 + (rng.Float64()-0.5)*0.02},
					RadiusMeters: 10_000, ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
				for l := range 1 + rng.IntN(3) {
					req.Lines = append(req.Lines, &inventoryv1.HoldLine{LineId: fmt.Sprint(l), Sku: fmt.Sprintf("SKU-%03d", rng.IntN(skus)), Quantity: 1})
				}
				var res inventoryv1.ReserveHoldsResponse
				if err := natsrpc.Call(ctx, nc, inventory.SubjectReserveHolds, req, &res); err != nil {
					return err
				}
				if res.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
					return fmt.Errorf("reserve: %v", &res)
				}
				return nil
			})
			orders := float64(max(seq.Load()-start, 1))
			trips, statements, _ := trace.take()
			b.ReportMetric(float64(trips)/orders, "roundtrips/order")
			b.ReportMetric(float64(statements)/orders, "statements/order")
		})
	}
}
