package grpcserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
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

// probe is a cart service whose GetCart reports what its handler saw, and whose AddLine
// changes its request and keeps its response, to show the caller's messages are its own.
type probe struct {
	cartv1.UnimplementedCartServiceServer
	stack    string
	ctx      context.Context
	kept     *cartv1.AddLineResponse
	nilReply bool
}

type callerValue struct{}

func (p *probe) GetCart(ctx context.Context, req *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	buf := make([]byte, 64<<10)
	p.stack = string(buf[:runtime.Stack(buf, false)])
	p.ctx = ctx
	if p.nilReply {
		return nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	pr, _ := peer.FromContext(ctx)
	method, _ := grpc.Method(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-seen", "yes"))
	id := fmt.Sprintf("md=%s value=%v peer=%t method=%s", md.Get("x-trace"), ctx.Value(callerValue{}), pr != nil, method)
	return &cartv1.GetCartResponse{Cart: &cartv1.Cart{Id: id}}, nil
}

func (p *probe) AddLine(_ context.Context, req *cartv1.AddLineRequest) (*cartv1.AddLineResponse, error) {
	req.Sku = "CHANGED-BY-HANDLER"
	p.kept = &cartv1.AddLineResponse{Cart: &cartv1.Cart{Id: "c1"}}
	return p.kept, nil
}

// A unary call through the in-process channel runs its handler on the caller's goroutine
// (inprocgrpc alone starts one per call), and the handler still sees what it would over a
// network: the caller's metadata and deadline but none of its context values, a peer, the
// method; its context ends with the call. The caller's request and response are its own.
// Headers asked for with grpc.Header still arrive.
func TestInProcessUnaryCallsRunOnTheCallersGoroutine(t *testing.T) {
	ch := grpcserver.InProcess(slog.New(slog.DiscardHandler), nil)
	p := &probe{}
	cartv1.RegisterCartServiceServer(ch, p)
	client := cartv1.NewCartServiceClient(ch)

	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), callerValue{}, "secret"), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-trace", "t-1")
	res, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "md=[t-1] value=<nil> peer=true method=/handoff.cart.v1.CartService/GetCart"; res.GetCart().GetId() != want {
		t.Errorf("the handler saw %q, want %q", res.GetCart().GetId(), want)
	}
	if !strings.Contains(p.stack, "TestInProcessUnaryCallsRunOnTheCallersGoroutine") {
		t.Errorf("the handler ran on another goroutine than its caller's:\n%s", p.stack)
	}
	if _, ok := p.ctx.Deadline(); !ok {
		t.Error("the handler's context has no deadline")
	}
	if p.ctx.Err() == nil {
		t.Error("the handler's context did not end with the call")
	}

	req := &cartv1.AddLineRequest{CartId: "c1", Sku: "LATTE-16", Quantity: 1}
	added, err := client.AddLine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	p.kept.Cart.Id = "changed-after-the-call"
	if req.GetSku() != "LATTE-16" || added.GetCart().GetId() != "c1" {
		t.Errorf("the caller's messages changed with the handler's: request sku %q, response cart %q", req.GetSku(), added.GetCart().GetId())
	}

	var header metadata.MD
	if _, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("x-seen"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("header asked for: %v, want x-seen: yes", header)
	}

	p.nilReply = true
	if _, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"}); status.Code(err) != codes.Internal {
		t.Errorf("a handler answering nothing: %v, want Internal", err)
	}
	p.nilReply, p.stack = false, ""
	ended, stop := context.WithCancel(ctx)
	stop()
	if _, err := client.GetCart(ended, &cartv1.GetCartRequest{CartId: "c1"}); status.Code(err) != codes.Canceled || p.stack != "" {
		t.Errorf("a call whose context had ended: %v (handler ran: %t), want Canceled without running", err, p.stack != "")
	}
	if err := ch.Invoke(ctx, "/handoff.cart.v1.CartService/NoSuchMethod", &cartv1.GetCartRequest{}, &cartv1.GetCartResponse{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("an unknown method: %v, want Unimplemented", err)
	}
}

// slow is a cart service whose GetCart takes its time, ignoring its context, and reports what
// its context said; AddLine derives contexts from its own, as queries do.
type slow struct {
	cartv1.UnimplementedCartServiceServer
	wait    time.Duration
	ctxErr  chan error
	derived chan int
}

func (s *slow) GetCart(ctx context.Context, _ *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	time.Sleep(s.wait)
	s.ctxErr <- ctx.Err()
	return &cartv1.GetCartResponse{Cart: &cartv1.Cart{Id: "c1"}}, nil
}

func (s *slow) AddLine(ctx context.Context, _ *cartv1.AddLineRequest) (*cartv1.AddLineResponse, error) {
	before := runtime.NumGoroutine()
	var cancels []context.CancelFunc
	for range 100 {
		_, cancel := context.WithTimeout(ctx, time.Minute)
		cancels = append(cancels, cancel)
	}
	s.derived <- runtime.NumGoroutine() - before
	for _, c := range cancels {
		c()
	}
	return &cartv1.AddLineResponse{Cart: &cartv1.Cart{Id: "c1"}}, nil
}

// A caller whose deadline passes during the call gets DeadlineExceeded even if the handler goes
// on to succeed, and the handler's context says DeadlineExceeded too (Canceled when the caller
// cancels). Contexts a handler derives from its own (each query's timeout) start no goroutine
// to follow it.
func TestInProcessUnaryCallsKeepTheCallersContext(t *testing.T) {
	ch := grpcserver.InProcess(slog.New(slog.DiscardHandler), nil)
	s := &slow{wait: 200 * time.Millisecond, ctxErr: make(chan error, 1), derived: make(chan int, 1)}
	cartv1.RegisterCartServiceServer(ch, s)
	client := cartv1.NewCartServiceClient(ch)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call whose deadline passed while its handler ran: %v, want DeadlineExceeded", err)
	}
	if err := <-s.ctxErr; err != context.DeadlineExceeded {
		t.Errorf("the handler's context said %v, want %v", err, context.DeadlineExceeded)
	}

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := client.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"}); status.Code(err) != codes.Canceled {
		t.Errorf("a call cancelled while its handler ran: %v, want Canceled", err)
	}
	if err := <-s.ctxErr; err != context.Canceled {
		t.Errorf("the handler's context said %v, want %v", err, context.Canceled)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := client.AddLine(ctx, &cartv1.AddLineRequest{CartId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if n := <-s.derived; n >= 50 {
		t.Errorf("100 contexts derived from the handler's started %d goroutines", n)
	}
}
