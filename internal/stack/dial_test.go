package stack

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
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
	// Round robin sends to the copies whose connection is up; on a loaded machine one may come
	// up a moment after the other, so call until both have taken some (one connection to one
	// copy would keep every call there for ever).
	calls := 0
	testenv.CheckFor(t, 10*time.Second, 0, func() error {
		if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		calls++
		for i, c := range counts {
			if len(c) == 0 {
				return fmt.Errorf("copy %d (%s) took none of %d calls", i, addrs[i].Addr, calls)
			}
		}
		return nil
	})
}

// An edge sends no calls to a copy that says it cannot serve (NOT_SERVING: its database or NATS
// is down, or it is shutting down), and sends it calls again once it can. Before, the edge kept
// sending it its share over the connection it had, and half the shoppers' calls failed until
// that connection aged out, whatever Kubernetes' readiness said.
func TestAnEdgeSendsNoCallsToACopyThatSaysItCannotServe(t *testing.T) {
	var addrs []resolver.Address
	counts := make([]chan struct{}, 2)
	servers := make([]*health.Server, 2)
	for i := range counts {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		counts[i], servers[i] = make(chan struct{}, 10000), health.NewServer()
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, countingHealth{Server: servers[i], calls: counts[i]})
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		addrs = append(addrs, resolver.Address{Addr: lis.Addr().String()})
	}
	r := manual.NewBuilderWithScheme("sick-copies")
	r.InitialState(resolver.State{Addresses: addrs})
	resolver.Register(r)
	s := &system{}
	conn, err := s.dial(TargetInventory, "sick-copies:///inventory")
	if err != nil {
		t.Fatal(err)
	}
	defer s.closers[0].close(context.Background())
	client := healthpb.NewHealthClient(conn)
	// calls makes n calls and gives how many each copy took.
	calls := func(n int) (took [2]int) {
		for _, c := range counts {
			for len(c) > 0 {
				<-c
			}
		}
		for range n {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "any"}, grpc.WaitForReady(true))
			cancel()
			if status.Code(err) != codes.NotFound { // the copies know no service "any": answered
				t.Fatalf("call: %v", err)
			}
		}
		return [2]int{len(counts[0]), len(counts[1])}
	}
	both := func() {
		t.Helper()
		testenv.CheckFor(t, 10*time.Second, 0, func() error {
			if took := calls(20); took[0] == 0 || took[1] == 0 {
				return fmt.Errorf("the copies took %v of 20 calls; want both some", took)
			}
			return nil
		})
	}
	both()
	servers[1].SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	testenv.CheckFor(t, 10*time.Second, 0, func() error {
		if took := calls(20); took[1] != 0 {
			return fmt.Errorf("the copy saying NOT_SERVING took %d of 20 calls", took[1])
		}
		return nil
	})
	servers[1].SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	both()
}

// A copy added by scaling out takes calls from an edge that was already running: the first
// copy ages its connection out (grpcserver.MaxConnectionAge), the edge resolves the name
// again and finds the new copy. No call fails on the way. Without the age the edge would
// keep every call on the first copy until a connection broke.
func TestAnEdgeFindsACopyAddedWhileItRuns(t *testing.T) {
	listen := func() net.Listener {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return lis
	}
	first, added := listen(), listen()
	old := grpcserver.New(testenv.Logger(t), nil, grpcserver.MaxConnectionAge(300*time.Millisecond))
	go func() { _ = old.Server.Serve(first) }()
	t.Cleanup(old.Stop)
	calls := make(chan struct{}, 1000)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, countingHealth{Server: health.NewServer(), calls: calls})
	go func() { _ = srv.Serve(added) }()
	t.Cleanup(srv.Stop)

	// The name resolves to the first copy only until it is resolved again.
	r := manual.NewBuilderWithScheme("scaled")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: first.Addr().String()}}})
	r.ResolveNowCallback = func(resolver.ResolveNowOptions) {
		go r.UpdateState(resolver.State{Addresses: []resolver.Address{
			{Addr: first.Addr().String()}, {Addr: added.Addr().String()},
		}})
	}
	resolver.Register(r)

	s := &system{}
	conn, err := s.dial(TargetFulfilment, "scaled:///fulfilment")
	if err != nil {
		t.Fatal(err)
	}
	defer s.closers[0].close(context.Background())
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; len(calls) == 0; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("the added copy took none of %d calls in 10 s", n)
		}
		if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d failed while the first copy aged its connection out: %v", n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stream through an edge to a copy of a service that hangs with its connection open (a
// shopper's WatchOrder, here a health Watch) ends as Unavailable once the copy stops answering
// the edge's pings, so the caller watches again elsewhere; without them it stayed open and
// silent until the caller's token expired. Pings here come after 10 s (gRPC's least) and are
// given 1 s.
func TestAStreamThroughAHungCopyEnds(t *testing.T) {
	was := dialKeepalive
	t.Cleanup(func() { dialKeepalive = was })
	dialKeepalive.Time, dialKeepalive.Timeout = 10*time.Second, time.Second

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(backend) }()
	t.Cleanup(srv.Stop)
	fz := testenv.NewFreezer(t, backend.Addr().String())

	s := &system{}
	conn, err := s.dial(TargetFulfilment, fz.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer s.closers[0].close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("first message: %v", err)
	}
	fz.Freeze()
	_, err = watch.Recv()
	if ctx.Err() != nil {
		t.Fatal("the stream through the hung copy was still open a minute later")
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("the stream through the hung copy ended with %v; want Unavailable", err)
	}
}

// An edge reaches a service again within about two seconds of its coming back, however long
// it was down: gRPC's own reconnect backoff grows towards two minutes, and the edge failed
// every call for as long after the service had answered again. Here the service answers, is
// stopped for 10 s (calls failing meanwhile), then answers again on its address, and a call
// made then must succeed within 3 s.
func TestAnEdgeReachesAServiceSoonAfterItComesBack(t *testing.T) {
	addr := testenv.FreeAddr(t)
	serve := func() *grpc.Server {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		return srv
	}
	s := &system{}
	conn, err := s.dial(TargetFulfilment, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.closers[0].close(context.Background())
	client := healthpb.NewHealthClient(conn)
	check := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	first := serve()
	if err := check(); err != nil {
		t.Fatalf("first call: %v", err)
	}
	first.Stop()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if check() == nil {
			t.Fatal("a call succeeded with the service stopped")
		}
	}

	serve()
	back := time.Now()
	for {
		err := check()
		if err == nil {
			t.Logf("reached %s after it came back", time.Since(back).Round(10*time.Millisecond))
			return
		}
		if time.Since(back) > 3*time.Second {
			t.Fatalf("the service still unreached %s after it came back: %v", time.Since(back).Round(10*time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
