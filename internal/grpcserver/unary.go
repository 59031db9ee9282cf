package grpcserver

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The in-process channel runs a unary call's handler on the caller's goroutine.
//
// inprocgrpc starts a goroutine for every unary call (so that a caller whose context ends can
// return before the handler does) and copies the messages through a generic cloner. Under
// load that goroutine's stack was grown from scratch on every call: with its channel hand-offs
// about 2.5% of the one-process system's Go CPU, for a guarantee our handlers do not need,
// since each of them stops when its context ends. A call here runs the same interceptors and
// handler with the same server context (no caller values, incoming metadata, peer, method),
// copies the request and response as before, and is cancelled once the handler returns.
// Calls that ask for something only a transport gives (headers, trailers, per-call
// credentials) still go through inprocgrpc.

// unaryMethod is a registered unary method: the service and the generated handler, which
// decodes the request and runs the interceptor chain.
type unaryMethod struct {
	srv     any
	handler grpc.MethodHandler
}

// unaryMethods is the channel's unary methods by full name ("/pkg.Service/Method"). It is
// replaced, never changed, so calls read it without a lock.
type unaryMethods struct {
	mu      sync.Mutex // serializes registrations
	methods atomic.Pointer[map[string]unaryMethod]
}

func (u *unaryMethods) register(desc *grpc.ServiceDesc, srv any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	next := map[string]unaryMethod{}
	if cur := u.methods.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	for _, m := range desc.Methods {
		next["/"+desc.ServiceName+"/"+m.MethodName] = unaryMethod{srv: srv, handler: m.Handler}
	}
	u.methods.Store(&next)
}

func (u *unaryMethods) lookup(method string) (unaryMethod, bool) {
	cur := u.methods.Load()
	if cur == nil {
		return unaryMethod{}, false
	}
	m, ok := (*cur)[method]
	return m, ok
}

// RegisterService registers a service as inprocgrpc does, and keeps its unary methods for
// Invoke.
func (c *Channel) RegisterService(desc *grpc.ServiceDesc, srv any) {
	c.Channel.RegisterService(desc, srv)
	c.unary.register(desc, srv)
}

// Invoke runs a unary call on the caller's goroutine (see above).
func (c *Channel) Invoke(ctx context.Context, method string, req, resp any, opts ...grpc.CallOption) error {
	m, ok := c.unary.lookup(method)
	in, inOK := req.(proto.Message)
	out, outOK := resp.(proto.Message)
	if !ok || !inOK || !outOK || !transportFree(opts) {
		return c.Channel.Invoke(ctx, method, req, resp, opts...)
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sctx := grpc.NewContextWithServerTransportStream(serverContext(ctx), unaryStream(method))
	decode := func(v any) error {
		dst, ok := v.(proto.Message)
		if !ok || dst.ProtoReflect().Descriptor() != in.ProtoReflect().Descriptor() {
			return status.Errorf(codes.Internal, "request of type %T for %s", req, method)
		}
		proto.Merge(dst, in)
		return nil
	}
	v, err := m.handler(m.srv, sctx, decode, c.interceptor)
	if err != nil {
		return err
	}
	res, ok := v.(proto.Message)
	if !ok || res == nil || !res.ProtoReflect().IsValid() {
		return status.Error(codes.Internal, "handler returned neither error nor response message")
	}
	if res.ProtoReflect().Descriptor() != out.ProtoReflect().Descriptor() {
		return status.Errorf(codes.Internal, "response of type %T for %s", v, method)
	}
	proto.Reset(out)
	proto.Merge(out, res)
	return nil
}

// transportFree reports whether opts ask for nothing beyond the call itself: the generated
// clients pass grpc.StaticMethod on every call.
func transportFree(opts []grpc.CallOption) bool {
	for _, o := range opts {
		switch o.(type) {
		case grpc.StaticMethodCallOption, grpc.EmptyCallOption:
		default:
			return false
		}
	}
	return true
}

// serverContext is what a handler sees of its caller's context, as over a network: the
// deadline and cancellation, the outgoing metadata as incoming, an in-process peer, and none
// of the caller's values.
func serverContext(ctx context.Context) context.Context {
	sctx := context.Context(withoutValues{ctx})
	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		sctx = metadata.NewIncomingContext(sctx, md)
	}
	return peer.NewContext(sctx, &inProcessPeer)
}

// withoutValues keeps a context's deadline and cancellation but none of its values.
type withoutValues struct{ context.Context }

func (withoutValues) Value(any) any { return nil }

var inProcessPeer = peer.Peer{Addr: inProcessAddr{}}

type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "inproc" }
func (inProcessAddr) String() string  { return "0" }

// unaryStream is a unary call's grpc.ServerTransportStream: it names the method; headers and
// trailers a handler sets are dropped, as the caller did not ask for them.
type unaryStream string

func (s unaryStream) Method() string             { return string(s) }
func (unaryStream) SetHeader(metadata.MD) error  { return nil }
func (unaryStream) SendHeader(metadata.MD) error { return nil }
func (unaryStream) SetTrailer(metadata.MD) error { return nil }
