package edge

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/pgtext"
)

// StorableText refuses, as InvalidArgument naming the field, every request message holding
// text Postgres cannot store (see package pgtext), for an edge that stores requests itself.
func StorableText() connect.Interceptor { return storableText{} }

type storableText struct{}

func (storableText) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if m, ok := req.Any().(proto.Message); ok {
			if err := pgtext.Check(m); err != nil {
				return nil, ConnectError(err)
			}
		}
		return next(ctx, req)
	}
}

func (storableText) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (storableText) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, textConn{conn})
	}
}

type textConn struct{ connect.StreamingHandlerConn }

func (c textConn) Receive(m any) error {
	if err := c.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		if err := pgtext.Check(pm); err != nil {
			return ConnectError(err)
		}
	}
	return nil
}
