package grpcserver_test

import (
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
)

// rawCodec sends []byte as the message, whatever it holds, and reads replies into []byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// A request message that is not protobuf is the caller's fault: InvalidArgument naming the
// message, not grpc-go's Internal, and the handler never runs; the server goes on serving. One
// refused for a string that is not UTF-8 names the field.
func TestAnUndecodableRequestIsInvalidArgument(t *testing.T) {
	orders := &countingOrders{}
	srv := grpcserver.New(slog.New(slog.DiscardHandler), nil)
	fulfilmentv1.RegisterOrderServiceServer(srv, orders)
	conn := testenv.GRPC(t, srv.Server)
	for _, c := range []struct {
		name                 string
		message              []byte
		wantUnary, wantWatch string
	}{
		{"garbage", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, // field 1, length past the end
			"malformed handoff.fulfilment.v1.GetOrderRequest", "malformed handoff.fulfilment.v1.WatchOrderRequest"},
		{"not UTF-8", []byte{0x0a, 0x03, 0xff, 0xfe, 0x41}, // order_id: 3 bytes, not UTF-8
			"order_id: not valid UTF-8", "order_id: not valid UTF-8"},
	} {
		var reply []byte
		err := conn.Invoke(t.Context(), fulfilmentv1.OrderService_GetOrder_FullMethodName, c.message, &reply, grpc.ForceCodecV2(rawCodec{}))
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.wantUnary) {
			t.Errorf("unary with a message %s: %v; want InvalidArgument saying %q", c.name, err, c.wantUnary)
		}
		desc := &grpc.StreamDesc{ServerStreams: true}
		stream, err := conn.NewStream(t.Context(), desc, fulfilmentv1.OrderService_WatchOrder_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(c.message); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		err = stream.RecvMsg(&reply)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), c.wantWatch) {
			t.Errorf("stream with a message %s: %v; want InvalidArgument saying %q", c.name, err, c.wantWatch)
		}
	}
	c := fulfilmentv1.NewOrderServiceClient(conn)
	if _, err := c.GetOrder(t.Context(), &fulfilmentv1.GetOrderRequest{OrderId: "o1"}); err != nil {
		t.Errorf("a good request after them: %v", err)
	}
	if n := orders.calls.Load(); n != 1 {
		t.Fatalf("the handlers ran %d times; want once, for the good request", n)
	}
}
