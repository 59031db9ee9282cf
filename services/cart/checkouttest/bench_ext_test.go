package checkout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/stacktest"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
)

// BenchmarkCheckout measures checkouts end to end through the services — the shopper's calls
// on the cart's gRPC API (create, add lines, choose a store, check out), the cart pricing with
// catalog and placing the order with fulfilment, fulfilment reserving at inventory — with the
// whole system in-process (stacktest), Postgres and NATS real. Each case runs for
// HANDOFF_BENCH_SECONDS (default 5) whatever b.N, and reports checkouts/s and checkout
// latency p50/p99; the orders are spread over 20 stores open around the clock, so the figures
// do not depend on the time of day.
func BenchmarkCheckout(b *testing.B) {
	ready := stacktest.Start(b)
	admin := dialAs(b, ready.ServiceAddrs["inventory"], ready.Keys, auth.Principal{Subject: "bench", Role: auth.RoleAdmin})
	inv := inventoryv1.NewInventoryAdminServiceClient(admin)
	skus := []string{"LATTE-16", "LATTE-12", "AMERICANO-16", "CROISSANT", "CORTADO"}
	var stores []string
	for i := range 20 {
		id := fmt.Sprintf("bench-store-%02d", i)
		stores = append(stores, id)
		var hours []*inventoryv1.OpeningHours
		for d := inventoryv1.Weekday_WEEKDAY_MONDAY; d <= inventoryv1.Weekday_WEEKDAY_SUNDAY; d++ {
			hours = append(hours, &inventoryv1.OpeningHours{Weekday: d, OpenTime: "00:00", CloseTime: "24:00"})
		}
		_, err := inv.CreateStore(b.Context(), &inventoryv1.CreateStoreRequest{Store: &inventoryv1.Store{
			Id: id, Name: "Bench " + id, TimeZone: "UTC", OpeningHours: hours, State: inventoryv1.StoreState_STORE_STATE_OPEN,
			Address:  &inventoryv1.Address{Line1: "1 Bench St", City: "Seattle", Region: "WA", PostalCode: "98101", CountryCode: "US"},
			Location: &commonv1.LatLng{Latitude: 47.60 + float64(i)/1000, Longitude: -122.33},
			PrepTime: durationpb.New(5 * time.Minute), PickupWindow: durationpb.New(time.Hour),
		}})
		if err != nil {
			b.Fatalf("create store: %v", err)
		}
		for _, sku := range skus {
			if _, err := inv.SetStock(b.Context(), &inventoryv1.SetStockRequest{StoreId: id, Sku: sku, OnHand: 1_000_000, IdempotencyKey: "bench-" + id + sku}); err != nil {
				b.Fatalf("set stock: %v", err)
			}
		}
	}
	cartConn := dial(b, ready.ServiceAddrs["cart"])
	carts := cartv1.NewCartServiceClient(cartConn)
	seconds := 5
	if v := os.Getenv("HANDOFF_BENCH_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}

	for _, shoppers := range []int{16, 64} {
		b.Run(fmt.Sprintf("shoppers=%d", shoppers), func(b *testing.B) {
			var (
				mu        sync.Mutex
				latencies []time.Duration
				failures  int
			)
			deadline := time.Now().Add(time.Duration(seconds) * time.Second)
			var wg sync.WaitGroup
			start := time.Now()
			for s := range shoppers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(s), 7))
					tok, err := ready.Keys.Issue(auth.Principal{Subject: fmt.Sprintf("bench-shopper-%d-%d", shoppers, s), Role: auth.RoleCustomer}, time.Hour)
					if err != nil {
						b.Error(err)
						return
					}
					ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
					for time.Now().Before(deadline) {
						d, err := checkoutOnce(ctx, carts, stores[rng.IntN(len(stores))], skus[rng.IntN(len(skus))])
						mu.Lock()
						if err != nil {
							failures++
						} else {
							latencies = append(latencies, d)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			slices.Sort(latencies)
			q := func(p float64) float64 {
				if len(latencies) == 0 {
					return 0
				}
				return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "checkouts/s")
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(failures), "failed")
			b.Logf("%d shoppers: %d checkouts CONFIRMED in %v (%.0f/s), checkout p50 %.1f ms p99 %.1f ms, %d failed",
				shoppers, len(latencies), elapsed.Round(time.Millisecond), float64(len(latencies))/elapsed.Seconds(), q(0.5), q(0.99), failures)
		})
	}
}

// checkoutOnce fills a cart with one line at store and checks it out; it returns the Checkout
// call's latency when the order came back CONFIRMED.
func checkoutOnce(ctx context.Context, carts cartv1.CartServiceClient, store, sku string) (time.Duration, error) {
	c, err := carts.CreateCart(ctx, &cartv1.CreateCartRequest{})
	if err != nil {
		return 0, err
	}
	id := c.GetCart().GetId()
	if _, err := carts.AddLine(ctx, &cartv1.AddLineRequest{CartId: id, Sku: sku, Quantity: 1}); err != nil {
		return 0, err
	}
	if _, err := carts.SetPickup(ctx, &cartv1.SetPickupRequest{CartId: id, Pickup: &cartv1.Pickup{Choice: &cartv1.Pickup_StoreId{StoreId: store}}}); err != nil {
		return 0, err
	}
	began := time.Now()
	res, err := carts.Checkout(ctx, &cartv1.CheckoutRequest{CartId: id, IdempotencyKey: "bench-" + uuid.NewString()})
	if err != nil {
		return 0, err
	}
	if st := res.GetOrder().GetState(); st != fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED {
		return 0, fmt.Errorf("order %s", st)
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
