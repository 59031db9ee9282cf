package inbox

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// Prune runs one pruning round of the consumer cfg describes.
func Prune(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, cfg Config) (int64, error) {
	c, err := newConsumer(pool, cfg, func(context.Context, pgx.Tx, jetstream.Msg) error { return nil })
	if err != nil {
		return 0, err
	}
	return c.prune(ctx, js)
}

// ConsumeOnce runs one consume session of the consumer cfg describes on cons, as Run does, and
// returns its end: the last error the session saw.
func ConsumeOnce(ctx context.Context, pool *pgxpool.Pool, cfg Config, cons jetstream.Consumer) error {
	c, err := newConsumer(pool, cfg, func(context.Context, pgx.Tx, jetstream.Msg) error { return nil })
	if err != nil {
		return err
	}
	return c.consume(ctx, cons)
}

// PruneSQL is a prune batch's statement.
const PruneSQL = pruneSQL
