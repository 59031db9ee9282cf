// Package gateway is the public door for shopper apps: every shopper-facing RPC over gRPC-web,
// gRPC and the Connect protocol on one port (HTTP/1.1 and cleartext HTTP/2), with CORS for
// browsers, health and reflection, forwarding each call to the owning service's gRPC API.
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/edge"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
)

// Config configures the gateway.
type Config struct {
	// Catalog is a connection to the catalog's gRPC API.
	Catalog grpc.ClientConnInterface
	// AllowedOrigins lists the browser origins allowed by CORS ("*" allows any; empty allows
	// none, which suits native mobile apps and server-to-server callers).
	AllowedOrigins []string
	// MaxRequestBytes caps one request message; larger ones get ResourceExhausted.
	MaxRequestBytes int
	// Logger receives the gateway's logs.
	Logger *slog.Logger
}

// Gateway is the edge server.
type Gateway struct {
	handler http.Handler
	health  *edge.Health
	log     *slog.Logger
}

// New builds the gateway's HTTP handler.
func New(cfg Config) (*Gateway, error) {
	if cfg.Catalog == nil {
		return nil, errors.New("gateway: catalog connection is required")
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(cfg.MaxRequestBytes)}
	mux := http.NewServeMux()
	mux.Handle(catalogv1connect.NewCatalogServiceHandler(catalogProxy{c: catalogv1.NewCatalogServiceClient(cfg.Catalog)}, opts...))
	health := edge.Mount(mux, []string{catalogv1connect.CatalogServiceName}, opts...)
	return &Gateway{handler: edge.WithCORS(mux, cfg.AllowedOrigins), health: health, log: log.With("component", "gateway")}, nil
}

// Handler is the gateway's whole HTTP surface.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Serve serves on lis until ctx is cancelled, then reports NOT_SERVING and drains for up to
// grace.
func (g *Gateway) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	return edge.ServeHTTP(ctx, lis, g.handler, grace, g.log, func() { g.health.SetServing(false) })
}
