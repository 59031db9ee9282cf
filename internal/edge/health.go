package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/handoff-dev/handoff/internal/rpcerr"
)

// Health serves grpc.health.v1 over gRPC, gRPC-web and Connect on an edge port, so load
// balancers and grpc-health-probe can use the same port clients do.
type Health struct {
	services map[string]bool
	mu       sync.RWMutex
	serving  bool
	draining bool          // the server is shutting down: Watch streams end
	changed  chan struct{} // closed and replaced on every change, to wake Watch streams
	// drained ends with Drain: reflection streams, waiting on their client, end with it.
	drained context.Context
	drain   context.CancelFunc
}

func newHealth(services []string) *Health {
	h := &Health{services: map[string]bool{}, serving: true, changed: make(chan struct{})}
	h.drained, h.drain = context.WithCancel(context.Background())
	for _, s := range services {
		h.services[s] = true
	}
	return h
}

// SetServing flips the overall status: false while a dependency is down. Once draining (Drain)
// it stays NOT_SERVING.
func (h *Health) SetServing(serving bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		return
	}
	if h.serving != serving {
		h.serving = serving
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// Drain reports NOT_SERVING for good and ends Watch streams once they have sent it: the
// server is shutting down, and an open watch would hold its drain until the grace runs out.
func (h *Health) Drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serving = false
	h.draining = true
	close(h.changed)
	h.changed = make(chan struct{})
	h.drain()
}

// endOnDrain ends a reflection stream when the server starts to stop. Its handler waits for
// the client's next request, which an idle grpcurl session may never send, and so would hold
// the drain until the grace runs out. Closing the request body wakes that wait: over HTTP/2
// a close may race a read, and bidi streams need HTTP/2 (connect refuses them over HTTP/1.1).
func (h *Health) endOnDrain(pattern string, next http.Handler) (string, http.Handler) {
	return pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor >= 2 {
			defer context.AfterFunc(h.drained, func() { _ = r.Body.Close() })()
		}
		next.ServeHTTP(w, r)
	})
}

// restartOnDrain tells a client whose stream ended with the server's drain to open it again
// (Unavailable), rather than passing on the error of a body closed under it.
type restartOnDrain struct{ h *Health }

func (d restartOnDrain) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (d restartOnDrain) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (d restartOnDrain) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		if err != nil && d.h.drained.Err() != nil {
			return connect.NewError(connect.CodeUnavailable, errors.New("the server is restarting: open the stream again"))
		}
		return err
	}
}

func (h *Health) status() (st healthpb.HealthCheckResponse_ServingStatus, changed <-chan struct{}, draining bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.serving {
		return healthpb.HealthCheckResponse_SERVING, h.changed, h.draining
	}
	return healthpb.HealthCheckResponse_NOT_SERVING, h.changed, h.draining
}

// known reports whether service is one this port answers for ("" is the whole server).
func (h *Health) known(service string) bool { return service == "" || h.services[service] }

func (h *Health) check(_ context.Context, req *connect.Request[healthpb.HealthCheckRequest]) (*connect.Response[healthpb.HealthCheckResponse], error) {
	if !h.known(req.Msg.GetService()) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", rpcerr.Echo(req.Msg.GetService())))
	}
	st, _, _ := h.status()
	return connect.NewResponse(&healthpb.HealthCheckResponse{Status: st}), nil
}

func (h *Health) watch(ctx context.Context, req *connect.Request[healthpb.HealthCheckRequest], stream *connect.ServerStream[healthpb.HealthCheckResponse]) error {
	if !h.known(req.Msg.GetService()) {
		// Said once, and the call kept open (grpc.health.v1): a watcher whose call ended would
		// only call again, in a loop, charged each time to its address's limit.
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVICE_UNKNOWN}); err != nil {
			return err
		}
		for {
			_, changed, draining := h.status()
			if draining {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			}
		}
	}
	for {
		st, changed, draining := h.status()
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil || draining {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
