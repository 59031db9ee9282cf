package tracing

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// OpenTelemetry's gRPC instrumentation is a stats handler, which calls over an in-process
// channel (the one-process mode's) never reach; these interceptors serve both kinds of channel.

// ServerInterceptors return the interceptors that give each call a server span: a child of
// the caller's span, whether it came in the metadata (over the network) or in the context (in
// process). Put them outermost, so a refused call has its span too.
func ServerInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, span := startServer(ctx, info.FullMethod)
		res, err := handler(ctx, req)
		End(span, err)
		return res, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, span := startServer(ss.Context(), info.FullMethod)
		err := handler(srv, tracedStream{ServerStream: ss, ctx: ctx})
		End(span, err)
		return err
	}
	return unary, stream
}

// ClientInterceptors return the interceptors that give each call a client span and carry it
// in the call's metadata, for a server in another process.
func ClientInterceptors() (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, span := startClient(ctx, method)
		err := invoker(ctx, method, req, reply, cc, opts...)
		End(span, err)
		return err
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, span := startClient(ctx, method)
		s, err := streamer(ctx, desc, cc, method, opts...)
		// A stream's span covers its opening: when it ends is the caller's business, and a
		// WatchOrder lasts as long as the shopper looks.
		End(span, err)
		return s, err
	}
	return unary, stream
}

func startServer(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if remote := otel.GetTextMapPropagator().Extract(ctx, metadataCarrier(md)); trace.SpanContextFromContext(remote).IsValid() {
			ctx = remote
		}
	}
	return tracer().Start(ctx, spanName(fullMethod), trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(rpcAttributes(fullMethod)...))
}

func startClient(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
	ctx, span := tracer().Start(ctx, spanName(fullMethod), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(rpcAttributes(fullMethod)...))
	return Outgoing(ctx), span
}

// Outgoing is ctx with the trace context of its span in its outgoing gRPC metadata, for a
// call whose server starts from a context of its own: in another process, or on an in-process
// channel, which hands its server only the call's metadata and deadline. With tracing off, or
// no span in ctx, it is ctx.
func Outgoing(ctx context.Context) context.Context {
	if !Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	otel.GetTextMapPropagator().Inject(ctx, metadataCarrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}

// spanName is "package.Service/Method", as OpenTelemetry names RPC spans.
func spanName(fullMethod string) string { return strings.TrimPrefix(fullMethod, "/") }

func rpcAttributes(fullMethod string) []attribute.KeyValue {
	return []attribute.KeyValue{semconv.RPCSystemNameGRPC, semconv.RPCMethod(spanName(fullMethod))}
}

// End ends span, a gRPC call's or a NATS request's, with the call's outcome, err's status code:
// an error status for the codes that say the server failed (a refusal of bad input, an order
// the stock cannot fill, is the caller's: recorded, but not an error).
func End(span trace.Span, err error) {
	if !span.IsRecording() {
		return // tracing off, or not sampled: nothing to add, and nothing to allocate
	}
	code := status.Code(err)
	span.SetAttributes(semconv.RPCResponseStatusCode(code.String()))
	switch code {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unauthenticated, codes.ResourceExhausted, codes.Aborted:
	default:
		span.SetStatus(otelcodes.Error, status.Convert(err).Message())
	}
	span.End()
}

type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }

// metadataCarrier reads and writes trace context in gRPC metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// EdgeInterceptor gives each call an edge (the gateway, the pos-adapter) takes a server span,
// over gRPC, gRPC-web and Connect alike. A client's own trace context is linked, not
// continued: the edges face the internet, and a caller must not choose what is sampled.
func EdgeInterceptor() connect.Interceptor {
	i, err := otelconnect.NewInterceptor(otelconnect.WithoutMetrics(), otelconnect.WithoutTraceEvents(),
		otelconnect.WithPropagator(propagation.TraceContext{})) // no caller's baggage
	if err != nil {
		panic(fmt.Sprintf("tracing: edge interceptor: %v", err)) // only bad options fail, and these are fixed
	}
	return i
}

// TraceID is the id of ctx's trace, for logs, or "" when ctx carries none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
