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

	"github.com/handoff-dev/handoff/internal/tracing"
)

// The in-process channel runs a unary call's handler on the caller's goroutine.
//
// inprocgrpc starts a goroutine for every unary call (so that a caller whose context ends can
// return before the handler does) and copies the messages through a generic cloner. Under
// load that goroutine's stack was grown from scratch on every call: with its channel hand-offs
// about 2.5% of the one-process system's Go CPU. A call here runs the same interceptors and
// handler with what a handler sees over a network (no caller values, incoming metadata, peer,
// method, the caller's deadline and cancellation; cancelled when the call ends), copies the
// request and response as before, and answers a caller whose context ended with its
// context's error, whatever the handler returned. It returns when the handler does: every
// handler stops when its context ends, or bounds what it finishes after that (cart's marking
// of a placed order, fulfilment's settling of one). Calls that ask for something only a
// transport gives (headers, trailers, per-call credentials) still go through inprocgrpc.
// unaryMethod is a registered unary method: the service and the generated handler, which
// decodes the request and runs the interceptor chain.
type unaryMethod struct {
	srv     any
	handler grpc.MethodHandler
}

// unaryMethods is the channel's unary methods by full name ("/pkg.Service/Method"). The map is
// replaced, never changed, so calls read it without a lock. (Services are registered before
// the channel is used: inprocgrpc's own map, which streams use, is not safe to change then.)
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
	ctx = tracing.Outgoing(ctx)
	m, ok := c.unary.lookup(method)
	in, inOK := req.(proto.Message)
	out, outOK := resp.(proto.Message)
	if !ok || !inOK || !outOK || !transportFree(opts) {
		return c.Channel.Invoke(ctx, method, req, resp, opts...)
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	sctx, end := serverContext(ctx)
	defer end()
	sctx = grpc.NewContextWithServerTransportStream(sctx, unaryStream(method))
	decode := func(v any) error {
		dst, ok := v.(proto.Message)
		if !ok || dst.ProtoReflect().Descriptor() != in.ProtoReflect().Descriptor() {
			return status.Errorf(codes.Internal, "request of type %T for %s", req, method)
		}
		proto.Merge(dst, in)
		return nil
	}
	v, err := m.handler(m.srv, sctx, decode, c.interceptor)
	if ctxErr := ctx.Err(); ctxErr != nil {
		// As over a network (and through inprocgrpc): a caller that gave up gets its context's
		// error, even if the handler went on to finish.
		return status.FromContextError(ctxErr).Err()
	}
	if err != nil {
		return err
	}
	res, ok := v.(proto.Message)
	if !ok || !res.ProtoReflect().IsValid() { // nil, or a typed nil
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
// of the caller's values. It is a context of its own, not a wrapper hiding the caller's
// values: the context package finds a cancellable parent through Value, so contexts derived
// from a wrapper (each query's timeout, pgx's per-query watch) would each start a goroutine
// to follow it. end releases it once the call is over.
func serverContext(ctx context.Context) (sctx context.Context, end func()) {
	base := context.Background()
	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		base = metadata.NewIncomingContext(base, md)
	}
	base = peer.NewContext(base, &inProcessPeer)
	deadline, hasDeadline := ctx.Deadline()
	var cancel context.CancelFunc
	if hasDeadline {
		sctx, cancel = context.WithDeadline(base, deadline)
	} else {
		sctx, cancel = context.WithCancel(base)
	}
	stop := context.AfterFunc(ctx, func() {
		// A passed deadline is ended by sctx's own timer, so the handler sees
		// DeadlineExceeded as the caller does, not Canceled.
		if hasDeadline && ctx.Err() == context.DeadlineExceeded {
			return
		}
		cancel()
	})
	return sctx, func() {
		stop()
		cancel()
	}
}

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
