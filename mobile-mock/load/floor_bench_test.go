package load

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/mobile-mock/shopper"
)

// BenchmarkEdgeCallFloor measures what one gRPC-web call costs when it does nothing: the
// load generator's HTTP client and an edge server (net/http and connect, as the gateway serves
// them) on loopback in this process, called by 64 goroutines as a 64-shopper run does. It is a
// floor, not an edge call's cost: the gateway also checks the token and rate limits and forwards
// to a service. Its cpu-µs/call (this process's CPU, client and server together) is under each
// unary call of an order's life (cart edits, checkout, the terminal's accept, ready, ack and
// hand-over; the watch and the ticket stream besides), before any service, NATS or Postgres work.
func BenchmarkEdgeCallFloor(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// The health check's own handler, without the per-address limit edge.Mount puts on it.
	const checkPath = "/grpc.health.v1.Health/Check"
	mux := http.NewServeMux()
	mux.Handle(checkPath, connect.NewUnaryHandler(checkPath, func(context.Context, *connect.Request[healthpb.HealthCheckRequest]) (*connect.Response[healthpb.HealthCheckResponse], error) {
		return connect.NewResponse(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}), nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- edge.ServeHTTP(ctx, lis, edge.WithCORS(mux, nil), time.Second, slog.New(slog.DiscardHandler), nil)
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	})

	const shoppers = 64
	check := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](
		shopper.HTTPClient(shoppers), "http://"+lis.Addr().String()+checkPath, connect.WithGRPCWeb())
	call := func() error {
		_, err := check.CallUnary(ctx, connect.NewRequest(&healthpb.HealthCheckRequest{}))
		return err
	}
	if err := call(); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism((shoppers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)) // at least 64 callers
	b.ResetTimer()
	cpu := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/call")
}
