package fulfilment_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/demo"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// BenchmarkPlaceOrder measures checkouts end to end through fulfilment: place_order over NATS,
// reserve at a real inventory, the order written CONFIRMED with its event and notification, the
// extension of its holds, the outbox relay and the notification dispatcher all running, as in
// the stack (pools of pgdb's default size). Shoppers spread over the 50 demo stores (opened
// around the clock so the time of day does not matter) with two-line orders. It reports
// orders/s and p50/p99 latency per caller count, over at least HANDOFF_BENCH_ORDERS (default
// 4000) orders per case, so that `-benchtime 1x` (as make bench runs it) still measures a rate:
//
//	go test -run '^$' -bench BenchmarkPlaceOrder -benchtime 1x ./services/fulfilment/
func BenchmarkPlaceOrder(b *testing.B) {
	e := newEnv(b, envOptions{})
	chain := demo.Seattle()
	if _, err := e.inv.LoadDemo(e.ctx, chain); err != nil {
		b.Fatal(err)
	}
	skus := []string{"LATTE-16", "CAPPUCCINO-12", "CORTADO", "ESPRESSO-D"}
	for _, st := range chain.Stores {
		if _, err := e.inv.UpdateStore(e.ctx, &inventoryv1.Store{Id: st.ID, OpeningHours: openAllDay()},
			[]string{"opening_hours", "hours_exceptions"}, 0); err != nil {
			b.Fatalf("open %s around the clock: %v", st.ID, err)
		}
		for _, sku := range skus {
			e.setStock(st.ID, sku, 1_000_000)
		}
	}
	var seq atomic.Int64
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			total := max(b.N, benchOrders())
			var (
				next      atomic.Int64
				mu        sync.Mutex
				latencies = make([]time.Duration, 0, total)
				failures  atomic.Int64
				wg        sync.WaitGroup
			)
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Go(func() {
					mine := make([]time.Duration, 0, total/callers+1)
					for next.Add(1) <= int64(total) {
						n := seq.Add(1)
						store := chain.Stores[rand.IntN(len(chain.Stores))].ID
						req := checkout(fmt.Sprintf("bench-shopper-%d", n%5000), fmt.Sprintf("bench-%d", n), store,
							line{skus[rand.IntN(len(skus))], 1}, line{skus[rand.IntN(len(skus))], 1})
						req.Lines[1].LineId = "l2"
						t0 := time.Now()
						o, err := e.place(req)
						mine = append(mine, time.Since(t0))
						if err != nil || o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
							if failures.Add(1) == 1 {
								b.Errorf("checkout %d: %v (state %s, %s)", n, err, o.GetState(), o.GetReason())
							}
						}
					}
					mu.Lock()
					latencies = append(latencies, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(latencies)
			pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
			rate := float64(total) / elapsed.Seconds()
			b.ReportMetric(rate, "orders/s")
			b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
			if total >= 100 {
				fmt.Printf("place_order, %d callers: %d orders in %s = %.0f orders/s, p50 %s, p99 %s, failures %d\n",
					callers, total, elapsed.Round(time.Millisecond), rate, pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), failures.Load())
			}
		})
	}
}

// benchOrders is HANDOFF_BENCH_ORDERS, the least number of orders a BenchmarkPlaceOrder case
// places (default 4000).
func benchOrders() int {
	if n, err := strconv.Atoi(os.Getenv("HANDOFF_BENCH_ORDERS")); err == nil && n > 0 {
		return n
	}
	return 4000
}
