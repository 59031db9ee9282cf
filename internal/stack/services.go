package stack

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"

	"github.com/handoff-dev/handoff/internal/backlog"
	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/pgstats"
	"github.com/handoff-dev/handoff/services/cart"
	"github.com/handoff-dev/handoff/services/catalog"
	"github.com/handoff-dev/handoff/services/fulfilment"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
	"github.com/handoff-dev/handoff/services/inventory"
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
	// OwnData reports whether the schema holds data that is not the demo chain's (a retailer's
	// own stores or products), in which case no part of the demo is loaded anywhere.
	OwnData(ctx context.Context, chain demo.Chain) (bool, error)
}

// clocked is a service that goes by the database's clock (dbclock): its offset is served on
// /metrics.
type clocked interface {
	DBClock() *dbclock.Clock
}

// deps are what a service is built from.
type deps struct {
	Pool   *pgxpool.Pool
	NC     *nats.Conn
	JS     jetstream.JetStream
	Logger *slog.Logger
	Config *Config
}

// serviceSpec says how to start one service.
type serviceSpec struct {
	name        string
	schema      string
	migrations  fs.FS
	poolOptions []pgdb.Option // the service's own
	// backlog is the service's queues beside its outbox, for /metrics (package backlog).
	backlog     func() []backlog.Query
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
				return catalog.New(catalog.Config{Pool: d.Pool, Currency: d.Config.Currency, Logger: d.Logger}), nil
			},
		},
		{
			name: TargetInventory, schema: inventory.Schema, migrations: inventory.Migrations(), backlog: inventory.Backlog,
			description: "Handoff inventory: stores, stock, holds, locator",
			addr:        func(c *Config) string { return c.InventoryAddr },
			build: func(d deps) (service, error) {
				return inventory.New(inventory.Config{Pool: d.Pool, NATS: d.NC, Logger: d.Logger}), nil
			},
		},
		{
			name: TargetFulfilment, schema: fulfilment.Schema, migrations: fulfilment.Migrations(), backlog: fulfilment.Backlog,
			description: "Handoff fulfilment: orders and their life",
			addr:        func(c *Config) string { return c.FulfilmentAddr },
			build: func(d deps) (service, error) {
				senders, err := d.Config.Notify.Senders()
				if err != nil {
					return nil, fmt.Errorf("notification senders: %w", err)
				}
				return fulfilment.New(fulfilment.Config{
					Pool: d.Pool, NATS: d.NC, JS: d.JS, PickupCodeSecret: d.Config.pickupSecret, Logger: d.Logger,
					Notify:                notify.DispatcherConfig{Senders: senders, Logger: d.Logger},
					PersonalDataRetention: d.Config.PersonalDataRetention,
				})
			},
		},
		{
			name: TargetCart, schema: cart.Schema, migrations: cart.Migrations(), poolOptions: cart.PoolOptions(),
			description: "Handoff cart: carts and checkout",
			addr:        func(c *Config) string { return c.CartAddr },
			build: func(d deps) (service, error) {
				return cart.New(cart.Config{Pool: d.Pool, NATS: d.NC, JS: d.JS, Currency: d.Config.Currency, Logger: d.Logger}), nil
			},
		},
	}
}

// poolSize is the pool cap option of every service's pool: DBMaxConns where set, else the URL's
// pool_max_conns or DefaultDBMaxConns.
func (c *Config) poolSize() pgdb.Option {
	if c.DBMaxConns > 0 {
		return pgdb.WithMaxConns(int32(c.DBMaxConns))
	}
	return pgdb.WithDefaultMaxConns(DefaultDBMaxConns)
}

// startService connects, migrates and starts one service: its gRPC server, its NATS endpoints,
// its outbox relay and its background work. It returns the gRPC listen address.
func (s *system) startService(ctx context.Context, spec serviceSpec) (string, error) {
	log := s.log.With("service", spec.name)
	pool, err := pgdb.Open(ctx, s.databaseURLFor(spec.name), spec.schema, slices.Concat(spec.poolOptions, []pgdb.Option{
		pgdb.WithAppName("handoff-" + spec.name), pgdb.WithLogger(log), s.cfg.poolSize()})...)
	if err != nil {
		return "", err
	}
	s.onClose(func(context.Context) error { pool.Close(); return nil })
	if err := pgdb.Migrate(ctx, pool, spec.schema, spec.migrations, log); err != nil {
		return "", err
	}
	queries := []backlog.Query{outbox.Backlog()}
	if spec.backlog != nil {
		queries = append(queries, spec.backlog()...)
	}
	if err := s.reportBacklog(backlog.New(pool, spec.schema, queries, log)); err != nil {
		return "", err
	}
	if err := s.reportBacklog(pgdb.NewPoolCollector(pool, spec.schema)); err != nil {
		return "", err
	}
	svc, err := spec.build(deps{Pool: pool, NC: s.nc, JS: s.js, Logger: s.log, Config: &s.cfg})
	if err != nil {
		return "", err
	}
	if c, ok := svc.(clocked); ok {
		if err := s.reportBacklog(c.DBClock().Collector(spec.schema)); err != nil {
			return "", err
		}
	}

	rpc, err := natsrpc.AddService(s.nc, spec.name, Version, spec.description, log)
	if err != nil {
		return "", err
	}
	s.serveNATS(rpc)
	if err := svc.RegisterNATS(rpc); err != nil {
		return "", fmt.Errorf("register NATS endpoints: %w", err)
	}

	gs := grpcserver.New(log, s.keys)
	svc.RegisterGRPC(gs)
	s.readiness.add(gs)
	s.addLoop(spec.name+" database check", s.watchDatabase("PostgreSQL of "+spec.name, pool))
	if s.inproc != nil {
		ch := grpcserver.InProcess(log, s.keys)
		svc.RegisterGRPC(ch)
		s.inproc[spec.name] = ch
	}
	lis, err := s.listen(spec.addr(&s.cfg), "HANDOFF_"+strings.ToUpper(spec.name)+"_ADDR")
	if err != nil {
		return "", err
	}
	s.addServer(func(ctx context.Context) error { return gs.Serve(ctx, lis, s.cfg.ShutdownGrace) })

	relay := outbox.NewRelay(pool, s.js, outbox.RelayConfig{Logger: log})
	s.addLoop(spec.name+" outbox relay", relay.Run)
	s.addLoop(spec.name+" planner statistics", keepStatistics(pool, spec.schema, log))
	s.addLoop(spec.name+" background work", svc.Run)
	if s.cfg.LoadDemo {
		if len(s.demoParts) == 0 {
			s.afterListen = append(s.afterListen, s.loadDemo)
			s.readiness.setStarting(true) // until the chain is loaded
		}
		s.demoParts = append(s.demoParts, demoPart{name: spec.name, svc: svc, log: log})
	}
	return lis.Addr().String(), nil
}

// demoPart is a service of this process that loads its part of the demo chain.
type demoPart struct {
	name string
	svc  service
	log  *slog.Logger
}

// loadDemo loads the demo chain into the services' empty schemas, unless one of them holds
// data of its own (its demo part loaded, the chain's, is no reason not to: a start cut short
// completes it): a retailer's own catalog must not get the demo's stores, nor its stores the
// demo's products.
func (s *system) loadDemo(ctx context.Context) error {
	chain := s.chain()
	for _, p := range s.demoParts {
		own, err := p.svc.OwnData(ctx, chain)
		if err != nil {
			return fmt.Errorf("%s demo data: %w", p.name, err)
		}
		if own {
			p.log.Warn("the database holds data that is not the demo chain's: the demo is not loaded")
			return nil
		}
	}
	for _, p := range s.demoParts {
		loaded, err := p.svc.LoadDemo(ctx, chain)
		if err != nil {
			return fmt.Errorf("%s demo data: %w", p.name, err)
		}
		if !loaded && p.name == TargetInventory && s.cfg.DemoTimeZone != "" {
			p.log.Warn("the demo chain is loaded into an empty database only: its stores keep the time zone they have", "demo_time_zone", s.cfg.DemoTimeZone)
		}
	}
	return nil
}

// serveNATS has a service's NATS endpoints drained on shutdown, after the servers and before
// the background loops stop (see drainNATS); and on close, for a start that failed before
// serving (at once then when already drained).
func (s *system) serveNATS(rpc *natsrpc.Service) {
	var drained atomic.Bool
	s.natsDrains = append(s.natsDrains, func(ctx context.Context) error {
		defer drained.Store(true)
		return rpc.Shutdown(ctx)
	})
	s.onClose(func(ctx context.Context) error {
		if drained.Load() {
			return nil // stopped by drainNATS; a drain that ran out of grace is not waited for twice
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGrace)
		defer cancel()
		return rpc.Shutdown(ctx)
	})
}

// drainNATS stops the services' NATS endpoints taking requests and waits, until ctx's deadline
// (see serve), for those in flight, callers before callees (the reverse of start order: the cart calls
// fulfilment, which calls inventory): a request in flight still reaches the endpoints it calls
// next, in this process too. What those requests commit (a CONFIRMED order's ticket event, its
// hold extension) is then relayed and worked by the loops, which stop after this, not at the
// next start.
func (s *system) drainNATS(ctx context.Context) {
	for i := len(s.natsDrains) - 1; i >= 0; i-- {
		if err := s.natsDrains[i](ctx); err != nil {
			s.log.Warn("NATS endpoints did not drain in the grace", "err", err)
		}
	}
}

// startPOSAdapter starts the stores' door: its schema, its feed and webhooks (Run also relays
// its outbox), and its edge server; it reaches fulfilment and inventory over gRPC.
func (s *system) startPOSAdapter(ctx context.Context) error {
	log := s.log.With("component", "pos-adapter")
	pool, err := pgdb.Open(ctx, s.databaseURLFor(TargetPOSAdapter), posadapter.Schema, slices.Concat(posadapter.PoolOptions(), []pgdb.Option{
		pgdb.WithAppName("handoff-pos-adapter"), pgdb.WithLogger(log), s.cfg.poolSize()})...)
	if err != nil {
		return err
	}
	s.onClose(func(context.Context) error { pool.Close(); return nil })
	if err := pgdb.Migrate(ctx, pool, posadapter.Schema, posadapter.Migrations(), log); err != nil {
		return err
	}
	if err := s.reportBacklog(backlog.New(pool, posadapter.Schema, append([]backlog.Query{outbox.Backlog()}, posadapter.Backlog()...), log)); err != nil {
		return err
	}
	if err := s.reportBacklog(pgdb.NewPoolCollector(pool, posadapter.Schema)); err != nil {
		return err
	}
	ful, err := s.dial(TargetFulfilment, s.cfg.FulfilmentAddr)
	if err != nil {
		return err
	}
	inv, err := s.dial(TargetInventory, s.cfg.InventoryAddr)
	if err != nil {
		return err
	}
	a, err := posadapter.New(posadapter.Config{
		Pool: pool, NC: s.nc, JS: s.js, Keys: s.keys, Fulfilment: ful, Inventory: inv,
		AllowedOrigins: s.cfg.AllowedOrigins, TrustedProxies: s.cfg.TrustedProxies, Logger: s.log,
		WebhookAllowNetworks: s.cfg.WebhookAllowNetworks,
	})
	if err != nil {
		return err
	}
	lis, err := s.listen(s.cfg.POSAdapterAddr, "HANDOFF_POS_ADDR")
	if err != nil {
		return err
	}
	s.ready.POSAdapterAddr = lis.Addr().String()
	s.readiness.add(a)
	s.addLoop("pos-adapter database check", s.watchDatabase("PostgreSQL of the pos-adapter", pool))
	s.addServer(func(ctx context.Context) error { return a.Serve(ctx, lis, s.cfg.ShutdownGrace) })
	s.addLoop("pos-adapter", a.Run)
	s.addLoop("pos-adapter planner statistics", keepStatistics(pool, posadapter.Schema, log))
	return nil
}

// keepStatistics keeps the planner statistics of a service's tables current (see pgstats).
func keepStatistics(pool *pgxpool.Pool, schema string, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		return pgstats.Run(ctx, pool, schema, pgstats.Config{Logger: log})
	}
}

// reportBacklog has c read at every scrape of /metrics while the system runs (nothing is read
// where no metrics are served).
func (s *system) reportBacklog(c prometheus.Collector) error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	unregister, err := backlog.Register(prometheus.DefaultRegisterer, c)
	if err != nil {
		return err
	}
	s.onClose(func(context.Context) error { unregister(); return nil })
	return nil
}
