package posadapter_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/handoff-dev/handoff/internal/testenv"
	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
	"github.com/handoff-dev/handoff/proto/handoff/pos/v1/posv1connect"
)

// BenchmarkConfirmedToTicket measures the time from fulfilment's CONFIRMED event reaching
// JetStream to the ticket arriving at the store's connected terminal (consumer, Postgres
// transaction, outbox relay, JetStream, live hub, gRPC stream), with 200 stores each with a
// terminal connected over its own gRPC connection and acknowledging what it gets. inFlight is
// how many orders are being confirmed at once across the chain. Each case confirms at least
// HANDOFF_BENCH_ORDERS (default 1000) orders, so that `-benchtime 1x` (as make bench runs it)
// still gives a p99.
func BenchmarkConfirmedToTicket(b *testing.B) {
	for _, inFlight := range []int{1, 8} {
		b.Run(fmt.Sprintf("in-flight=%d", inFlight), func(b *testing.B) { benchConfirmedToTicket(b, inFlight) })
	}
}

func benchConfirmedToTicket(b *testing.B, inFlight int) {
	const stores = 200
	e := newEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })

	var (
		waiting sync.Map // order id → chan time.Time
		opened  atomic.Int32
	)
	storeIDs := make([]string, stores)
	for i := range stores {
		storeIDs[i] = fmt.Sprintf("bench-%03d", i)
		_, cred := e.register("Counter", storeIDs[i])
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: &p}
		b.Cleanup(tr.CloseIdleConnections)
		c := posv1connect.NewTerminalServiceClient(&http.Client{Transport: tr}, e.base, connect.WithGRPC(), connect.WithInterceptors(bearer(cred)))
		store := storeIDs[i]
		wg.Go(func() {
			stream, err := c.StreamTickets(ctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
			if err != nil {
				b.Errorf("open feed of %s: %v", store, err)
				return
			}
			defer stream.Close()
			opened.Add(1)
			for stream.Receive() {
				tk := stream.Msg().GetTicket()
				now := time.Now()
				if ch, ok := waiting.Load(tk.GetOrderId()); ok {
					ch.(chan time.Time) <- now
				}
				go func() {
					_, _ = c.AckTicket(ctx, connect.NewRequest(&posv1.AckTicketRequest{StoreId: store, TicketId: tk.GetTicketId()}))
				}()
			}
		})
	}
	testenv.CheckFor(b, 30*time.Second, 10*time.Millisecond, func() error {
		if n := opened.Load(); n != stores {
			return fmt.Errorf("%d of %d terminals connected", n, stores)
		}
		return nil
	})

	// Warm up: every store has its first ticket before the clock runs.
	confirm := func(store string, n int) time.Duration {
		o := order(store, n)
		ch := make(chan time.Time, 1)
		waiting.Store(o.GetId(), ch)
		defer waiting.Delete(o.GetId())
		start := time.Now()
		e.publish("confirmed", o, nil)
		select {
		case got := <-ch:
			return got.Sub(start)
		case <-time.After(30 * time.Second):
			b.Errorf("no ticket for order %s within 30s", o.GetId())
			return 30 * time.Second
		}
	}
	for i, store := range storeIDs {
		confirm(store, -1-i)
	}

	total := max(b.N, benchOrders())
	latencies := make([]time.Duration, total)
	var next atomic.Int64
	b.ResetTimer()
	var workers sync.WaitGroup
	for range inFlight {
		workers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				latencies[i] = confirm(storeIDs[i%stores], i)
			}
		})
	}
	workers.Wait()
	b.StopTimer()

	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(float64(len(latencies))*p))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
	b.Logf("%d confirmed orders over %d stores, %d in flight: p50 %s, p99 %s, max %s",
		total, stores, inFlight, pct(0.50), pct(0.99), latencies[len(latencies)-1])
}

// benchOrders is HANDOFF_BENCH_ORDERS, the least number of orders a benchmark case confirms
// (default 1000).
func benchOrders() int {
	if n, err := strconv.Atoi(os.Getenv("HANDOFF_BENCH_ORDERS")); err == nil && n > 0 {
		return n
	}
	return 1000
}
