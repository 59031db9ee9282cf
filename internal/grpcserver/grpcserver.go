// Package grpcserver builds the gRPC servers of Handoff's services the same way everywhere:
// panic recovery, Prometheus metrics, structured request logs, grpc.health.v1 and server
// reflection, keepalive settings fit for long-lived streams, and a graceful stop.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fullstorydev/grpchan/inprocgrpc"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/tracing"
)

// metrics is shared by every gRPC server of the process: in the one-process mode several
// servers run side by side and Prometheus refuses duplicate registrations.
var metrics = sync.OnceValue(func() *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}),
	))
	prometheus.MustRegister(m)
	return m
})

// Server is a gRPC server with its health service.
type Server struct {
	*grpc.Server
	Health *health.Server
	logger *slog.Logger
	// draining ends when the server starts to stop; its server streams end with it.
	draining context.Context
	drain    context.CancelFunc
	// notServing is set while a dependency of the process is down (SetServing); healthMu
	// orders its reports, so that one read before a change is not written after it.
	notServing atomic.Bool
	healthMu   sync.Mutex
}

// New returns a server with Handoff's interceptors; register services on it, then call Serve.
// With keys, every call is authorized by auth.DefaultPolicy and carries its caller in the
// context; nil keys (tests of a single service) leave calls anonymous. Options given replace
// the defaults they name (MaxConnectionAge, say).
func New(logger *slog.Logger, keys *auth.KeySet, opts ...grpc.ServerOption) *Server {
	s := &Server{logger: logger}
	s.draining, s.drain = context.WithCancel(context.Background())
	unary, stream := interceptors(logger, keys)
	// Inside metrics and request logs, so a stream ended by the stop is counted as it ends.
	stream = slices.Insert(stream, 2, s.endOnDrain)
	unary, stream = traced(unary, stream)
	base := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		MaxConnectionAge(DefaultMaxConnectionAge),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4 << 20),
		grpc.ForceServerCodecV2(newLenientCodec()), // see codec.go
	}
	s.Server = grpc.NewServer(append(base, opts...)...)
	s.Health = health.NewServer()
	healthpb.RegisterHealthServer(s.Server, s.Health)
	reflection.Register(s.Server)
	return s
}

// DefaultMaxConnectionAge is how long a client's connection lives before the server asks it to
// reconnect. gRPC clients resolve a service's name again only when a connection goes, so
// without an age a copy added by scaling out would take no calls from a running edge until
// something broke; with it, every edge finds the new copy within about this long.
const DefaultMaxConnectionAge = 2 * time.Minute

// MaxConnectionAge gives the server's keepalive settings with connections aged out after age
// (±10%, gRPC's jitter, so an edge's connections do not all go at once). The server sends
// GOAWAY: calls in flight, and streams (WatchOrder) however long, finish on the old
// connection while new calls go to a new one, so an age out is never an error for a caller.
// Pings every 30 s keep NATs and load balancers from dropping long streams silently.
func MaxConnectionAge(age time.Duration) grpc.ServerOption {
	return grpc.KeepaliveParams(keepalive.ServerParameters{
		Time: 30 * time.Second, Timeout: 10 * time.Second, MaxConnectionAge: age,
	})
}

// endOnDrain ends a server stream (WatchOrder, a health Watch) or a reflection stream once the
// server starts to stop: such a stream stays open for hours (a reflection stream waits, idle,
// for its tool's next request) and would hold the graceful stop for its whole grace, every
// restart. Its caller is told Unavailable, so it calls again: another copy, or this one
// restarted. Unary calls and the other stream kinds are left to finish within the grace.
func (s *Server) endOnDrain(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	var err error
	switch {
	case info.IsServerStream && !info.IsClientStream:
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(s.draining, cancel)()
		err = handler(srv, drainableStream{ServerStream: ss, ctx: ctx})
	case strings.HasPrefix(info.FullMethod, "/grpc.reflection."):
		err = handler(srv, drainingReceiver{ServerStream: ss, draining: s.draining})
	default:
		return handler(srv, ss)
	}
	if s.draining.Err() != nil && ss.Context().Err() == nil {
		return status.Error(codes.Unavailable, "the server is shutting down; call again to go on")
	}
	return err
}

// drainableStream is a server stream whose context also ends when the server stops.
type drainableStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (d drainableStream) Context() context.Context { return d.ctx }

// drainingReceiver is a stream whose wait for the client's next message ends when the server
// stops. The abandoned receive returns as the stream ends; each receive decodes into a fresh
// message (reflection's do), so nothing reads what it writes.
type drainingReceiver struct {
	grpc.ServerStream
	draining context.Context
}

func (d drainingReceiver) RecvMsg(m any) error {
	got := make(chan error, 1)
	go func() { got <- d.ServerStream.RecvMsg(m) }()
	select {
	case err := <-got:
		return err
	case <-d.draining.Done():
		return status.Error(codes.Unavailable, "the server is shutting down")
	}
}

// interceptors are every server's, outermost first: metrics, request logs, the refusal of
// messages that could not be decoded (codec.go), internal failures as statuses (status.go), panic recovery, with keys the authorization of each call, and the
// refusal of text Postgres cannot store (package pgtext).
func interceptors(logger *slog.Logger, keys *auth.KeySet) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	m := metrics()
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		// Refusals of bad input are the caller's business; only server-side faults are warnings.
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable, codes.DeadlineExceeded:
				return logging.LevelWarn
			default:
				return logging.LevelDebug
			}
		}),
	}
	if tracing.Enabled() {
		// A call's log line names its trace, to find the one from the other. Only when traced:
		// the option rebuilds every call's log fields, a cost on every call.
		logOpts = append(logOpts, logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			if id := tracing.TraceID(ctx); id != "" {
				return logging.Fields{"trace_id", id}
			}
			return nil
		}))
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	unary := []grpc.UnaryServerInterceptor{
		m.UnaryServerInterceptor(),
		logging.UnaryServerInterceptor(slogAdapter(logger), logOpts...),
		unaryDecoded, // before anything that may refuse the call and leave its note behind
		unaryStatuses(logger),
		recovery.UnaryServerInterceptor(recoverOpt),
	}
	stream := []grpc.StreamServerInterceptor{
		m.StreamServerInterceptor(),
		logging.StreamServerInterceptor(slogAdapter(logger), logOpts...),
		streamDecoded,
		streamStatuses(logger),
		recovery.StreamServerInterceptor(recoverOpt),
	}
	if keys != nil {
		// Inside the others, so refusals are counted and logged like any other outcome.
		unary = append(unary, auth.UnaryServerInterceptor(keys, auth.DefaultPolicy()))
		stream = append(stream, auth.StreamServerInterceptor(keys, auth.DefaultPolicy()))
	}
	return append(unary, unaryText), append(stream, streamText)
}

// traced puts the tracing interceptors outermost when tracing is on, so that a refused call
// has its span too; off, it leaves the chains as they are.
func traced(unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	if !tracing.Enabled() {
		return unary, stream
	}
	tu, ts := tracing.ServerInterceptors()
	return slices.Insert(unary, 0, tu), slices.Insert(stream, 0, ts)
}

// InProcess returns a channel on which services register as on a server and which callers in
// the same process use as a client connection: a call runs the service's handler directly,
// through the same interceptors as New's servers, with no HTTP/2 framing, socket or
// serialization in between (messages are cloned). The one-process mode's gateway and
// pos-adapter reach the services this way; a service's own server still listens for the rest.
func InProcess(logger *slog.Logger, keys *auth.KeySet) *Channel {
	unary, stream := traced(interceptors(logger, keys))
	chained := chainUnary(unary)
	return &Channel{
		Channel: new(inprocgrpc.Channel).
			WithServerUnaryInterceptor(chained).
			WithServerStreamInterceptor(chainStream(stream)),
		interceptor: chained,
	}
}

// Channel is InProcess's channel. Unary calls run on the caller's goroutine (unary.go). Set it
// up through InProcess only: interceptors or cloners given later with inprocgrpc's With
// methods would reach only the calls that still go through inprocgrpc.
type Channel struct {
	*inprocgrpc.Channel
	interceptor grpc.UnaryServerInterceptor
	unary       unaryMethods
}

// NewStream opens a stream as the inprocgrpc channel does, except that a server stream refused
// before its request was read (by authorization, say) reports the refusal. The generated client
// sends the request and returns SendMsg's error as is; the in-process stream's SendMsg says
// only io.EOF once the handler has returned, so the caller would see "EOF" where a network
// stream gives the status (Unauthenticated, NotFound), depending on which side ran first.
func (c *Channel) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := c.Channel.NewStream(tracing.Outgoing(ctx), desc, method, opts...)
	if err != nil || desc.ClientStreams || !desc.ServerStreams {
		return s, err
	}
	return refusalOnSend{s}, nil
}

// refusalOnSend is a server stream whose SendMsg, when the handler has already ended, returns
// the status it ended with. Nothing can precede that status on the stream: the handler never
// read the request, so it sent no message.
type refusalOnSend struct{ grpc.ClientStream }

func (s refusalOnSend) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err != io.EOF {
		return err
	}
	if recvErr := s.ClientStream.RecvMsg(new(emptypb.Empty)); recvErr != nil && recvErr != io.EOF {
		return recvErr
	}
	return err
}

// chainUnary runs interceptors as one, the first outermost (as grpc.ChainUnaryInterceptor).
func chainUnary(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		next := handler
		for i := len(interceptors) - 1; i >= 0; i-- {
			in, inner := interceptors[i], next
			next = func(ctx context.Context, req any) (any, error) { return in(ctx, req, info, inner) }
		}
		return next(ctx, req)
	}
}

// chainStream is chainUnary for streams.
func chainStream(interceptors []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		next := handler
		for i := len(interceptors) - 1; i >= 0; i-- {
			in, inner := interceptors[i], next
			next = func(srv any, ss grpc.ServerStream) error { return in(srv, ss, info, inner) }
		}
		return next(srv, ss)
	}
}

// SetServing reports the server, and each service on it, SERVING or NOT_SERVING (a dependency
// of the process down). Once the server has begun to stop, health stays NOT_SERVING.
func (s *Server) SetServing(serving bool) {
	s.notServing.Store(!serving)
	s.reportHealth()
}

// reportHealth sets the status of the server ("") and of each service registered on it, so
// that a probe naming a service (grpc-health-probe -service, a Kubernetes gRPC probe's
// service) is answered on the service's own port as on the edges.
func (s *Server) reportHealth() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	st := healthpb.HealthCheckResponse_SERVING
	if s.notServing.Load() {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.Health.SetServingStatus("", st)
	for name := range s.Server.GetServiceInfo() {
		s.Health.SetServingStatus(name, st)
	}
}

// Serve serves on lis until ctx is cancelled, then stops gracefully: health turns NOT_SERVING,
// server streams end (endOnDrain), other calls in flight get up to grace to finish, and what
// remains is cut.
func (s *Server) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	addr := lis.Addr().String()
	metrics().InitializeMetrics(s.Server)
	s.reportHealth() // each service registered by now is known to health by its own name
	errc := make(chan error, 1)
	go func() { errc <- s.Server.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC on %s: %w", addr, err)
		}
		return nil
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	s.drain()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.logger.Warn("graceful stop timed out; closing remaining calls", "addr", addr, "grace", grace)
		s.Stop()
		<-done
	}
	return nil
}

// slogAdapter lets the middleware log through our slog logger.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
