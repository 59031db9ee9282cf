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
	"google.golang.org/protobuf/proto"

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

// BenchmarkReconnectCatchUp measures a terminal's reconnect to a busy store's feed: the time
// from opening StreamTickets to receiving the one ticket it has not acknowledged, behind
// HANDOFF_BENCH_TICKETS (default 20,000) tickets of the replay window that it has. Every
// terminal of a chain does this after an adapter restart or a rolling upgrade.
func BenchmarkReconnectCatchUp(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("HANDOFF_BENCH_TICKETS")); err == nil && v > 0 {
		n = v
	}
	e := newEnv(b)
	const store = "reconnect-1"
	terminal, cred := e.register("Counter", store)
	seedFeed(e, store, n+1, terminal, func(seq int) bool { return seq <= n })
	ctx := context.Background()
	c := posv1connect.NewTerminalServiceClient(e.h2c, e.base, connect.WithGRPC(), connect.WithInterceptors(bearer(cred)))
	reconnects := max(b.N, 20)
	took := make([]time.Duration, 0, reconnects)
	b.ResetTimer()
	for range reconnects {
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		stream, err := c.StreamTickets(sctx, connect.NewRequest(&posv1.StreamTicketsRequest{StoreId: store}))
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		if !stream.Receive() {
			cancel()
			b.Fatalf("no ticket: %v", stream.Err())
		}
		if seq := stream.Msg().GetTicket().GetSequence(); seq != uint64(n+1) {
			b.Fatalf("first ticket %d, want the one not acknowledged, %d", seq, n+1)
		}
		took = append(took, time.Since(start))
		cancel()
		_ = stream.Close()
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.Logf("%d reconnects behind %d acknowledged tickets: p50 %s, max %s", reconnects, n, took[len(took)/2], took[len(took)-1])
}

// seedFeed writes n tickets of store straight into the feed, as raised ones are, those whose
// sequence acked says acknowledged by reader.
func seedFeed(e *env, store string, n int, reader string, acked func(seq int) bool) {
	e.t.Helper()
	payload, err := proto.Marshal(&posv1.Ticket{Kind: posv1.TicketKind_TICKET_KIND_NEW_ORDER, StoreId: store, Order: order(store, 0),
		Message: "New order for Shopper 0: 2 item(s), ready by 18:30 PDT; note: extra hot"})
	if err != nil {
		e.t.Fatal(err)
	}
	var ackedSeqs []int
	for seq := 1; seq <= n; seq++ {
		if acked(seq) {
			ackedSeqs = append(ackedSeqs, seq)
		}
	}
	ctx := context.Background()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO store_feeds (store_id, last_seq) VALUES ($1, $2)`, []any{store, n}},
		{`INSERT INTO tickets (store_id, seq, ticket_id, kind, order_id, payload, create_time)
			SELECT $1, g, gen_random_uuid(), 'new', 'ord-' || g, $2, now() FROM generate_series(1, $3::int) g`, []any{store, payload, n}},
		{`INSERT INTO ticket_acks (reader, ticket_id, store_id) SELECT $1, ticket_id, store_id FROM tickets WHERE store_id = $2 AND seq = ANY($3)`,
			[]any{reader, store, ackedSeqs}},
		{`ANALYZE tickets`, nil},
		{`ANALYZE ticket_acks`, nil},
	} {
		if _, err := e.pool.Exec(ctx, q.sql, q.args...); err != nil {
			e.t.Fatal(err)
		}
	}
}
