package pgdb

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector reports a pool's state at each scrape, labelled with its schema: its
// connections in use against its cap, and the acquires that found none free. A database grown
// slow, or a statement holding connections, shows first as requests queueing for the pool and
// failing at their deadlines; the edges' latency and failures say something is slow, these say
// it is the pool, and whose.
type PoolCollector struct {
	pool  *pgxpool.Pool
	descs poolDescs
}

type poolDescs struct {
	max, acquired, idle, acquires, waits, waitSeconds, canceled *prometheus.Desc
}

// NewPoolCollector returns a collector of pool, the pool of schema.
func NewPoolCollector(pool *pgxpool.Pool, schema string) *PoolCollector {
	labels := prometheus.Labels{"schema": schema}
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, labels) }
	return &PoolCollector{pool: pool, descs: poolDescs{
		max:      desc("handoff_db_pool_max_connections", "The pool's cap on connections to Postgres (per copy of the service)."),
		acquired: desc("handoff_db_pool_acquired_connections", "Connections in use now; at the cap, further requests wait for one."),
		idle:     desc("handoff_db_pool_idle_connections", "Connections open and free now."),
		acquires: desc("handoff_db_pool_acquires_total", "Connections taken from the pool."),
		waits: desc("handoff_db_pool_acquire_waits_total",
			"Connections taken that had to wait, none being free: for one to be given back, or opened."),
		waitSeconds: desc("handoff_db_pool_acquire_wait_seconds_total",
			"Time spent waiting for a connection by the acquires that waited; its rate is how many requests wait on average."),
		canceled: desc("handoff_db_pool_canceled_acquires_total",
			"Waits for a connection given up, their request's deadline passed or canceled first."),
	}}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.descs
	for _, one := range []*prometheus.Desc{d.max, d.acquired, d.idle, d.acquires, d.waits, d.waitSeconds, d.canceled} {
		ch <- one
	}
}

// Collect implements prometheus.Collector: the pool's own counts, no statement run.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	d := c.descs
	gauge := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
	}
	counter := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	gauge(d.max, float64(s.MaxConns()))
	gauge(d.acquired, float64(s.AcquiredConns()))
	gauge(d.idle, float64(s.IdleConns()))
	counter(d.acquires, float64(s.AcquireCount()))
	counter(d.waits, float64(s.EmptyAcquireCount()))
	counter(d.waitSeconds, s.EmptyAcquireWaitTime().Seconds())
	counter(d.canceled, float64(s.CanceledAcquireCount()))
}
