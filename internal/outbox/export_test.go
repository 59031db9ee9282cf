package outbox

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetAfterPublish installs a hook that runs after a round's events are
// acknowledged and before their rows are deleted, to simulate a crash there. conn is in the
// round's transaction.
func SetAfterPublish(r *Relay, fn func(ctx context.Context, conn *pgx.Conn) error) {
	r.afterPublish = fn
}

// ChannelSQL is the expression that names the relay's NOTIFY channel.
const ChannelSQL = channelSQL

// SetOnRound installs a hook called after every round of r with the number of events it
// relayed.
func SetOnRound(r *Relay, fn func(n int)) { r.onRound = fn }
