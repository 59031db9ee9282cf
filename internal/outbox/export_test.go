package outbox

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SetAfterPublish installs a hook that runs after a round's events are
// acknowledged and before their rows are deleted, to simulate a crash there.
func SetAfterPublish(r *Relay, fn func(ctx context.Context, tx pgx.Tx) error) { r.afterPublish = fn }

// ChannelSQL is the expression that names the relay's NOTIFY channel.
const ChannelSQL = channelSQL
