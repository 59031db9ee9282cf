package dbclock_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/dbclock"
	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A process whose clock runs ten minutes fast, or slow, reads the database's time once its
// offset is measured.
func TestAClockOffTheDatabasesReadsTheDatabasesTime(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	for _, skew := range []time.Duration{10 * time.Minute, -10 * time.Minute} {
		c := dbclock.New(func() time.Time { return time.Now().Add(skew) }, testenv.Logger(t))
		if got := time.Until(c.Now()); (got - skew).Abs() > time.Second {
			t.Fatalf("before a measurement the clock is %v ahead, want the process's %v", got, skew)
		}
		offset, err := c.Measure(t.Context(), pool)
		if err != nil {
			t.Fatal(err)
		}
		if (offset + skew).Abs() > time.Second {
			t.Errorf("a process %v off measured an offset of %v, want about %v", skew, offset, -skew)
		}
		var db time.Time
		if err := pool.QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&db); err != nil {
			t.Fatal(err)
		}
		if d := c.Now().Sub(db).Abs(); d > time.Second {
			t.Errorf("a process %v off reads a time %v from the database's", skew, d)
		}
	}
}

// A failed reading keeps the offset known.
func TestAFailedMeasurementKeepsTheOffset(t *testing.T) {
	pool := testenv.Pool(t, "", nil)
	c := dbclock.New(func() time.Time { return time.Now().Add(time.Hour) }, testenv.Logger(t))
	if _, err := c.Measure(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	known := c.Offset()
	pool.Close()
	if _, err := c.Measure(t.Context(), pool); err == nil {
		t.Fatal("a measurement through a closed pool succeeded")
	}
	if c.Offset() != known {
		t.Fatalf("offset %v after a failed measurement, want the known %v", c.Offset(), known)
	}
}

// A wait for a connection is not taken for the round trip: with the pool's one connection held
// for 900 ms by other work, and the database's clock this process's, the offset stays near 0
// (the wait read as the database 450 ms ahead, which deadlines were then judged by).
func TestAWaitForAConnectionIsNotTakenForTheRoundTrip(t *testing.T) {
	pool := testenv.Pool(t, "", nil, pgdb.WithMaxConns(1))
	c := dbclock.New(nil, testenv.Logger(t))
	busy, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(900 * time.Millisecond)
		busy.Release()
	}()
	offset, err := c.Measure(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if offset.Abs() > 100*time.Millisecond {
		t.Fatalf("measured through a busy pool, an offset of %v; want about 0 (one machine)", offset)
	}
}
