package grpcserver

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/rpcerr"
	"github.com/handoff-dev/handoff/internal/utf8field"
)

// grpc-go answers a request message it cannot decode with Internal, before any interceptor
// runs, though the fault is the caller's. The servers' codec (lenientCodec) therefore lets a
// message that fails to decode through empty and notes it in undecodable; the interceptors
// below, which run before authorization and the handler, answer it with InvalidArgument.

// undecodable holds the messages lenientCodec could not decode, by the message, until the
// interceptors take them out (LoadAndDelete: one lookup per request, found almost never).
var undecodable sync.Map // proto.Message → error

// lenientCodec is the protobuf codec, except that a message it cannot decode is left empty and
// noted in undecodable instead of failing the call there.
type lenientCodec struct{ encoding.CodecV2 }

func newLenientCodec() lenientCodec { return lenientCodec{encoding.GetCodecV2(protoenc.Name)} }

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	// Invalid UTF-8 in a string is refused naming the field (protobuf's error names none).
	if path, ok := utf8field.Of(data.Materialize(), m.ProtoReflect().Descriptor(), err); ok {
		err = rpcerr.Invalid(path, utf8field.Problem)
	}
	proto.Reset(m)
	undecodable.Store(m, err)
	return nil
}

// malformed is the refusal of a request message that could not be decoded: err itself when it
// is a refusal already (one naming the field).
func malformed(m any, err any) error {
	if e, ok := err.(error); ok && rpcerr.IsStatus(e) {
		return e
	}
	name := "request"
	if pm, ok := m.(proto.Message); ok {
		name = string(pm.ProtoReflect().Descriptor().FullName())
	}
	return status.Errorf(codes.InvalidArgument, "malformed %s message: %v", name, err)
}

// unaryDecoded refuses a request lenientCodec could not decode.
func unaryDecoded(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err, bad := undecodable.LoadAndDelete(req); bad {
		return nil, malformed(req, err)
	}
	return handler(ctx, req)
}

// streamDecoded refuses each streamed request message lenientCodec could not decode.
func streamDecoded(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, decodedStream{ss})
}

type decodedStream struct{ grpc.ServerStream }

func (s decodedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err, bad := undecodable.LoadAndDelete(m); bad {
		return malformed(m, err)
	}
	return nil
}
