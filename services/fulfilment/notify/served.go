package notify

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Copies of the service may run with different senders for a while: a rolling deploy that adds
// or drops a channel, a pod whose SMTP or webhook secret failed to mount. So that none of them
// loses a notification another could send, each dispatcher stamps the channels it serves in
// notification_channels every heartbeatEvery, and
//   - a dispatcher marks a channel's due rows skipped only when it has no sender for the
//     channel and no copy has stamped it within servedGrace (roundSQL), and
//   - Enqueue writes a row for a channel without a sender here while a copy has stamped it
//     within servedGrace (enqueueServedSQL), asking the table in the enqueueing statement.
//     A Writer leaves out the channels without a sender here that its own look at the table
//     (Writer.WatchServed, every heartbeatEvery) found served nowhere, and the statement
//     altogether when none is left: a deployment without notifications pays nothing for them
//     on each order. Until its first look, or should a look fail, it writes as though each
//     were. So a channel is written by such a copy from at most heartbeatEvery after another
//     copy first stamps it: the moment the channel is turned on, as this copy sees it. A
//     channel served all along (a copy restarting, a stamp refreshed) never goes unwritten.
//
// The grace is generous: a copy that serves a channel may be restarting or briefly cut off
// from the database. After the last copy with a sender for a channel has gone, its rows wait
// out the grace and are then skipped, as before.
const (
	heartbeatEvery = 10 * time.Second
	servedGrace    = 10 * time.Minute
)

// heartbeatSQL stamps the channels this dispatcher serves ($1, sorted, so that copies lock the
// rows in one order).
const heartbeatSQL = `
INSERT INTO notification_channels (channel, served_time)
SELECT c, now() FROM unnest($1::text[]) AS c ORDER BY c
ON CONFLICT (channel) DO UPDATE SET served_time = excluded.served_time`

// heartbeat stamps the channels served here.
func (d *Dispatcher) heartbeat(ctx context.Context) error {
	if len(d.channels) == 0 {
		return nil // nothing to stamp: this copy leaves every channel to others
	}
	channels := slices.Sorted(slices.Values(d.channels))
	if _, err := d.pool.Exec(ctx, heartbeatSQL, channels); err != nil {
		return fmt.Errorf("notify: record the channels served: %w", err)
	}
	return nil
}

// runHeartbeat repeats heartbeat every heartbeatEvery until ctx ends (the first one is in
// setup). Failures are logged; the grace outlasts many of them.
func (d *Dispatcher) runHeartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.heartbeat(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("notify: heartbeat failed; trying again", "err", err, "retry_in", heartbeatEvery)
		}
	}
}

// servedLookEvery is how often a Writer looks whether any channel is served (a variable for
// tests).
var servedLookEvery = heartbeatEvery

// servedSQL lists the channels some copy stamped within the grace ($1 µs).
const servedSQL = `SELECT coalesce(array_agg(channel), '{}') FROM notification_channels
	WHERE served_time > now() - $1::bigint * interval '1 microsecond'`

// querier is what WatchServed reads the table with (a pool).
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// WatchServed looks at notification_channels now and every heartbeatEvery until ctx ends,
// telling w which channels some copy serves (see the top of this file).
func (w *Writer) WatchServed(ctx context.Context, db querier) {
	t := time.NewTicker(servedLookEvery)
	defer t.Stop()
	for {
		var channels []string
		if err := db.QueryRow(ctx, servedSQL, servedGrace.Microseconds()).Scan(&channels); err != nil {
			w.served.Store(nil) // not known: write as though each were, never lose one
		} else {
			served := make(map[string]bool, len(channels))
			for _, ch := range channels {
				served[ch] = true
			}
			w.served.Store(&served)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
