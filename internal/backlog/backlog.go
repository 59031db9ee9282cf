// Package backlog reports, each time Prometheus scrapes, the work a service has taken on and not
// yet done, and how late the oldest of it is: outbox events not yet relayed, order timers and
// inventory effects past due, holds past their deadline, events a durable consumer has not yet
// handled.
//
// Why gauges read at scrape time: the counters and histograms the loops keep say what they did,
// and a loop that is stuck (a copy frozen holding the relay's lock, a sweeper whose queries
// hang) does nothing and so reports nothing. Reading the queue itself shows the order that
// waits, whoever should have moved it. DESIGN.md's invariants 2 and 5 (every hold ends by its
// deadline plus one sweep; nothing stays stuck) become alerts an operator can act on; see
// deploy/prometheus/alerts.yml.
package backlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Gauge names one figure of a Query's row.
type Gauge struct {
	// Name is the metric's full name, e.g. "handoff_outbox_backlog_events".
	Name string
	// Help says what it measures and what is normal.
	Help string
}

// Query is one statement, run in the service's schema at every scrape, whose one row holds
// one float8 per gauge, in order. It must be cheap on a large table (an index's first entry, a
// count with a LIMIT): it runs every scrape, in every copy of the service.
type Query struct {
	SQL    string
	Gauges []Gauge
}

// Late is the query of one gauge: how far past due the most overdue of table's rows is (filter
// selects the rows still to do), by its due column; 0 when none is due. due should be the
// first column of an index whose predicate is filter, so that this is the index's first entry.
func Late(gauge Gauge, table, due, filter string) Query {
	return Query{
		SQL: fmt.Sprintf(`SELECT greatest(0, coalesce(extract(epoch FROM clock_timestamp() - min(%s)), 0))::float8 FROM %s WHERE %s`,
			due, table, filter),
		Gauges: []Gauge{gauge},
	}
}

// Waiting is the query of two gauges: how many rows of table wait (counted up to CountCap),
// and how long ago the first of them in key order (an indexed, ever-growing key such as a
// sequence) was written, by its since column; 0 for an empty table.
func Waiting(count, age Gauge, table, key, since string) Query {
	return Query{
		SQL: fmt.Sprintf(`SELECT
			(SELECT count(*) FROM (SELECT 1 FROM %[1]s LIMIT %[4]d) AS waiting)::float8,
			coalesce((SELECT extract(epoch FROM clock_timestamp() - %[3]s) FROM %[1]s ORDER BY %[2]s LIMIT 1), 0)::float8`,
			table, key, since, CountCap),
		Gauges: []Gauge{count, age},
	}
}

// Timeout bounds one scrape's statements: a scrape must not hang on a database that does.
const Timeout = 2 * time.Second

// CountCap bounds the counts: past it a backlog is large, and counting further would read the
// whole of it at every scrape.
const CountCap = 100_000

// Collector runs a schema's queries at each scrape. A failed scrape reports none of its
// gauges (an alert on them then sees the series vanish rather than a false zero), counts the
// failure in handoff_backlog_scrape_failures_total and logs it; the rest of /metrics is served.
type Collector struct {
	pool     *pgxpool.Pool
	schema   string
	queries  []Query
	descs    [][]*prometheus.Desc
	failures prometheus.Counter
	logger   *slog.Logger
}

// New returns a collector of queries on pool, whose gauges carry the label schema=schema.
func New(pool *pgxpool.Pool, schema string, queries []Query, logger *slog.Logger) *Collector {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	labels := prometheus.Labels{"schema": schema}
	c := &Collector{pool: pool, schema: schema, queries: queries, logger: logger}
	for _, q := range queries {
		descs := make([]*prometheus.Desc, len(q.Gauges))
		for i, g := range q.Gauges {
			descs[i] = prometheus.NewDesc(g.Name, g.Help, nil, labels)
		}
		c.descs = append(c.descs, descs)
	}
	c.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "handoff_backlog_scrape_failures_total",
		Help:        "Scrapes whose backlog statements failed or timed out, by schema; their gauges were left out.",
		ConstLabels: labels,
	})
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, descs := range c.descs {
		for _, d := range descs {
			ch <- d
		}
	}
	c.failures.Describe(ch)
}

// Collect implements prometheus.Collector: all of the schema's statements in one round trip.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	defer func() { ch <- c.failures }()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	values, err := c.read(ctx)
	if err != nil {
		c.failures.Inc()
		c.logger.Warn("backlog: reading the queues for /metrics failed; their gauges are left out of this scrape", "schema", c.schema, "err", err)
		return
	}
	for qi, row := range values {
		for gi, v := range row {
			ch <- prometheus.MustNewConstMetric(c.descs[qi][gi], prometheus.GaugeValue, v)
		}
	}
}

// Read runs the queries once and returns each gauge's value by name: what a scrape would report.
func (c *Collector) Read(ctx context.Context) (map[string]float64, error) {
	values, err := c.read(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]float64{}
	for qi, row := range values {
		for gi, v := range row {
			byName[c.queries[qi].Gauges[gi].Name] = v
		}
	}
	return byName, nil
}

// read runs every query and returns their rows.
func (c *Collector) read(ctx context.Context) ([][]float64, error) {
	batch := &pgx.Batch{}
	for _, q := range c.queries {
		batch.Queue(q.SQL)
	}
	res := c.pool.SendBatch(ctx, batch)
	defer res.Close()
	values := make([][]float64, len(c.queries))
	for i, q := range c.queries {
		row := make([]float64, len(q.Gauges))
		dest := make([]any, len(row))
		for j := range row {
			dest[j] = &row[j]
		}
		if err := res.QueryRow().Scan(dest...); err != nil {
			return nil, fmt.Errorf("%s: %w", q.Gauges[0].Name, err)
		}
		values[i] = row
	}
	return values, nil
}

// Register registers c with reg until the returned function is called. A collector of the same
// schema already registered (a second copy of a service in one process, as in tests) is left
// to report it: its figures are the same.
func Register(reg prometheus.Registerer, c prometheus.Collector) (unregister func(), err error) {
	if err := reg.Register(c); err != nil {
		if already := (prometheus.AlreadyRegisteredError{}); errors.As(err, &already) {
			return func() {}, nil
		}
		return nil, fmt.Errorf("backlog: register: %w", err)
	}
	return func() { reg.Unregister(c) }, nil
}
