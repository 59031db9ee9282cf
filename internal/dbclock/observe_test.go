package dbclock_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// base is the process's clock in these tests: it stands still, so offsets are exact.
var base = time.Date(2030, 3, 1, 12, 0, 0, 0, time.UTC)

func standing() time.Time { return base }

// A time observed off the database's clock sets the offset (the last observed counts), and is
// given back in UTC.
func TestObserveKeepsTheOffsetOfTheTimeSeen(t *testing.T) {
	c := dbclock.New(standing, testenv.Logger(t))
	if c.Known() || c.Now() != base {
		t.Fatalf("a new clock: known %v, now %v; want unknown and the process's %v", c.Known(), c.Now(), base)
	}
	paris := time.FixedZone("CET", 3600)
	db := base.Add(5 * time.Minute).In(paris)
	got := c.Observe(db)
	if !got.Equal(db) || got.Location() != time.UTC {
		t.Errorf("Observe(%v) = %v; want the same time in UTC", db, got)
	}
	if !c.Known() || c.Offset() != 5*time.Minute || !c.Now().Equal(base.Add(5*time.Minute)) {
		t.Errorf("after observing the database 5m ahead: known %v, offset %v, now %v", c.Known(), c.Offset(), c.Now())
	}
	c.Observe(base.Add(-3 * time.Second))
	if c.Offset() != -3*time.Second {
		t.Errorf("after observing the database 3s behind, offset %v; want the last observed", c.Offset())
	}
}

// records keeps the log records a Clock writes.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// reported is what was logged: each record's level and the offset it gives.
func (r *records) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.got {
		if rec.Level < slog.LevelInfo {
			continue
		}
		s := rec.Level.String()
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "database_ahead_by" {
				s += " " + a.Value.String()
			}
			return true
		})
		out = append(out, s)
	}
	return out
}

// A clock off the database's is reported once for each change of a second or more: a warning
// past WarnOffset, a note when it is back within it; readings within WarnOffset, or within a
// second of the offset reported, report nothing.
func TestAnOffsetIsReportedOncePerChange(t *testing.T) {
	var log records
	c := dbclock.New(standing, slog.New(&log))
	for _, off := range []time.Duration{
		500 * time.Millisecond, 1500 * time.Millisecond, // within WarnOffset: nothing
		2500 * time.Millisecond,                                                   // past it: a warning
		2600 * time.Millisecond, 2100 * time.Millisecond, 3400 * time.Millisecond, // within a second of it: nothing
		3600 * time.Millisecond,                                   // a second more: a warning
		-time.Hour, -time.Hour + 500*time.Millisecond, -time.Hour, // behind: one warning
		0, 200 * time.Millisecond, // back within WarnOffset: a note
		-time.Hour, // off again: a warning
	} {
		c.Observe(base.Add(off))
	}
	want := []string{"WARN 2.5s", "WARN 3.6s", "WARN -1h0m0s", "INFO 0s", "WARN -1h0m0s"}
	if got := log.reported(); !slices.Equal(got, want) {
		t.Errorf("reported %q; want %q", got, want)
	}
}

// Concurrent readings of one wrong clock (every transaction observes one) warn once.
func TestConcurrentReadingsOfAWrongClockWarnOnce(t *testing.T) {
	var log records
	c := dbclock.New(standing, slog.New(&log))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				c.Observe(base.Add(-time.Hour + time.Duration(g*100+i)*time.Millisecond/10))
			}
		})
	}
	wg.Wait()
	if got := log.reported(); len(got) != 1 {
		t.Errorf("reported %d times (first %q); want one warning", len(got), got[:min(3, len(got))])
	}
}

// A measured offset is reported as an observed one is, and not again when measured again.
func TestAMeasuredOffsetIsReportedOnce(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	var log records
	c := dbclock.New(func() time.Time { return time.Now().Add(10 * time.Minute) }, slog.New(&log))
	for range 2 {
		if _, err := c.Measure(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
	}
	got := log.reported()
	if len(got) != 1 || got[0][:5] != "WARN " {
		t.Errorf("reported %q after two measurements 10m off; want one warning", got)
	}
}

// row is a query's answer: a time, or an error.
type row struct {
	at  time.Time
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	*dest[0].(*time.Time) = r.at
	return nil
}

// database answers every query with its row, counting them.
type database struct {
	answer  row
	queries int
}

func (d *database) QueryRow(context.Context, string, ...any) pgx.Row {
	d.queries++
	return d.answer
}

// Before any offset is known, NowOrRead reads the database's time (and so learns the offset);
// after, it reads nothing.
func TestNowOrReadReadsTheDatabaseOnlyBeforeAnyReading(t *testing.T) {
	c := dbclock.New(standing, testenv.Logger(t))
	db := &database{answer: row{at: base.Add(time.Hour)}}
	if got := c.NowOrRead(t.Context(), db); !got.Equal(base.Add(time.Hour)) || db.queries != 1 {
		t.Fatalf("before any reading: %v after %d queries; want the database's %v after one", got, db.queries, base.Add(time.Hour))
	}
	for range 3 {
		if got := c.NowOrRead(t.Context(), db); !got.Equal(base.Add(time.Hour)) {
			t.Fatalf("after a reading: %v; want the database's %v", got, base.Add(time.Hour))
		}
	}
	if db.queries != 1 {
		t.Errorf("%d queries; want the one before the offset was known", db.queries)
	}
}

// Before any offset is known, a failed read gives the process's own time, and the next call
// tries again.
func TestNowOrReadFallsBackToTheProcesssClock(t *testing.T) {
	c := dbclock.New(standing, testenv.Logger(t))
	db := &database{answer: row{err: errors.New("connection refused")}}
	for i := range 2 {
		if got := c.NowOrRead(t.Context(), db); !got.Equal(base) {
			t.Fatalf("with the database out of reach: %v; want the process's %v", got, base)
		}
		if db.queries != i+1 || c.Known() {
			t.Fatalf("after %d calls: %d queries, known %v; want a query each and nothing known", i+1, db.queries, c.Known())
		}
	}
}

// Read in a transaction gives the database's time, through a process clock an hour fast.
func TestReadGivesTheDatabasesTime(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	c := dbclock.New(func() time.Time { return time.Now().Add(time.Hour) }, testenv.Logger(t))
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		got, err := c.Read(t.Context(), tx)
		if err != nil {
			return err
		}
		var db time.Time
		if err := tx.QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&db); err != nil {
			return err
		}
		if d := db.Sub(got); d < 0 || d > time.Minute {
			t.Errorf("Read gave %v, %v before the database's clock after it; want a time just before", got, d)
		}
		if d := c.Now().Sub(db).Abs(); d > time.Minute {
			t.Errorf("after Read the clock is %v off the database's; want the offset learnt", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
