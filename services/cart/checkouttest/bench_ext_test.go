package checkout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// BenchmarkCheckout measures checkouts end to end through the services: the shopper's Checkout
// call on the cart's gRPC API, the cart pricing the lines (its catalog cache) and placing the
// order with fulfilment, fulfilment reserving at inventory, until the order comes back
// CONFIRMED — with the whole system in-process (stacktest), Postgres and NATS real. The carts are filled before the
// clock starts (create, add a line, choose the store), as shoppers fill them over minutes; the
// whole journey is BenchmarkShopperJourney. Each case runs for HANDOFF_BENCH_SECONDS (default
// 5) whatever b.N, and reports checkouts/s, checkout latency p50/p99 and the machine's CPU time
// per checkout (Postgres and NATS included; Linux only), a figure much less noisy than the rate
// on a shared machine. The orders are spread over the demo chain's stores, opened around the
// clock so the figures do not depend on the time of day.
func BenchmarkCheckout(b *testing.B) {
	bs := startBench(b)
	for _, shoppers := range []int{16, 64} {
		b.Run(fmt.Sprintf("shoppers=%d", shoppers), func(b *testing.B) {
			// Enough carts for 3,000 checkouts/s (2,098/s seen), shared out among the shoppers; a shopper
			// that runs out stops early, and the rate counts the time until the last one did.
			perShopper := (3000*bs.seconds + shoppers - 1) / shoppers
			filled := make([][]string, shoppers)
			var wg sync.WaitGroup
			for s := range shoppers {
				wg.Go(func() {
					ctx := bs.shopperContext(b, shoppers, s)
					rng := rand.New(rand.NewPCG(uint64(s), 7))
					for range perShopper {
						id, err := fillCart(ctx, bs.carts, bs.stores[rng.IntN(len(bs.stores))], bs.skus[rng.IntN(len(bs.skus))])
						if err != nil {
							b.Errorf("fill a cart: %v", err)
							return
						}
						filled[s] = append(filled[s], id)
					}
				})
			}
			wg.Wait()
			if b.Failed() {
				return
			}

			var r benchRun
			r.start(b, bs.seconds)
			for s := range shoppers {
				wg.Go(func() {
					ctx := bs.shopperContext(b, shoppers, s)
					for _, id := range filled[s] {
						if r.over() {
							return
						}
						r.record(checkOut(ctx, bs.carts, id))
					}
				})
			}
			wg.Wait()
			r.report(b, fmt.Sprintf("%d shoppers", shoppers), "checkouts")
		})
	}
}

// BenchmarkShopperJourney is BenchmarkCheckout with the carts filled inside the clock: every
// shopper creates a cart, adds a line, chooses the store and checks out, again and again. It
// reports journeys/s, the Checkout call's latency and the machine's CPU time per journey.
func BenchmarkShopperJourney(b *testing.B) {
	bs := startBench(b)
	for _, shoppers := range []int{16, 64} {
		b.Run(fmt.Sprintf("shoppers=%d", shoppers), func(b *testing.B) {
			var (
				r  benchRun
				wg sync.WaitGroup
			)
			r.start(b, bs.seconds)
			for s := range shoppers {
				wg.Go(func() {
					ctx := bs.shopperContext(b, shoppers, s)
					rng := rand.New(rand.NewPCG(uint64(s), 7))
					for !r.over() {
						id, err := fillCart(ctx, bs.carts, bs.stores[rng.IntN(len(bs.stores))], bs.skus[rng.IntN(len(bs.skus))])
						if err != nil {
							r.record(0, err)
							continue
						}
						r.record(checkOut(ctx, bs.carts, id))
					}
				})
			}
			wg.Wait()
			r.report(b, fmt.Sprintf("%d shoppers", shoppers), "journeys")
		})
	}
}

// benchStack is the system the checkout benchmarks run against.
type benchStack struct {
	ready   stack.Ready
	carts   cartv1.CartServiceClient
	stores  []string
	skus    []string
	seconds int
}

// startBench starts the system with the demo chain loaded and opens all its stores around
// the clock (so the figures do not depend on the time of day), each stocked with a million of
// every SKU the benchmarks order.
func startBench(b *testing.B) *benchStack {
	// The product's own NATS: embedded, syncing every JetStream write to disk, reached
	// in-process (stacktest's default is a test server without the syncs); and the product's
	// pools (a test database's URL caps them at testenv.TestPoolConns).
	ready := stacktest.Start(b, func(c *stack.Config) { c.NATSURL, c.DBMaxConns = "", stack.DefaultDBMaxConns })
	admin := dialAs(b, ready.ServiceAddrs["inventory"], ready.Keys, auth.Principal{Subject: "bench", Role: auth.RoleAdmin})
	inv := inventoryv1.NewInventoryAdminServiceClient(admin)
	bs := &benchStack{
		ready:   ready,
		carts:   cartv1.NewCartServiceClient(dial(b, ready.ServiceAddrs["cart"])),
		skus:    []string{"LATTE-16", "LATTE-12", "AMERICANO-16", "CROISSANT", "CORTADO"},
		seconds: 5,
	}
	if v := os.Getenv("HANDOFF_BENCH_SECONDS"); v != "" {
		if _, err := fmt.Sscan(v, &bs.seconds); err != nil || bs.seconds <= 0 {
			b.Fatalf("HANDOFF_BENCH_SECONDS=%q: want a positive number of seconds", v)
		}
	}
	var hours []*inventoryv1.OpeningHours
	for d := inventoryv1.Weekday_WEEKDAY_MONDAY; d <= inventoryv1.Weekday_WEEKDAY_SUNDAY; d++ {
		hours = append(hours, &inventoryv1.OpeningHours{Weekday: d, OpenTime: "00:00", CloseTime: "24:00"})
	}
	for _, st := range demo.Seattle().Stores {
		bs.stores = append(bs.stores, st.ID)
		_, err := inv.UpdateStore(b.Context(), &inventoryv1.UpdateStoreRequest{
			Store:      &inventoryv1.Store{Id: st.ID, OpeningHours: hours},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"opening_hours", "hours_exceptions"}},
		})
		if err != nil {
			b.Fatalf("open %s around the clock: %v", st.ID, err)
		}
		for _, sku := range bs.skus {
			if _, err := inv.SetStock(b.Context(), &inventoryv1.SetStockRequest{StoreId: st.ID, Sku: sku, OnHand: 1_000_000, IdempotencyKey: "bench-" + st.ID + sku}); err != nil {
				b.Fatalf("set stock: %v", err)
			}
		}
	}
	return bs
}

// shopperContext carries shopper s's token (one customer per shopper and case).
func (bs *benchStack) shopperContext(b *testing.B, shoppers, s int) context.Context {
	tok, err := bs.ready.Keys.Issue(auth.Principal{Subject: fmt.Sprintf("bench-shopper-%d-%d", shoppers, s), Role: auth.RoleCustomer}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// benchRun collects one case's outcomes for its seconds.
type benchRun struct {
	mu        sync.Mutex
	latencies []time.Duration
	failures  map[string]int
	began     time.Time
	deadline  time.Time
	busy      time.Duration
	own       time.Duration
	busyOK    bool
	profile   *os.File // HANDOFF_BENCH_CPUPROFILE's file for this case, or nil
}

// start starts the clock. With HANDOFF_BENCH_CPUPROFILE=prefix set, the timed part alone is
// profiled into prefix.<case>.pprof (go test's -cpuprofile would also take in the filling).
func (r *benchRun) start(b *testing.B, seconds int) {
	settle(b)
	r.failures = map[string]int{}
	if prefix := os.Getenv("HANDOFF_BENCH_CPUPROFILE"); prefix != "" {
		name := prefix + "." + strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()) + ".pprof"
		f, err := os.Create(name)
		if err != nil {
			b.Fatalf("HANDOFF_BENCH_CPUPROFILE: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			b.Fatalf("HANDOFF_BENCH_CPUPROFILE (not with -cpuprofile): %v", err)
		}
		r.profile = f
	}
	r.busy, r.busyOK = machineBusy()
	r.own = processCPU()
	r.began = time.Now()
	r.deadline = r.began.Add(time.Duration(seconds) * time.Second)
}

// settle waits until the work the filling and the previous case left behind (events relayed,
// tickets, hold extensions) is done, so that it is not counted against this case: until this
// process (the services, NATS) uses under a tenth of a core for a quarter of a second, for 30s
// at most.
func settle(b *testing.B) {
	const window = 250 * time.Millisecond
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		before := processCPU()
		time.Sleep(window)
		if processCPU()-before < window/10 {
			return
		}
	}
	b.Logf("the system did not settle within 30s; timing anyway")
}

func (r *benchRun) over() bool { return !time.Now().Before(r.deadline) }

func (r *benchRun) record(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failures[status.Code(err).String()]++
		return
	}
	r.latencies = append(r.latencies, d)
}

// report prints and reports the case's figures; what names the unit counted.
func (r *benchRun) report(b *testing.B, label, what string) {
	elapsed := time.Since(r.began)
	busy, ok := machineBusy()
	own := processCPU()
	if r.profile != nil {
		pprof.StopCPUProfile()
		if err := r.profile.Close(); err != nil {
			b.Errorf("HANDOFF_BENCH_CPUPROFILE: %v", err)
		}
	}
	slices.Sort(r.latencies)
	n := len(r.latencies)
	q := func(p float64) float64 {
		if n == 0 {
			return 0
		}
		return float64(r.latencies[min(n-1, int(p*float64(n)))].Microseconds()) / 1000
	}
	failed := 0
	for _, c := range r.failures {
		failed += c
	}
	rate := float64(n) / elapsed.Seconds()
	b.ReportMetric(rate, what+"/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(failed), "failed")
	cpu := ""
	if ok && r.busyOK && n > 0 {
		perOne := float64((busy - r.busy).Microseconds()) / 1000 / float64(n)
		goPart := float64((own - r.own).Microseconds()) / 1000 / float64(n)
		b.ReportMetric(perOne, "cpu-ms/op")
		b.ReportMetric(goPart, "go-cpu-ms/op")
		cpu = fmt.Sprintf(", %.2f ms of the machine's CPU each (%.2f ms in this process: services, NATS, shoppers)", perOne, goPart)
	}
	b.Logf("%s: %d %s CONFIRMED in %v (%.0f/s), checkout p50 %.1f ms p99 %.1f ms%s, failed %v",
		label, n, what, elapsed.Round(time.Millisecond), rate, q(0.5), q(0.99), cpu, r.failures)
}

// processCPU is the CPU time this process (the services, the embedded NATS server and the
// shoppers) has spent so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time the machine has spent so far, all processes and the kernel
// (Linux: /proc/stat's first line, user to softirq, without idle and iowait).
func machineBusy() (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += t
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(ticks) * 10 * time.Millisecond, true
}

// fillCart creates a cart with one line of sku and store as its pickup, and returns its id.
func fillCart(ctx context.Context, carts cartv1.CartServiceClient, store, sku string) (string, error) {
	c, err := carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		return "", err
	}
	id := c.GetCart().GetId()
	if _, err := carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku, Quantity: 1}); err != nil {
		return "", err
	}
	if _, err := carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: store}}}); err != nil {
		return "", err
	}
	return id, nil
}

// checkOut checks cart id out and returns the call's latency when the order came back
// CONFIRMED.
func checkOut(ctx context.Context, carts cartv1.CartServiceClient, id string) (time.Duration, error) {
	began := time.Now()
	res, err := carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "bench-" + uuid.NewString()})
	if err != nil {
		return 0, err
	}
	if st := res.GetOrder().GetState(); st != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		return 0, status.Errorf(codes.FailedPrecondition, "order %s", st)
	}
	return time.Since(began), nil
}

func dial(b *testing.B, addr string) *grpc.ClientConn {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// dialAs connects with every call carrying p's token.
func dialAs(b *testing.B, addr string, keys *auth.KeySet, p auth.Principal) *grpc.ClientConn {
	b.Helper()
	tok, err := keys.Issue(p, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), method, req, reply, cc, opts...)
		}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}
