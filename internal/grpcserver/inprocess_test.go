package grpcserver_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// carts answers GetCart with who asked and how long they gave it, and panics in CreateCart.
type carts struct {
	cartv1.UnimplementedCartServiceServer
}

func (carts) GetCart(ctx context.Context, _ *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no caller in the context")
	}
	if _, ok := ctx.Deadline(); !ok {
		return nil, status.Error(codes.Internal, "the caller's deadline did not arrive")
	}
	return &cartv1.GetCartResponse{Cart: &cartv1.Cart{Id: p.Subject}}, nil
}

func (carts) CreateCart(context.Context, *cartv1.CreateCartRequest) (*cartv1.CreateCartResponse, error) {
	panic("a bug in a handler")
}

// orders streams two updates of the order asked for.
type orders struct {
	fulfilmentv1.UnimplementedOrderServiceServer
}

func (orders) WatchOrder(req *fulfilmentv1.WatchOrderRequest, s grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	for v := range int64(2) {
		if err := s.Send(&fulfilmentv1.WatchOrderResponse{Order: &fulfilmentv1.Order{Id: req.GetOrderId(), Version: v + 1}}); err != nil {
			return err
		}
	}
	return nil
}

// Calls through the in-process channel go through the servers' interceptors: a caller without
// a token is refused, one with a token is the principal in the handler's context with its
// deadline, a panic is an Internal error, and streams work the same.
func TestInProcessCallsGoThroughTheServersInterceptors(t *testing.T) {
	ch, keys := inProcess(t)
	cartv1.RegisterCartServiceServer(ch, carts{})
	fulfilmentv1.RegisterOrderServiceServer(ch, orders{})
	cartClient, orderClient := cartv1.NewCartServiceClient(ch), fulfilmentv1.NewOrderServiceClient(ch)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cartClient.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetCart without a token: %v, want Unauthenticated", err)
	}
	tok, err := keys.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	authed := auth.OutgoingContext(ctx, "Bearer "+tok)
	res, err := cartClient.GetCart(authed, &cartv1.GetCartRequest{CartId: "c1"})
	if err != nil || res.GetCart().GetId() != "alice" {
		t.Errorf("GetCart as alice: %v, %v; want alice's call with its deadline", res, err)
	}
	if _, err := cartClient.CreateCart(authed, &cartv1.CreateCartRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("CreateCart, whose handler panics: %v, want Internal", err)
	}

	if stream, err := orderClient.WatchOrder(ctx, &fulfilmentv1.WatchOrderRequest{OrderId: "o1"}); err == nil {
		if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Errorf("WatchOrder without a token: %v, want Unauthenticated", err)
		}
	} else if status.Code(err) != codes.Unauthenticated {
		t.Errorf("WatchOrder without a token: %v, want Unauthenticated", err)
	}
	stream, err := orderClient.WatchOrder(authed, &fulfilmentv1.WatchOrderRequest{OrderId: "o1"})
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("WatchOrder as alice: %v", err)
		}
		versions = append(versions, m.GetOrder().GetVersion())
	}
	if len(versions) != 2 || versions[0] != 1 || versions[1] != 2 {
		t.Errorf("WatchOrder as alice got versions %v, want [1 2]", versions)
	}
}

// A server stream refused before its request is read reports the refusal, whether the
// request is sent before or after the refusal: the in-process stream alone may say io.EOF to
// the send once its handler has ended (half the time here), which the generated client would
// hand on as the call's error.
func TestInProcessStreamRefusedBeforeItsRequestSaysWhy(t *testing.T) {
	ch, _ := inProcess(t)
	fulfilmentv1.RegisterOrderServiceServer(ch, orders{})
	desc := &fulfilmentv1.OrderService_ServiceDesc.Streams[0]
	method := "/" + fulfilmentv1.OrderService_ServiceDesc.ServiceName + "/" + desc.StreamName
	for i := range 20 {
		stream, err := ch.NewStream(t.Context(), desc, method)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			time.Sleep(20 * time.Millisecond) // the refusal (no token) is made meanwhile
		}
		err = stream.SendMsg(&fulfilmentv1.WatchOrderRequest{OrderId: "o1"})
		if err == nil {
			if err = stream.CloseSend(); err == nil {
				err = stream.RecvMsg(new(fulfilmentv1.WatchOrderResponse))
			}
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("attempt %d: a stream without a token ended with %v, want Unauthenticated", i, err)
		}
	}
}

// inProcess is a channel with a development key set, whose keys are returned to mint tokens.
func inProcess(t *testing.T) (*grpcserver.Channel, *auth.KeySet) {
	t.Helper()
	keys, err := auth.DevKeySet(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return grpcserver.InProcess(slog.New(slog.DiscardHandler), keys), keys
}
