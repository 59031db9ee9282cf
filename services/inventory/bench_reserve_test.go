package inventory_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/services/inventory"
)

// BenchmarkReserveHolds measures holds per second through the whole service path (a NATS
// request from a caller, the natsrpc endpoint, the coalescing reserver, Postgres), side by
// side with a raw pgx loop doing the least a reserve must do in Postgres: a conditional
// stock UPDATE, an order INSERT and an outbox INSERT per order, one transaction each.
//
//	spread: orders over 200 stores × 50 SKUs;  hot: every order for one SKU at one store.
//
// Callers 4, 16, 64, each sub-benchmark for at least HANDOFF_BENCH_SECONDS (default 2) even
// with -benchtime 1x. Each order is one line of one unit. raw+notify is the raw loop with the
// outbox's pg_notify, the fair baseline for any service that writes events through it. Run with
//
//	go test ./services/inventory -run '^$' -bench ReserveHolds -count 3
//
// HANDOFF_BENCH_POOL (default 8) sizes the service's pool and HANDOFF_BENCH_RESERVE_WORKERS
// (default: the service's default) its reserve workers; the raw loop gets one connection per
// caller.
// Besides holds/s it reports where the time goes: requests per transaction, milliseconds per
// transaction phase, the caller's round trip, and CPU of this process and of the machine.
func BenchmarkReserveHolds(b *testing.B) {
	const (
		spreadStores = 200
		spreadSKUs   = 50
	)
	poolSize := envInt("HANDOFF_BENCH_POOL", 8)
	workers := envInt("HANDOFF_BENCH_RESERVE_WORKERS", 0)

	ctx := context.Background()
	url := testenv.DatabaseURL(b)
	svcSchema, rawSchema := testenv.UniqueSchema(b, "bench_svc"), testenv.UniqueSchema(b, "bench_raw")
	svcPool := benchPool(b, url, svcSchema, int32(poolSize))
	rawPool := benchPool(b, url, rawSchema, 64)
	for _, p := range []*pgxpool.Pool{svcPool, rawPool} {
		seedBenchStock(b, p, spreadStores, spreadSKUs)
	}
	if _, err := rawPool.Exec(ctx, `CREATE TABLE raw_orders (order_id text PRIMARY KEY, store_id text NOT NULL, sku text NOT NULL,
		quantity int NOT NULL, create_time timestamptz NOT NULL DEFAULT now())`); err != nil {
		b.Fatal(err)
	}

	svc := inventory.New(inventory.Config{Pool: svcPool, Logger: testenv.Logger(b), ReserveWorkers: workers})
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
	b.Logf("service pool %d connections, reserve workers %d (0: the default); raw loop: one connection per caller", poolSize, workers)

	var seq atomic.Int64
	pickSpread := func(rng *rand.Rand) (string, string) {
		return fmt.Sprintf("bench-%03d", rng.IntN(spreadStores)), fmt.Sprintf("SKU-%03d", rng.IntN(spreadSKUs))
	}
	pickHot := func(*rand.Rand) (string, string) { return "bench-000", "SKU-000" }

	for _, c := range []struct {
		name string
		pick func(*rand.Rand) (string, string)
	}{{"spread", pickSpread}, {"hot", pickHot}} {
		for _, callers := range []int{4, 16, 64} {
			for _, notify := range []bool{false, true} {
				name := "raw"
				if notify {
					name = "raw+notify"
				}
				b.Run(fmt.Sprintf("%s/callers=%d/%s", c.name, callers, name), func(b *testing.B) {
					runCallers(b, callers, func(rng *rand.Rand) error {
						store, sku := c.pick(rng)
						return rawReserve(ctx, rawPool, fmt.Sprintf("raw-%d", seq.Add(1)), store, sku, notify)
					})
				})
			}
			b.Run(fmt.Sprintf("%s/callers=%d/service", c.name, callers), func(b *testing.B) {
				before := gatherMetrics(b)
				runCallers(b, callers, func(rng *rand.Rand) error {
					store, sku := c.pick(rng)
					req := &inventoryv1.ReserveHoldsRequest{OrderId: fmt.Sprintf("svc-%d", seq.Add(1)), StoreId: store,
						Lines:      []*inventoryv1.HoldLine{{LineId: "1", Sku: sku, Quantity: 1}},
						ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
					var res inventoryv1.ReserveHoldsResponse
					if err := natsCall(nc, req, &res); err != nil {
						return err
					}
					if res.GetOutcome() != inventoryv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
						return fmt.Errorf("reserve: %v", &res)
					}
					return nil
				})
				reportReservePhases(b, before, gatherMetrics(b))
			})
		}
	}
	b.Run("invariants", func(b *testing.B) {
		for b.Loop() {
			res, err := svc.CheckInvariants(ctx, "")
			if err != nil || !res.GetOk() {
				b.Fatalf("invariants after the benchmark: %v %v", err, res.GetViolations())
			}
		}
	})
}

func natsCall(nc *nats.Conn, req, res proto.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return natsrpc.Call(ctx, nc, inventory.SubjectReserveHolds, req, res)
}

// rawReserve is the baseline: what Postgres alone does for one reserve. With notify, the
// outbox row also sends pg_notify as the project's outbox does (see the package doc of
// internal/outbox): that takes a database-wide lock from pre-commit until the commit is
// flushed, so notifying transactions commit one at a time.
func rawReserve(ctx context.Context, pool *pgxpool.Pool, orderID, store, sku string, notify bool) error {
	payload := []byte("0123456789012345678901234567890123456789012345678901234567890123")
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE stock SET reserved = reserved + 1, update_time = now()
			WHERE store_id = $1 AND sku = $2 AND on_hand - reserved - safety_stock >= 1`, store, sku)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("raw: out of stock")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO raw_orders (order_id, store_id, sku, quantity) VALUES ($1, $2, $3, 1)`, orderID, store, sku); err != nil {
			return err
		}
		sql := `INSERT INTO outbox (event_id, subject, event_type, payload) VALUES ($1, $2, $3, $4)`
		if notify {
			sql = `WITH ins AS (INSERT INTO outbox (event_id, subject, event_type, payload) VALUES ($1, $2, $3, $4) RETURNING seq)
				SELECT pg_notify('handoff_bench_raw', '') FROM ins`
		}
		_, err = tx.Exec(ctx, sql, uuid.NewString(), inventory.SubjectStockChanged, "handoff.inventory.v1.StockLevelChanged", payload)
		return err
	})
}

// runCallers runs operations spread over callers goroutines, at least b.N of them and for at
// least HANDOFF_BENCH_SECONDS (default 2), so that a throughput means something even with
// -benchtime 1x, and reports holds/s, ns/op of what actually ran, and CPU.
func runCallers(b *testing.B, callers int, op func(*rand.Rand) error) {
	var (
		next    atomic.Int64
		done    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
	)
	minRun := time.Duration(envInt("HANDOFF_BENCH_SECONDS", 2)) * time.Second
	cpu0, mach0 := selfCPU(), machineCPU()
	b.ResetTimer()
	start := time.Now()
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for next.Add(1) <= int64(b.N) || time.Since(start) < minRun {
				if err := op(rng); err != nil {
					errOnce.Do(func() { failed = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	n := float64(done.Load())
	cpu, mach := selfCPU()-cpu0, machineCPU().sub(mach0)
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/op")
	b.ReportMetric(n/elapsed.Seconds(), "holds/s")
	b.ReportMetric(float64(cpu.Microseconds())/n, "go-cpu-µs/hold")
	b.ReportMetric(100*mach.busyShare(), "machine-busy-%")
}

func benchPool(b *testing.B, url, schema string, conns int32) *pgxpool.Pool {
	ctx := context.Background()
	pool, err := pgdb.Open(ctx, url, schema, pgdb.WithMaxConns(conns), pgdb.WithAppName("handoff-bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := pgdb.Migrate(ctx, pool, schema, inventory.Migrations(), nil); err != nil {
		b.Fatal(err)
	}
	return pool
}

// seedBenchStock creates stores bench-000… (open around the clock) with SKU-000… stocked
// far beyond what a benchmark reserves, with the ledger rows that make it add up.
func seedBenchStock(b *testing.B, pool *pgxpool.Pool, stores, skus int) {
	ctx := context.Background()
	hours := `[{"weekday":1,"open":"00:00","close":"24:00"},{"weekday":2,"open":"00:00","close":"24:00"},{"weekday":3,"open":"00:00","close":"24:00"},
		{"weekday":4,"open":"00:00","close":"24:00"},{"weekday":5,"open":"00:00","close":"24:00"},{"weekday":6,"open":"00:00","close":"24:00"},
		{"weekday":7,"open":"00:00","close":"24:00"}]`
	_, err := pool.Exec(ctx, `
		INSERT INTO stores (id, name, address, lat, lng, time_zone, opening_hours, prep_seconds, pickup_window_seconds, state)
		SELECT format('bench-%s', lpad(i::text, 3, '0')), 'Bench ' || i, '{"line1":"1 Main St","city":"Seattle","country_code":"US"}',
			47.5 + i * 0.001, -122.3, 'America/Los_Angeles', $1::jsonb, 300, 3600, 'open'
		FROM generate_series(0, $2 - 1) i`, hours, stores)
	if err != nil {
		b.Fatal(err)
	}
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO stock (store_id, sku, on_hand)
			SELECT s.id, format('SKU-%%s', lpad(k::text, 3, '0')), 1000000000 FROM stores s, generate_series(0, %d) k`, skus-1),
		`INSERT INTO movements (store_id, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after, safety_stock_after, actor_kind, actor_id)
			SELECT store_id, sku, 'set', on_hand, 0, on_hand, 0, 0, 'system', 'bench' FROM stock`,
		// Not the empty holds and movements: statistics saying "empty" make every connection
		// cache a sequential-scan plan for them until autovacuum analyzes again (a minute or
		// more), which a short benchmark would measure instead of the service.
		`ANALYZE stores`, `ANALYZE stock`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
}

// metricSnap is the sum and count of the histograms a reserve run reports, by series.
type metricSnap map[string][2]float64

func gatherMetrics(b *testing.B) metricSnap {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := metricSnap{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "handoff_inventory_reserve_") && mf.GetName() != "handoff_rpc_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				out[key] = [2]float64{h.GetSampleSum(), float64(h.GetSampleCount())}
			}
		}
	}
	return out
}

func (m metricSnap) delta(before metricSnap, key string) (sum, count float64) {
	return m[key][0] - before[key][0], m[key][1] - before[key][1]
}

// reportReservePhases reports where a service run spent its time, per transaction and per
// request.
func reportReservePhases(b *testing.B, before, after metricSnap) {
	reqs, batches := after.delta(before, "handoff_inventory_reserve_batch_requests")
	if batches == 0 {
		return
	}
	b.ReportMetric(reqs/batches, "req/tx")
	line := fmt.Sprintf("%.0f requests in %.0f transactions (%.1f per tx); per tx:", reqs, batches, reqs/batches)
	for _, phase := range []string{"begin", "lock", "decide", "write_commit"} {
		sum, n := after.delta(before, "handoff_inventory_reserve_batch_seconds,phase="+phase)
		if n > 0 {
			line += fmt.Sprintf(" %s %.3f ms", phase, 1000*sum/n)
		}
	}
	wait, n := after.delta(before, "handoff_inventory_reserve_queue_seconds")
	if n > 0 {
		line += fmt.Sprintf("; per request: queue wait %.3f ms", 1000*wait/n)
	}
	subject := inventory.SubjectReserveHolds
	if sum, n := after.delta(before, "handoff_rpc_duration_seconds,side=server,subject="+subject); n > 0 {
		line += fmt.Sprintf(", handler %.3f ms", 1000*sum/n)
	}
	if sum, n := after.delta(before, "handoff_rpc_duration_seconds,side=client,subject="+subject); n > 0 {
		line += fmt.Sprintf(", caller round trip %.3f ms", 1000*sum/n)
	}
	b.Log(line)
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTimes are the machine's CPU counters from /proc/stat (zero where unavailable).
type cpuTimes struct{ busy, total uint64 }

func machineCPU() cpuTimes {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return cpuTimes{}
	}
	fields := strings.Fields(sc.Text())[1:]
	var t cpuTimes
	for i, s := range fields {
		v, _ := strconv.ParseUint(s, 10, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

func (t cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{t.busy - o.busy, t.total - o.total} }

func (t cpuTimes) busyShare() float64 {
	if t.total == 0 {
		return 0
	}
	return float64(t.busy) / float64(t.total)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
