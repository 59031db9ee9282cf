// Package catalog owns products, their variants (SKUs), prices, categories and images.
//
// Shoppers read it through the gateway (CatalogService); operators change it through
// CatalogAdminService; other services price cart lines with BatchGetVariants over NATS
// request/reply. Every change is published as a domain event through the outbox in the same
// transaction. Prices are integer minor units in the catalog's one currency.
package catalog

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema is the Postgres schema the catalog owns by default.
const Schema = "catalog"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the catalog's goose migrations, for pgdb.Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Config configures the catalog.
type Config struct {
	// Pool connects to the catalog's schema (search_path set by pgdb.Open).
	Pool *pgxpool.Pool
	// Currency is the ISO 4217 code every price must be in, e.g. "USD".
	Currency string
	// Logger receives the service's logs.
	Logger *slog.Logger
}

// Service is the catalog: its rules, its storage and its APIs.
type Service struct {
	db       *pgxpool.Pool
	currency string
	log      *slog.Logger
}

// New returns the catalog service.
func New(cfg Config) *Service {
	cur := cfg.Currency
	if cur == "" {
		cur = "USD"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{db: cfg.Pool, currency: cur, log: log.With("service", "catalog")}
}

// Run does the catalog's background work: none yet (its events leave through the outbox relay
// the stack runs). It returns when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
