package notify

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Copies of the service may run with different senders for a while: a rolling deploy that adds
// or drops a channel, a pod whose SMTP or webhook secret failed to mount. So that none of them
// loses a notification another could send, each dispatcher stamps the channels it serves in
// notification_channels every heartbeatEvery, and
//   - a dispatcher marks a channel's due rows skipped only when it has no sender for the
//     channel and no copy has stamped it within servedGrace (roundSQL), and
//   - Enqueue writes a row for a channel without a sender here while a copy has stamped it
//     within servedGrace (enqueueServedSQL).
//
// The grace is generous: a copy that serves a channel may be restarting or briefly cut off
// from the database. After the last copy with a sender for a channel has gone, its rows wait
// out the grace and are then skipped, as before.
const (
	heartbeatEvery = 10 * time.Second
	servedGrace    = 10 * time.Minute
)

// heartbeatSQL stamps the channels this dispatcher serves ($1, sorted, so that copies lock the
// rows in one order) and reports whether any channel is served (by this copy or, within the
// grace $2 µs, by another).
const heartbeatSQL = `
WITH beat AS (
	INSERT INTO notification_channels (channel, served_time)
	SELECT c, now() FROM unnest($1::text[]) AS c ORDER BY c
	ON CONFLICT (channel) DO UPDATE SET served_time = excluded.served_time)
SELECT cardinality($1::text[]) > 0 OR EXISTS (
	SELECT 1 FROM notification_channels WHERE served_time > now() - $2::bigint * interval '1 microsecond')`

// heartbeat stamps the channels served here and refreshes servedHint.
func (d *Dispatcher) heartbeat(ctx context.Context) error {
	channels := append([]string{}, d.channels...) // never nil: NULL would make the answer NULL
	slices.Sort(channels)
	var served bool
	if err := d.pool.QueryRow(ctx, heartbeatSQL, channels, servedGrace.Microseconds()).Scan(&served); err != nil {
		return fmt.Errorf("notify: record the channels served: %w", err)
	}
	if served {
		servedHint.note(time.Now().Add(2 * heartbeatEvery))
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

// servedHint tells Enqueue, without a query, whether a copy may serve some channel: it is set
// by this process's dispatchers' heartbeats. Enqueue with no sender here writes nothing unless
// it is recent, so a deployment without notifications pays nothing on each order; when it is
// recent, the statement itself checks, per channel, that a copy serves it. It may lag a
// heartbeat behind a copy that starts serving a channel.
var servedHint hint

// hint is a time until which something is believed, in UnixNano.
type hint struct{ until atomic.Int64 }

// note extends the hint to t (it never shortens it: several dispatchers may note it).
func (h *hint) note(t time.Time) {
	for {
		cur := h.until.Load()
		if t.UnixNano() <= cur || h.until.CompareAndSwap(cur, t.UnixNano()) {
			return
		}
	}
}

func (h *hint) recent() bool { return time.Now().UnixNano() < h.until.Load() }
