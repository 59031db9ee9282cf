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
	"github.com/handoff-dev/handoff/services/fulfilment/domain"
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
			report(b, fmt.Sprintf("place_order, %d callers", callers), "orders", latencies, time.Since(start), failures.Load())
		})
	}
}

// report stops the clock and reports a case's rate (one call per latency) and its latency
// p50/p99, as metrics and as a line of text.
func report(b *testing.B, what, unit string, latencies []time.Duration, elapsed time.Duration, failures int64) {
	b.StopTimer()
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	rate := float64(len(latencies)) / elapsed.Seconds()
	b.ReportMetric(rate, unit+"/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(0, "ns/op")
	if len(latencies) >= 100 {
		fmt.Printf("%s: %d %s in %s = %.0f %s/s, p50 %s, p99 %s, failures %d\n", what, len(latencies), unit,
			elapsed.Round(time.Millisecond), rate, unit, pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), failures)
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

// BenchmarkStaffChanges measures the staff's side of orders through fulfilment's gRPC API:
// accept, mark ready and hand over with the pickup code, each order by one caller in turn as
// a store's terminal would, many stores at once. The orders are placed before the clock
// starts. It reports changes/s and the latency of one change, p50/p99, per caller count, over
// HANDOFF_BENCH_ORDERS/2 orders (default 2000, three changes each):
//
//	go test -run '^$' -bench BenchmarkStaffChanges -benchtime 1x ./services/fulfilment/
func BenchmarkStaffChanges(b *testing.B) {
	e := newEnv(b, envOptions{})
	chain := demo.Seattle()
	if _, err := e.inv.LoadDemo(e.ctx, chain); err != nil {
		b.Fatal(err)
	}
	for _, st := range chain.Stores {
		if _, err := e.inv.UpdateStore(e.ctx, &inventoryv1.Store{Id: st.ID, OpeningHours: openAllDay()},
			[]string{"opening_hours", "hours_exceptions"}, 0); err != nil {
			b.Fatalf("open %s around the clock: %v", st.ID, err)
		}
		e.setStock(st.ID, "LATTE-16", 1_000_000)
	}
	var seq atomic.Int64
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			total := max(b.N, benchOrders()/2)
			type placed struct{ id, store string }
			orders := make(chan placed, total)
			var (
				wg   sync.WaitGroup
				next atomic.Int64
			)
			for range 64 {
				wg.Go(func() {
					for next.Add(1) <= int64(total) {
						n := seq.Add(1)
						store := chain.Stores[rand.IntN(len(chain.Stores))].ID
						o, err := e.place(checkout(fmt.Sprintf("staff-bench-%d", n), "k", store, line{"LATTE-16", 1}))
						if err != nil || o.GetState() != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
							b.Errorf("place order %d: %v (%s)", n, err, o.GetState())
							return
						}
						orders <- placed{o.GetId(), store}
					}
				})
			}
			wg.Wait()
			close(orders)
			if b.Failed() {
				return
			}

			var (
				mu        sync.Mutex
				latencies = make([]time.Duration, 0, 3*total)
				failures  atomic.Int64
			)
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Go(func() {
					mine := make([]time.Duration, 0, 3*total/callers+3)
					timed := func(what string, call func() error) bool {
						t0 := time.Now()
						err := call()
						mine = append(mine, time.Since(t0))
						if err != nil && failures.Add(1) == 1 {
							b.Errorf("%s: %v", what, err)
						}
						return err == nil
					}
					for o := range orders {
						staff := e.asStaff(o.store)
						_ = timed("accept", func() error {
							_, err := e.store.AcceptOrder(staff, &fulfilmentv1.AcceptOrderRequest{StoreId: o.store, OrderId: o.id})
							return err
						}) && timed("mark ready", func() error {
							_, err := e.store.MarkReady(staff, &fulfilmentv1.MarkReadyRequest{StoreId: o.store, OrderId: o.id})
							return err
						}) && timed("hand over", func() error {
							_, err := e.store.HandOver(staff, &fulfilmentv1.HandOverRequest{StoreId: o.store, OrderId: o.id,
								PickupCode: domain.PickupCode(testSecret, o.id)})
							return err
						})
					}
					mu.Lock()
					latencies = append(latencies, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			report(b, fmt.Sprintf("staff changes, %d callers", callers), "changes", latencies, time.Since(start), failures.Load())
		})
	}
}
