package pgdb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/internal/pgdb"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// A service whose pool is exhausted (a slow database, a statement holding its connections, a
// cap too low for the load) makes every request wait for a connection, then fail at its
// deadline: the edges' latency and failures show that something is slow, but nothing said it
// is the pool. The pool's collector shows the connections in use against the cap, the acquires
// that had to wait, how long they waited and the ones given up, by schema.
func TestAnExhaustedPoolShowsOnMetrics(t *testing.T) {
	schema := testenv.UniqueSchema(t, "poolstats")
	pool, err := pgdb.Open(t.Context(), testenv.DatabaseURL(t), schema, pgdb.WithMaxConns(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(pgdb.NewPoolCollector(pool, schema)); err != nil {
		t.Fatal(err)
	}

	held, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { // given back on a failure too: the pool's Close waits for it
		if held != nil {
			held.Release()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if c, err := pool.Acquire(ctx); err == nil {
		c.Release()
		t.Fatal("a second connection from a pool of one")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for the pool's one connection: %v", err)
	}

	// An acquire that waits and gets the connection once it is given back. Whether it begins
	// waiting before the connection is given back is up to the scheduler: tried until it did.
	before := pool.Stat().EmptyAcquireCount() // opening a connection counts as a wait too
	for try := 1; pool.Stat().EmptyAcquireCount() == before; try++ {
		if try > 1 {
			if held, err = pool.Acquire(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		waited := make(chan error, 1)
		go func() {
			c, err := pool.Acquire(t.Context())
			if err == nil {
				c.Release()
			}
			waited <- err
		}()
		time.Sleep(time.Duration(try) * 10 * time.Millisecond)
		held.Release()
		held = nil
		if err := <-waited; err != nil {
			t.Fatalf("waiting for the connection given back: %v", err)
		}
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "schema" || m.GetLabel()[0].GetValue() != schema {
				t.Errorf("%s: labels %v, want schema=%s", f.GetName(), m.GetLabel(), schema)
			}
			got[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"handoff_db_pool_max_connections":         1,
		"handoff_db_pool_acquired_connections":    0,
		"handoff_db_pool_canceled_acquires_total": 1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (served: %t), want %v; served %v", name, v, ok, want, got)
		}
	}
	if v := got["handoff_db_pool_acquire_waits_total"]; v < 1 {
		t.Errorf("an acquire waited for the connection given back, yet handoff_db_pool_acquire_waits_total = %v", v)
	}
	if v := got["handoff_db_pool_acquire_wait_seconds_total"]; v <= 0 {
		t.Errorf("an acquire waited for the connection given back, yet handoff_db_pool_acquire_wait_seconds_total = %v", v)
	}
}
