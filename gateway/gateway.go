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
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/edge"
	"github.com/handoff-dev/handoff/internal/tracing"
	cartv1 "github.com/handoff-dev/handoff/proto/handoff/cart/v1"
	"github.com/handoff-dev/handoff/proto/handoff/cart/v1/cartv1connect"
	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"
	"github.com/handoff-dev/handoff/proto/handoff/catalog/v1/catalogv1connect"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1/fulfilmentv1connect"
	inventoryv1 "github.com/handoff-dev/handoff/proto/handoff/inventory/v1"
	"github.com/handoff-dev/handoff/proto/handoff/inventory/v1/inventoryv1connect"
)

// PublicServices are the services the gateway serves (and reflection lists): the shopper-facing
// ones only; admin and staff APIs are never reachable through this door.
var PublicServices = []string{
	catalogv1connect.CatalogServiceName,
	inventoryv1connect.StoreLocatorServiceName,
	cartv1connect.CartServiceName,
	fulfilmentv1connect.OrderServiceName,
}

// Config configures the gateway.
type Config struct {
	// Connections to the services' gRPC APIs.
	Catalog    grpc.ClientConnInterface
	Inventory  grpc.ClientConnInterface
	Cart       grpc.ClientConnInterface
	Fulfilment grpc.ClientConnInterface
	// Keys verify callers' tokens.
	Keys *auth.KeySet
	// RateLimits; zero value means DefaultRateLimits.
	RateLimits RateLimits
	// AllowedOrigins lists the browser origins allowed by CORS ("*" allows any; empty allows
	// none, which suits native mobile apps and server-to-server callers).
	AllowedOrigins []string
	// TrustedProxies are the reverse proxies in front of the gateway whose X-Forwarded-For
	// names the client (edge.WithClientAddress); none means the peer is the client.
	TrustedProxies []net.IPNet
	// MaxRequestBytes caps one request message; larger ones get ResourceExhausted.
	MaxRequestBytes int
	// Logger receives the gateway's logs.
	Logger *slog.Logger
}

// Gateway is the edge server.
type Gateway struct {
	handler http.Handler
	health  *edge.Health
	drain   context.CancelFunc // ends open streams on shutdown
	log     *slog.Logger
}

// New builds the gateway's HTTP handler.
func New(cfg Config) (*Gateway, error) {
	if cfg.Catalog == nil || cfg.Inventory == nil || cfg.Cart == nil || cfg.Fulfilment == nil {
		return nil, errors.New("gateway: connections to catalog, inventory, cart and fulfilment are required")
	}
	if cfg.Keys == nil {
		return nil, errors.New("gateway: a key set is required to verify tokens")
	}
	if cfg.RateLimits == (RateLimits{}) {
		cfg.RateLimits = DefaultRateLimits()
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	draining, drain := context.WithCancel(context.Background())
	admit := newAdmission(cfg.Keys, cfg.RateLimits)
	admit.draining = draining
	// Every call answered is counted once (handoff_edge_requests_total{edge="gateway"}),
	// refusals included: its interceptor comes first, so it sees what admission refuses.
	requests := edge.NewRequests("gateway", PublicServices...)
	interceptors := []connect.Interceptor{requests.Interceptor(), admit.interceptor()}
	if tracing.Enabled() {
		interceptors = slices.Insert(interceptors, 0, tracing.EdgeInterceptor())
	}
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		edge.WithCodec(),
		connect.WithInterceptors(interceptors...),
		// Only responses worth it are gzipped for clients that accept it: a fresh gzip state per
		// message cost more CPU than the whole protobuf encoding of a small reply saved in bytes.
		connect.WithCompressMinBytes(edge.CompressMinBytes),
	}
	admitted := func(path string, h http.Handler) (string, http.Handler) {
		return requests.AdmitBeforeBody(path, h, admit.admit, opts...)
	}
	mux := http.NewServeMux()
	mux.Handle(admitted(catalogv1connect.NewCatalogServiceHandler(catalogProxy{c: catalogv1.NewCatalogServiceClient(cfg.Catalog)}, opts...)))
	mux.Handle(admitted(inventoryv1connect.NewStoreLocatorServiceHandler(locatorProxy{c: inventoryv1.NewStoreLocatorServiceClient(cfg.Inventory)}, opts...)))
	mux.Handle(admitted(cartv1connect.NewCartServiceHandler(cartProxy{c: cartv1.NewCartServiceClient(cfg.Cart)}, opts...)))
	orderPath, orderHandler := fulfilmentv1connect.NewOrderServiceHandler(orderProxy{c: fulfilmentv1.NewOrderServiceClient(cfg.Fulfilment)}, opts...)
	// A watch ended by the gateway (its token expired, a shutdown) while stuck sending to a
	// client that reads nothing has its writes cut a grace later.
	mux.Handle(admitted(orderPath, edge.WithWriteControl(orderHandler, edge.StreamEndGrace, fulfilmentv1connect.OrderServiceWatchOrderProcedure)))
	// Health and reflection stay open: probes and grpcurl carry no token.
	health := edge.Mount(mux, PublicServices, connect.WithReadMaxBytes(cfg.MaxRequestBytes))
	return &Gateway{handler: edge.WithClientAddress(edge.WithCORS(edge.WithGRPCWebText(mux), cfg.AllowedOrigins), cfg.TrustedProxies), health: health, drain: drain, log: log.With("component", "gateway")}, nil
}

// Handler is the gateway's whole HTTP surface.
func (g *Gateway) Handler() http.Handler { return g.handler }

// SetServing reports the gateway's health SERVING or NOT_SERVING (a dependency of its process
// down); it has no effect once the gateway has begun to stop.
func (g *Gateway) SetServing(serving bool) { g.health.SetServing(serving) }

// Serve serves on lis until ctx is cancelled, then reports NOT_SERVING, ends open streams
// (clients watch again, through another copy or this one restarted) and drains unary calls for
// up to grace.
func (g *Gateway) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	return edge.ServeHTTP(ctx, lis, g.handler, grace, g.log, func() {
		g.health.Drain()
		g.drain()
	})
}
