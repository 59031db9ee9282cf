// Package dbclock tells the database's time without asking the database each time.
//
// Deadlines Handoff stores (a hold's, say) are ended by sweeps that compare them with
// PostgreSQL's now(). A service that judges a deadline in a request (in the future? how far
// ahead?) must read that same clock: a process whose own clock ran ten minutes fast refused
// every hold's deadline as past, and one running slow would take deadlines already swept. A
// Clock keeps the offset of the database's clock from this process's and adds it to the
// process's clock. The offset is learnt two ways, the last one learnt counting:
//
//   - Measure (and Run, every Interval) reads the database's clock on a connection of its own
//     and keeps the reading of the shortest of three round trips, from its midpoint.
//   - Observe takes a time the caller read off the database's clock in its own statements (a
//     transaction's statement_timestamp(), which is also the time that transaction should
//     decide by), at no cost of a round trip. Such a reading is late by the time from the
//     statement's start to its answer, so it sets the database's clock behind by up to one
//     round trip.
//
// Either way an offset past WarnOffset is logged, once for each change of it (see learn).
package dbclock

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// Interval is how often Run measures the offset again: clocks drift by milliseconds a day,
	// and a machine's clock is stepped rarely.
	Interval = time.Minute
	// maxRoundTrip bounds the round trip of a measurement that is kept: the offset is known to
	// within half of it.
	maxRoundTrip = time.Second
	// WarnOffset is the offset past which a Clock warns that this machine's clock is off. NTP
	// keeps clocks within milliseconds, so it is no normal gap; it is two seconds rather than
	// one because an observed reading (Observe) is late by up to a round trip, which a busy
	// moment can stretch past a second, and a busy moment is not a wrong clock.
	WarnOffset = 2 * time.Second
	// warnStep is how much the offset must change before it is reported again: a clock that
	// is off is reported once, not at every reading.
	warnStep = time.Second
)

// Clock is the database's clock as read through this process's. Its methods are safe for
// concurrent use.
type Clock struct {
	local  func() time.Time
	log    *slog.Logger
	offset atomic.Int64 // nanoseconds: the database's time minus local's
	known  atomic.Bool  // an offset has been measured or observed
	// reported is the offset last reported (warned of past WarnOffset), 0 while within it, in
	// nanoseconds.
	reported atomic.Int64
}

// New returns a Clock on local (nil: time.Now) that logs to log (nil: slog.Default()), with no
// offset until Measure, Run or Observe. Its times are local's, moved by the offset, so they are
// at local's precision when offsets are observed at a precision no finer.
func New(local func() time.Time, log *slog.Logger) *Clock {
	if local == nil {
		local = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Clock{local: local, log: log}
}

// Now is the database's time, as best known: before any offset is known, the process's own.
func (c *Clock) Now() time.Time { return c.local().Add(c.Offset()) }

// Offset is how far the database's clock is ahead of this process's (negative: behind).
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Known reports whether an offset has been measured or observed.
func (c *Clock) Known() bool { return c.known.Load() }

// Observe takes db, a time just read off the database's clock (statement_timestamp() in a
// transaction, say), as the database's time now: the offset becomes db less the process's
// clock. It returns db in UTC, for the caller to decide and write by.
func (c *Clock) Observe(db time.Time) time.Time {
	c.learn(db.Sub(c.local()))
	return db.UTC()
}

// Querier runs a query: a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Read reads the database's time through q, the start of its statement (in a transaction,
// a time the transaction may decide by), and observes it (Observe).
func (c *Clock) Read(ctx context.Context, q Querier) (time.Time, error) {
	var db time.Time
	if err := q.QueryRow(ctx, `SELECT statement_timestamp()`).Scan(&db); err != nil {
		return time.Time{}, fmt.Errorf("dbclock: read the database's clock: %w", err)
	}
	return c.Observe(db), nil
}

// NowOrRead is Now once an offset is known, without a round trip. Before, it reads the
// database's time through q (Read), so that what is done just after a start is not by a clock
// that may be wrong; should that read fail, it is the process's own clock.
func (c *Clock) NowOrRead(ctx context.Context, q Querier) time.Time {
	if !c.Known() {
		if now, err := c.Read(ctx, q); err == nil {
			return now
		}
	}
	return c.Now()
}

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
	c.learn(best)
	return best, nil
}

// Run measures the offset every Interval until ctx ends. A failed measurement keeps the offset
// known.
func (c *Clock) Run(ctx context.Context, pool *pgxpool.Pool) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		offset, err := c.Measure(ctx, pool)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Debug("measuring the database's clock failed; the offset known is kept", "offset", offset, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// learn keeps offset, and reports it when it differs from the offset last reported by warnStep
// or more: a warning past WarnOffset, a note when it is back within it after a warning. So a
// clock that is off is reported once, not at every reading (Observe reads at every
// transaction), and again when it moves by a second or more; a reading noisy by less does not
// report the same gap again.
func (c *Clock) learn(offset time.Duration) {
	c.offset.Store(int64(offset))
	c.known.Store(true)
	last := c.reported.Load()
	if (offset - time.Duration(last)).Abs() < warnStep {
		return
	}
	switch {
	case offset.Abs() > WarnOffset:
		if c.reported.CompareAndSwap(last, int64(offset)) {
			c.log.Warn("this machine's clock is off the database's: Handoff goes by the database's (deadlines, timers and the times it writes), but the logs and other services read this one; fix the machine's time (NTP)",
				"database_ahead_by", offset.Round(time.Millisecond), "warn_past", WarnOffset)
		}
	case last != 0:
		if c.reported.CompareAndSwap(last, 0) {
			c.log.Info("this machine's clock is no longer off the database's",
				"database_ahead_by", offset.Round(time.Millisecond), "warn_past", WarnOffset)
		}
	}
}
