package stack

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// countingHealth answers health checks and counts them.
type countingHealth struct {
	*health.Server
	calls chan struct{}
}

func (h countingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls <- struct{}{}
	return h.Server.Check(ctx, req)
}

// An edge dialing a service whose name resolves to two copies (a headless Service, a scaled
// compose service) sends calls to both, not all down one connection to one copy.
func TestAnEdgeSpreadsItsCallsOverEveryCopyOfAService(t *testing.T) {
	var addrs []resolver.Address
	counts := make([]chan struct{}, 2)
	for i := range counts {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		counts[i] = make(chan struct{}, 100)
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, countingHealth{Server: health.NewServer(), calls: counts[i]})
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		addrs = append(addrs, resolver.Address{Addr: lis.Addr().String()})
	}
	r := manual.NewBuilderWithScheme("copies")
	r.InitialState(resolver.State{Addresses: addrs})
	resolver.Register(r)

	s := &system{}
	conn, err := s.dial(TargetFulfilment, "copies:///fulfilment")
	if err != nil {
		t.Fatal(err)
	}
	defer s.closers[0].close(context.Background())
	client := healthpb.NewHealthClient(conn)
	for range 20 {
		if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range counts {
		if len(c) == 0 {
			t.Fatalf("copy %d (%s) took none of 20 calls", i, addrs[i].Addr)
		}
	}
}
