package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// CompressMinBytes is the smallest response message the edges compress (for clients that
// accept gzip). Most replies are a few hundred bytes, where gzip saves little and its per-message
// set-up was a tenth of the edges' CPU under load.
const CompressMinBytes = 4096

// Mount adds grpc.health.v1 and server reflection (v1 and v1alpha) for the named services to
// mux, describing those services and no others, and the error details they send (servedFiles), and returns the health status to flip on shutdown. They are open to anyone (probes and
// grpcurl carry no token), so besides opts (a size limit, above all: a small compressed
// reflection request can otherwise inflate to gigabytes) each address may make openPerAddress
// calls (or stream messages) a second to them, and hold openStreamsPerAddress streams open. A
// unary call (Check) is charged as soon as its headers are in, as streams are when they open,
// before its body is read.
func Mount(mux *http.ServeMux, services []string, opts ...connect.HandlerOption) *Health {
	limit := limitPerAddress(NewAddressLimiter(openPerAddress, openPerAddressBurst), openStreamsPerAddress)
	opts = append(slices.Clip(opts), WithCodec(), connect.WithInterceptors(limit))
	h := newHealth(services)
	const healthService = "/grpc.health.v1.Health/"
	mux.Handle(admitBeforeBody(healthService+"Check", connect.NewUnaryHandler(healthService+"Check", h.check, opts...), limit.admitBeforeBody, nil, opts...))
	mux.Handle(healthService+"Watch", connect.NewServerStreamHandler(healthService+"Watch", h.watch, opts...))
	served := append([]string{healthpb.Health_ServiceDesc.ServiceName}, services...)
	files, err := servedFiles(served)
	if err != nil {
		// Only descriptors that are wrong from the start fail here: a programming error.
		panic(err)
	}
	reflector := grpcreflect.NewReflector(grpcreflect.NamerFunc(func() []string { return served }), grpcreflect.WithDescriptorResolver(files))
	opts = append(opts, connect.WithInterceptors(restartOnDrain{h}))
	mux.Handle(h.endOnDrain(grpcreflect.NewHandlerV1(reflector, opts...)))
	mux.Handle(h.endOnDrain(grpcreflect.NewHandlerV1Alpha(reflector, opts...)))
	return h
}

// The per-address limit of health and reflection: far above what probes and tools need.
const (
	openPerAddress        = 50
	openPerAddressBurst   = 100
	openStreamsPerAddress = 16
)

// HTTP/2 connections (gRPC clients: terminals, tools, anything calling the edges over gRPC)
// are checked for a live peer: one that has sent nothing for pingAfter is pinged, and closed
// when no answer comes within pingTimeout, or when nothing could be written to it for
// writeByteTimeout. A half-open connection (its client's host gone without closing it)
// otherwise holds its streams, WatchOrder and StreamTickets, until TCP gives up, many minutes
// later. gRPC-web over HTTP/1.1 has TCP keep-alive only; behind a proxy that ends the clients'
// connections, the proxy is what is checked. Variables so tests can shorten them.
var (
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
)

const writeByteTimeout = 30 * time.Second

// ServeHTTP serves h on addr with HTTP/1.1 and cleartext HTTP/2 (gRPC needs HTTP/2; browsers
// speaking gRPC-web use HTTP/1.1), with timeouts that protect against slow clients while
// letting server streams live. beforeShutdown runs first when ctx ends.
func ServeHTTP(ctx context.Context, lis net.Listener, h http.Handler, grace time.Duration, log *slog.Logger, beforeShutdown func()) error {
	addr := lis.Addr().String()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           serveProcedures(h),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             &http.HTTP2Config{SendPingTimeout: pingAfter, PingTimeout: pingTimeout, WriteByteTimeout: writeByteTimeout},
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	if beforeShutdown != nil {
		beforeShutdown()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("graceful HTTP shutdown timed out; closing connections", "addr", addr, "err", err)
		srv.Close()
	}
	return nil
}

// WithCORS lets the listed browser origins call every protocol and read gRPC trailers-in-headers
// (grpc-status, grpc-message) that gRPC-web clients need.
func WithCORS(h http.Handler, origins []string) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		// The trace context (W3C) of an app traced in the browser, which the edge links its
		// span to (tracing.EdgeInterceptor); refused, its preflight fails and so does every call.
		AllowedHeaders: append(connectcors.AllowedHeaders(), "authorization", "traceparent", "tracestate"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200,
	}).Handler(h)
}
