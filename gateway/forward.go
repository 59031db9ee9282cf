package gateway

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// forward relays one unary call to a service's gRPC API. The caller's deadline travels with
// ctx (gRPC sends it on as grpc-timeout), so a slow backend never outlives the client.
func forward[Req, Res any](ctx context.Context, req *connect.Request[Req], call func(context.Context, *Req, ...grpc.CallOption) (*Res, error)) (*connect.Response[Res], error) {
	res, err := call(ctx, req.Msg)
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(res), nil
}

// connectError turns a backend's gRPC status into the same Connect error: code, message and
// details (field violations and the like) reach the client unchanged.
func connectError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	ce := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	for _, d := range st.Details() {
		msg, ok := d.(proto.Message)
		if !ok {
			continue
		}
		if detail, err := connect.NewErrorDetail(msg); err == nil {
			ce.AddDetail(detail)
		}
	}
	return ce
}

// forwardStream relays a server stream (WatchOrder) message by message until the service ends
// it or the client goes away (ctx cancelled, which also cancels the backend stream).
func forwardStream[Req, Res any](ctx context.Context, req *connect.Request[Req], out *connect.ServerStream[Res], call func(context.Context, *Req, ...grpc.CallOption) (grpc.ServerStreamingClient[Res], error)) error {
	in, err := call(ctx, req.Msg)
	if err != nil {
		return connectError(err)
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return connectError(err)
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}
