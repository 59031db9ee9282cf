package grpcserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// failing answers each cart call with one kind of error: a database failure (a plain error),
// a refusal (a status, wrapped with context), the caller's deadline passed.
type failing struct {
	cartv1.UnimplementedCartServiceServer
}

func (failing) GetCart(context.Context, *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	return nil, fmt.Errorf("read cart c1: %w", fmt.Errorf(`ERROR: relation "carts" does not exist (SQLSTATE 42P01)`))
}

func (failing) AddLine(context.Context, *cartv1.AddLineRequest) (*cartv1.AddLineResponse, error) {
	return nil, fmt.Errorf("add line: %w", status.Error(codes.FailedPrecondition, "cart c1 is checked out"))
}

func (failing) RemoveLine(ctx context.Context, _ *cartv1.RemoveLineRequest) (*cartv1.RemoveLineResponse, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("remove line: %w", ctx.Err())
}

// UpdateLine times out on a deadline of the server's own (a statement timeout, say), well
// within the caller's.
func (failing) UpdateLine(ctx context.Context, _ *cartv1.UpdateLineRequest) (*cartv1.UpdateLineResponse, error) {
	own, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	<-own.Done()
	return nil, fmt.Errorf("write cart c1 (user=handoff database=secret): %w", own.Err())
}

// A handler's failure, its own timeouts included, reaches the caller as Internal "internal
// error", its text only in the server's log; a refusal keeps its code and message; a call whose
// deadline passed is DeadlineExceeded. The same over the network and in process, where nothing
// else would turn the Go error into a status.
func TestHandlerFailuresAreInternalAndLoggedRefusalsPassUnchanged(t *testing.T) {
	keys, err := auth.DevKeySet(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Issue(auth.Principal{Subject: "alice", Role: auth.RoleCustomer}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	srv := grpcserver.New(logger, keys)
	cartv1.RegisterCartServiceServer(srv, failing{})
	ch := grpcserver.InProcess(logger, keys)
	cartv1.RegisterCartServiceServer(ch, failing{})

	for name, conn := range map[string]grpc.ClientConnInterface{"network": testenv.GRPC(t, srv.Server), "in process": ch} {
		t.Run(name, func(t *testing.T) {
			c := cartv1.NewCartServiceClient(conn)
			ctx := auth.OutgoingContext(t.Context(), "Bearer "+tok)

			_, err := c.GetCart(ctx, &cartv1.GetCartRequest{CartId: "c1"})
			if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
				t.Errorf("a database failure: %v; want Internal \"internal error\", nothing of the SQL", err)
			}
			if !strings.Contains(logs.String(), "42P01") || !strings.Contains(logs.String(), "/handoff.cart.v1.CartService/GetCart") {
				t.Errorf("the failure is not in the log with its method:\n%s", logs.String())
			}

			_, err = c.AddLine(ctx, &cartv1.AddLineRequest{CartId: "c1", Sku: "s", Quantity: 1})
			if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "checked out") {
				t.Errorf("a refusal: %v; want FailedPrecondition with its message", err)
			}

			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err = c.RemoveLine(short, &cartv1.RemoveLineRequest{CartId: "c1", LineId: "l1"})
			if status.Code(err) != codes.DeadlineExceeded || strings.Contains(err.Error(), "remove line") {
				t.Errorf("a call whose deadline passed: %v; want DeadlineExceeded, nothing of the handler's error", err)
			}

			// The server's own timeout is its failure: Internal, its text only in the log.
			_, err = c.UpdateLine(ctx, &cartv1.UpdateLineRequest{CartId: "c1", LineId: "l1", Quantity: 1})
			if st := status.Convert(err); st.Code() != codes.Internal || strings.Contains(st.Message(), "secret") {
				t.Errorf("the server's own timeout: %v; want Internal \"internal error\"", err)
			}
		})
	}
}

// unreachable answers as a service whose database cannot be reached does: GetCart cannot
// connect, Checkout finds the server starting up (57P03); AddLine's connection was ended by the
// server's shutdown (57P01), which can end a COMMIT already on disk.
type unreachable struct {
	cartv1.UnimplementedCartServiceServer
}

func (unreachable) GetCart(ctx context.Context, _ *cartv1.GetCartRequest) (*cartv1.GetCartResponse, error) {
	_, err := pgconn.Connect(ctx, "postgres://handoff:secret@127.0.0.1:1/cart?connect_timeout=5")
	return nil, fmt.Errorf("read cart c1: %w", err)
}

func (unreachable) Checkout(context.Context, *cartv1.CheckoutRequest) (*cartv1.CheckoutResponse, error) {
	return nil, fmt.Errorf("check out c1: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P03", Message: "the database system is starting up"})
}

func (unreachable) AddLine(context.Context, *cartv1.AddLineRequest) (*cartv1.AddLineResponse, error) {
	return nil, fmt.Errorf("add line: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
}

// A service whose database cannot be reached (refused, starting up) answers Unavailable, which
// clients and their retry policies take as "try again", not Internal, which they take as a bug;
// nothing of the address or the credentials reaches the caller. Before, such a copy answered
// Internal "internal error" to every call until it was taken out of rotation.
func TestAnUnreachableDatabaseIsUnavailable(t *testing.T) {
	var logs testenv.LockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv := grpcserver.New(logger, nil)
	cartv1.RegisterCartServiceServer(srv, unreachable{})
	c := cartv1.NewCartServiceClient(testenv.GRPC(t, srv.Server))
	_, err := c.GetCart(t.Context(), &cartv1.GetCartRequest{CartId: "c1"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || strings.Contains(st.Message(), "secret") || strings.Contains(st.Message(), "127.0.0.1") {
		t.Errorf("a database that refuses connections: %v; want Unavailable, nothing of its address", err)
	}
	_, err = c.Checkout(t.Context(), &cartv1.CheckoutRequest{CartId: "c1", IdempotencyKey: "k1"})
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Errorf("a database starting up: %v; want Unavailable", err)
	}
	// Not known whether it was written: Internal, which no client retries by itself.
	_, err = c.AddLine(t.Context(), &cartv1.AddLineRequest{CartId: "c1", Sku: "s", Quantity: 1})
	if st := status.Convert(err); st.Code() != codes.Internal {
		t.Errorf("a connection the database's shutdown ended: %v; want Internal", err)
	}
	if !strings.Contains(logs.String(), "127.0.0.1:1") {
		t.Errorf("the failure is not in the log:\n%s", logs.String())
	}
}

// A request holding text Postgres cannot store (a NUL) is refused before the handler, naming
// the field, over the network and in process, unary and streaming alike.
func TestTextPostgresCannotStoreIsRefusedBeforeTheHandler(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	orders := &countingOrders{}
	srv := grpcserver.New(logger, nil)
	fulfilmentv1.RegisterOrderServiceServer(srv, orders)
	ch := grpcserver.InProcess(logger, nil)
	fulfilmentv1.RegisterOrderServiceServer(ch, orders)
	for name, conn := range map[string]grpc.ClientConnInterface{"network": testenv.GRPC(t, srv.Server), "in process": ch} {
		t.Run(name, func(t *testing.T) {
			c := fulfilmentv1.NewOrderServiceClient(conn)
			_, err := c.GetOrder(t.Context(), &fulfilmentv1.GetOrderRequest{OrderId: "o\x00"})
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "order_id:") {
				t.Errorf("unary with a NUL: %v; want InvalidArgument naming order_id", err)
			}
			w, err := c.WatchOrder(t.Context(), &fulfilmentv1.WatchOrderRequest{OrderId: "o\x00"})
			if err == nil {
				_, err = w.Recv()
			}
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "order_id:") {
				t.Errorf("stream with a NUL: %v; want InvalidArgument naming order_id", err)
			}
			if _, err := c.GetOrder(t.Context(), &fulfilmentv1.GetOrderRequest{OrderId: "o1"}); err != nil {
				t.Errorf("a clean request: %v", err)
			}
		})
	}
	if n := orders.calls.Load(); n != 2 {
		t.Fatalf("the handlers ran %d times; want twice, for the clean requests only", n)
	}
}

// countingOrders counts the calls that reach it.
type countingOrders struct {
	fulfilmentv1.UnimplementedOrderServiceServer
	calls atomic.Int32
}

func (o *countingOrders) GetOrder(context.Context, *fulfilmentv1.GetOrderRequest) (*fulfilmentv1.GetOrderResponse, error) {
	o.calls.Add(1)
	return &fulfilmentv1.GetOrderResponse{}, nil
}

func (o *countingOrders) WatchOrder(*fulfilmentv1.WatchOrderRequest, grpc.ServerStreamingServer[fulfilmentv1.WatchOrderResponse]) error {
	o.calls.Add(1)
	return nil
}
