package grpcserver_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// watching sends one update and then waits for its caller or the server, as WatchOrder does.
type watching struct {
	fulfilmentv1.UnimplementedOrderServiceServer
}

func (watching) WatchOrder(_ *fulfilmentv1.WatchOrderRequest, stream grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	if err := stream.Send(&fulfilmentv1.WatchOrderResponse{Order: &fulfilmentv1.Order{Id: "o1"}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// A stop does not wait out its grace for streams that would stay open for hours (an order
// watched, a health watch, an idle reflection session): they end at once, as Unavailable, so their callers call again.
func TestAStopEndsServerStreamsAtOnceAsUnavailable(t *testing.T) {
	srv := grpcserver.New(testenv.Logger(t), nil)
	fulfilmentv1.RegisterOrderServiceServer(srv, watching{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis, time.Minute) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	order, err := fulfilmentv1.NewOrderServiceClient(conn).WatchOrder(t.Context(), &fulfilmentv1.WatchOrderRequest{OrderId: "o1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := order.Recv(); err != nil {
		t.Fatalf("first update: %v", err)
	}
	health, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := health.Recv(); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v, %v; want SERVING", res, err)
	}

	reflect, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := reflect.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := reflect.Recv(); err != nil {
		t.Fatalf("reflection: %v", err)
	}

	stop() // the reflection stream now waits, idle, for a next request that never comes
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stop is waiting for the open streams (its grace is a minute)")
	}
	if _, err := reflect.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the idle reflection stream ended with %v, want Unavailable", err)
	}
	if _, err := order.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the order watch ended with %v, want Unavailable", err)
	}
	for {
		res, err := health.Recv()
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("the health watch ended with %v, want Unavailable", err)
			}
			break
		}
		if res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health watch during the stop: %v", res.GetStatus())
		}
	}
}
