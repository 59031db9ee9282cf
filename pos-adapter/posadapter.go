// Package posadapter is the door for store POS terminals and staff devices: the live ticket
// feed, staff actions on orders and vendor POS webhooks, over gRPC, gRPC-web and Connect on one
// port. This first cut serves health and reflection so deployments and probes can be wired;
// the terminal APIs arrive with the POS work.
package posadapter

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff/internal/edge"
)

// Config configures the pos-adapter.
type Config struct {
	// AllowedOrigins lists browser origins allowed by CORS (browser-based terminals).
	AllowedOrigins []string
	// Logger receives the adapter's logs.
	Logger *slog.Logger
}

// Adapter is the pos-adapter's edge server.
type Adapter struct {
	handler http.Handler
	health  *edge.Health
	log     *slog.Logger
}

// New builds the adapter.
func New(cfg Config) *Adapter {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	health := edge.Mount(mux, nil)
	return &Adapter{handler: edge.WithCORS(mux, cfg.AllowedOrigins), health: health, log: log.With("component", "pos-adapter")}
}

// Serve serves on lis until ctx is cancelled, then drains for up to grace.
func (a *Adapter) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	return edge.ServeHTTP(ctx, lis, a.handler, grace, a.log, func() { a.health.SetServing(false) })
}
