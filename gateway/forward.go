package gateway

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/edge"
)

// forward relays one unary call to a service's gRPC API. The caller's deadline travels with
// ctx (gRPC sends it on as grpc-timeout), so a slow backend never outlives the client.
func forward[Req, Res any](ctx context.Context, req *connect.Request[Req], call func(context.Context, *Req, ...grpc.CallOption) (*Res, error)) (*connect.Response[Res], error) {
	res, err := call(ctx, req.Msg)
	if err != nil {
		return nil, edge.ConnectError(err)
	}
	return connect.NewResponse(res), nil
}

// forwardStream relays a server stream (WatchOrder) message by message until the service ends
// it or the client goes away (ctx cancelled, which also cancels the backend stream).
func forwardStream[Req, Res any](ctx context.Context, req *connect.Request[Req], out *connect.ServerStream[Res], call func(context.Context, *Req, ...grpc.CallOption) (grpc.ServerStreamingClient[Res], error)) error {
	in, err := call(ctx, req.Msg)
	if err != nil {
		return edge.ConnectError(err)
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return edge.ConnectError(err)
		}
		if ctx.Err() != nil {
			// Ended (its token expired, a shutdown, the client gone): gRPC still hands over what
			// it had buffered, and none of it may be sent.
			return context.Cause(ctx)
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}
