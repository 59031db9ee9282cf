package stack

import (
	"context"
	"fmt"

	posadapter "github.com/handoff-dev/handoff/pos-adapter"

	"github.com/handoff-dev/handoff/internal/grpcserver"
	"github.com/handoff-dev/handoff/internal/natsrpc"
	"github.com/handoff-dev/handoff/internal/outbox"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/services/catalog"
)

// Version is reported by NATS micro discovery.
const Version = "0.1.0"

func (s *system) startCatalog(ctx context.Context) error {
	log := s.log.With("service", "catalog")
	pool, err := pgdb.Open(ctx, s.databaseURLFor(TargetCatalog), catalog.Schema, pgdb.WithAppName("handoff-catalog"), pgdb.WithLogger(log))
	if err != nil {
		return err
	}
	s.onClose(func(context.Context) error { pool.Close(); return nil })
	if err := pgdb.Migrate(ctx, pool, catalog.Schema, catalog.Migrations(), log); err != nil {
		return err
	}
	svc := catalog.New(catalog.Config{Pool: pool, Currency: s.cfg.Currency, Logger: s.log})

	rpc, err := natsrpc.AddService(s.nc, "catalog", Version, "Handoff catalog: prices and variants", log)
	if err != nil {
		return err
	}
	s.onClose(func(context.Context) error { return rpc.Stop() })
	if err := svc.RegisterNATS(rpc); err != nil {
		return fmt.Errorf("register NATS endpoints: %w", err)
	}

	gs := grpcserver.New(log)
	svc.RegisterGRPC(gs)
	lis, err := s.listen(s.cfg.CatalogAddr)
	if err != nil {
		return err
	}
	s.ready.CatalogAddr = lis.Addr().String()
	s.addServer(func(ctx context.Context) error { return gs.Serve(ctx, lis, s.cfg.ShutdownGrace) })

	relay := outbox.NewRelay(pool, s.js, outbox.RelayConfig{Logger: log})
	s.addLoop("catalog outbox relay", relay.Run)
	if s.cfg.LoadDemo {
		s.afterListen = append(s.afterListen, func(ctx context.Context) error {
			_, err := svc.LoadDemo(ctx, s.chain())
			return err
		})
	}
	return nil
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
