// Package system says where a running Handoff is and how to get tokens for it, and can start
// one: the whole system in this process (the one-process mode of cmd/handoff) in a data dir of
// its own, for runs that should not depend on anything already running.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/auth"
	"github.com/handoff-dev/handoff/internal/hours"
	"github.com/handoff-dev/handoff/internal/stack"
)

// Endpoints are the doors of a running Handoff and the keys its tokens are signed with.
type Endpoints struct {
	// GatewayURL is the shoppers' door, e.g. "http://127.0.0.1:8080".
	GatewayURL string
	// POSURL is the pos-adapter, the stores' door, e.g. "http://127.0.0.1:8090".
	POSURL string
	// InventoryAddr is inventory's gRPC API (host:port), for admin checks such as
	// CheckInvariants; empty when unknown.
	InventoryAddr string
	// Keys sign the tokens the system accepts.
	Keys *auth.KeySet
}

// Keys loads the key set a running system uses, exactly as `handoff token` does: the key set
// spec when given (HANDOFF_JWT_KEYS), else the one-process mode's development key in dataDir,
// which must exist.
func Keys(jwtKeys, dataDir string) (*auth.KeySet, error) {
	return stack.ClientKeys(jwtKeys, dataDir)
}

// Token mints a token for p, valid for a day.
func (e Endpoints) Token(p auth.Principal) (string, error) {
	return e.Keys.Issue(p, 24*time.Hour)
}

// SpawnConfig says how to start a system in this process.
type SpawnConfig struct {
	// DataDir holds its embedded NATS, its private PostgreSQL and its development key.
	DataDir string
	// DatabaseURL, when set, is used instead of a private PostgreSQL cluster.
	DatabaseURL string
	// RateLimits at the gateway; zero means the gateway's defaults (meant for one shopper
	// using an app, far below what a load run needs).
	RateLimits gateway.RateLimits
	// Logger receives the system's logs.
	Logger *slog.Logger
	// DemoTimeZone, when set, is the zone the demo chain's stores keep their hours in (see
	// LateMorningZone).
	DemoTimeZone string
}

// LateMorningZone is a fixed-offset zone in which it is 11:00–11:59 at now. The demo chain kept
// in it has every store open, as at a busy time of the day, whatever the time here: in its own
// zone at night only its three all-night stores take orders, and a load run over the chain
// would measure three stores, not fifty.
func LateMorningZone(now time.Time) string { return hours.ZoneWhereItIs(11, now) }

// Spawn starts the whole system (demo chain loaded, every part on a free loopback port) and
// returns its endpoints once every part serves. stop shuts it down and waits for it.
func Spawn(ctx context.Context, cfg SpawnConfig) (_ Endpoints, stop func() error, _ error) {
	scfg := stack.Config{
		Target:           stack.TargetAll,
		DataDir:          cfg.DataDir,
		DatabaseURL:      cfg.DatabaseURL,
		EmbeddedNATSAddr: "127.0.0.1:0",
		GatewayAddr:      "127.0.0.1:0",
		POSAdapterAddr:   "127.0.0.1:0",
		CatalogAddr:      "127.0.0.1:0",
		InventoryAddr:    "127.0.0.1:0",
		CartAddr:         "127.0.0.1:0",
		FulfilmentAddr:   "127.0.0.1:0",
		AllowedOrigins:   []string{"*"},
		RateLimits:       cfg.RateLimits,
		Currency:         "USD",
		LoadDemo:         true,
		DemoTimeZone:     cfg.DemoTimeZone,
		ShutdownGrace:    2 * time.Second,
		Logger:           cfg.Logger,
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	readyc := make(chan stack.Ready, 1)
	errc := make(chan error, 1)
	go func() { errc <- stack.Run(runCtx, scfg, func(r stack.Ready) { readyc <- r }) }()
	stop = func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(time.Minute):
			return errors.New("the spawned system did not stop within a minute")
		}
	}
	select {
	case r := <-readyc:
		return Endpoints{
			GatewayURL:    "http://" + r.GatewayAddr,
			POSURL:        "http://" + r.POSAdapterAddr,
			InventoryAddr: r.ServiceAddrs[stack.TargetInventory],
			Keys:          r.Keys,
		}, stop, nil
	case err := <-errc:
		cancel()
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return Endpoints{}, nil, fmt.Errorf("start Handoff: %w", err)
	case <-ctx.Done():
		_ = stop()
		return Endpoints{}, nil, ctx.Err()
	}
}
