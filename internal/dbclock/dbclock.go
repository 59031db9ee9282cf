// Package dbclock tells the database's time without asking the database each time.
//
// Deadlines Handoff stores (a hold's, say) are ended by sweeps that compare them with
// PostgreSQL's now(). A service that judges a deadline in a request (in the future? how far
// ahead?) must read that same clock: a process whose own clock ran ten minutes fast refused
// every hold's deadline as past, and one running slow would take deadlines already swept. A
// Clock keeps the offset of the database's clock from this process's, measured from the
// midpoint of a query's round trip, and adds it to the process's clock.
package dbclock

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// Interval is how often Run measures the offset again: clocks drift by milliseconds a day,
	// and a machine's clock is stepped rarely.
	Interval = time.Minute
	// maxRoundTrip bounds the round trip of a measurement that is kept: the offset is known to
	// within half of it.
	maxRoundTrip = time.Second
	// WarnOffset is the offset past which Run warns that this machine's clock is off.
	WarnOffset = time.Second
)

// Clock is the database's clock as read through this process's.
type Clock struct {
	local  func() time.Time
	offset atomic.Int64 // nanoseconds: the database's time minus local's
}

// New returns a Clock on local (nil: time.Now), with no offset until Measure or Run.
func New(local func() time.Time) *Clock {
	if local == nil {
		local = time.Now
	}
	return &Clock{local: local}
}

// Now is the database's time, as best known.
func (c *Clock) Now() time.Time { return c.local().Add(c.Offset()) }

// Offset is how far the database's clock is ahead of this process's (negative: behind).
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// readings is how many times Measure reads the database's clock: the reading of the shortest
// round trip is kept, the one least held up on its way (a scheduler's pause, say).
const readings = 3

// Measure reads the database's clock on a connection of pool, held meanwhile so that a wait for
// one is not taken for the round trip (a busy pool's 900 ms wait read as the database 450 ms
// ahead), and keeps the offset found, unless every reading's round trip took longer than a
// second (too coarse); it returns the offset kept.
func (c *Clock) Measure(ctx context.Context, pool *pgxpool.Pool) (time.Duration, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return c.Offset(), fmt.Errorf("dbclock: a connection to read the database's clock: %w", err)
	}
	defer conn.Release()
	best, bestTrip := time.Duration(0), time.Duration(-1)
	for range readings {
		before := c.local()
		var db time.Time
		if err := conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
			return c.Offset(), fmt.Errorf("dbclock: read the database's clock: %w", err)
		}
		trip := c.local().Sub(before)
		if trip >= 0 && (bestTrip < 0 || trip < bestTrip) {
			best, bestTrip = db.Sub(before.Add(trip/2)), trip
		}
	}
	if bestTrip < 0 || bestTrip > maxRoundTrip {
		return c.Offset(), fmt.Errorf("dbclock: the readings of the database's clock took %v at best; kept the offset known", bestTrip)
	}
	c.offset.Store(int64(best))
	return best, nil
}

// Run measures the offset every Interval until ctx ends, and warns when it is past WarnOffset
// (once for each change of a second or more). A failed measurement keeps the offset known.
func (c *Clock) Run(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	warned := time.Duration(0)
	for {
		offset, err := c.Measure(ctx, pool)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Debug("measuring the database's clock failed; the offset known is kept", "offset", offset, "err", err)
		case offset.Abs() > WarnOffset && (offset-warned).Abs() >= time.Second:
			warned = offset
			log.Warn("this machine's clock is off the database's: deadlines are judged by the database's; fix the machine's time (NTP)",
				"database_ahead_by", offset.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
