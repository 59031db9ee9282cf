package stack

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/services/catalog"
)

// Version is reported by NATS micro discovery.
const Version = "0.1.0"

// service is what every Handoff service offers the stack. Each one owns a schema, serves its
// gRPC API and NATS endpoints, may run background work, and loads its part of the demo chain.
type service interface {
	RegisterGRPC(grpc.ServiceRegistrar)
	RegisterNATS(*natsrpc.Service) error
	// Run does the service's background work (sweepers, consumers) until ctx ends.
	Run(ctx context.Context) error
	// LoadDemo loads the demo chain into an empty schema; a filled one is left alone.
	LoadDemo(ctx context.Context, chain demo.Chain) (bool, error)
}

// deps are what a service is built from.
type deps struct {
	Pool     *pgxpool.Pool
	NC       *nats.Conn
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Currency string
}

// serviceSpec says how to start one service.
type serviceSpec struct {
	name        string
	schema      string
	migrations  fs.FS
	description string
	addr        func(*Config) string
	build       func(deps) (service, error)
}

// services lists every service, in start order.
func services() []serviceSpec {
	return []serviceSpec{
		{
			name: TargetCatalog, schema: catalog.Schema, migrations: catalog.Migrations(),
			description: "Handoff catalog: products, variants, prices",
			addr:        func(c *Config) string { return c.CatalogAddr },
			build: func(d deps) (service, error) {
				return catalog.New(catalog.Config{Pool: d.Pool, Currency: d.Currency, Logger: d.Logger}), nil
			},
		},
	}
}

// startService connects, migrates and starts one service: its gRPC server, its NATS endpoints,
// its outbox relay and its background work. It returns the gRPC listen address.
func (s *system) startService(ctx context.Context, spec serviceSpec) (string, error) {
	log := s.log.With("service", spec.name)
	pool, err := pgdb.Open(ctx, s.databaseURLFor(spec.name), spec.schema, pgdb.WithAppName("handoff-"+spec.name), pgdb.WithLogger(log))
	if err != nil {
		return "", err
	}
	s.onClose(func(context.Context) error { pool.Close(); return nil })
	if err := pgdb.Migrate(ctx, pool, spec.schema, spec.migrations, log); err != nil {
		return "", err
	}
	svc, err := spec.build(deps{Pool: pool, NC: s.nc, JS: s.js, Logger: s.log, Currency: s.cfg.Currency})
	if err != nil {
		return "", err
	}

	rpc, err := natsrpc.AddService(s.nc, spec.name, Version, spec.description, log)
	if err != nil {
		return "", err
	}
	s.onClose(func(context.Context) error { return rpc.Stop() })
	if err := svc.RegisterNATS(rpc); err != nil {
		return "", fmt.Errorf("register NATS endpoints: %w", err)
	}

	gs := grpcserver.New(log, s.keys)
	svc.RegisterGRPC(gs)
	lis, err := s.listen(spec.addr(&s.cfg))
	if err != nil {
		return "", err
	}
	s.addServer(func(ctx context.Context) error { return gs.Serve(ctx, lis, s.cfg.ShutdownGrace) })

	relay := outbox.NewRelay(pool, s.js, outbox.RelayConfig{Logger: log})
	s.addLoop(spec.name+" outbox relay", relay.Run)
	s.addLoop(spec.name+" background work", svc.Run)
	if s.cfg.LoadDemo {
		s.afterListen = append(s.afterListen, func(ctx context.Context) error {
			if _, err := svc.LoadDemo(ctx, s.chain()); err != nil {
				return fmt.Errorf("%s demo data: %w", spec.name, err)
			}
			return nil
		})
	}
	return lis.Addr().String(), nil
}

func (s *system) startPOSAdapter() error {
	a := posadapter.New(posadapter.Config{AllowedOrigins: s.cfg.AllowedOrigins, Logger: s.log})
	lis, err := s.listen(s.cfg.POSAdapterAddr)
	if err != nil {
		return err
	}
	s.ready.POSAdapterAddr = lis.Addr().String()
	s.addServer(func(ctx context.Context) error { return a.Serve(ctx, lis, s.cfg.ShutdownGrace) })
	return nil
}
