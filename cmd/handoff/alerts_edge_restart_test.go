package main

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// A rolling restart of the two fulfilment copies (or of the two gateway copies; of the two
// pos-adapter copies for terminals' StreamTickets) ends every open WatchOrder stream with
// Unavailable, by design: the app watches again, through the other copy. The edge counts a
// stream when it ends, so each restart puts one "unavailable" per open watch on
// handoff_edge_requests_total at once. HandoffEdgeFailing reads that as a service behind the
// edge failing: fed what Prometheus stores (a scrape every 15 s) for a steady 5 unary calls a
// second, all answered, and 600 open watches ended by each of two copies restarted 45 s apart,
// it must not page.
func TestHandoffEdgeFailingDoesNotPageOnARollingRestartThatEndsOpenStreams(t *testing.T) {
	rule := alertRule(t, "HandoffEdgeFailing")

	const scrape = 15 * time.Second
	const span = 30 * time.Minute
	series := func(procedure, code string, at func(time.Duration) float64) storage.Series {
		var samples []chunks.Sample
		for d := time.Duration(0); d <= span; d += scrape {
			samples = append(samples, fsample{t: d.Milliseconds(), f: at(d)})
		}
		return storage.NewListSeries(labels.FromStrings("__name__", "handoff_edge_requests_total",
			"edge", "gateway", "procedure", procedure, "code", code), samples)
	}
	restarts := []time.Duration{10 * time.Minute, 10*time.Minute + 45*time.Second}
	db := &memQueryable{series: []storage.Series{
		series("/handoff.catalog.v1.CatalogService/ListProducts", "ok", func(d time.Duration) float64 { return 5 * d.Seconds() }),
		series("/handoff.catalog.v1.CatalogService/ListProducts", "unavailable", func(time.Duration) float64 { return 0 }),
		series("/handoff.catalog.v1.CatalogService/ListProducts", "internal", func(time.Duration) float64 { return 0 }),
		series("/handoff.fulfilment.v1.OrderService/WatchOrder", "internal", func(time.Duration) float64 { return 0 }),
		series("/handoff.fulfilment.v1.OrderService/WatchOrder", "unavailable", func(d time.Duration) float64 {
			n := 0.0
			for _, r := range restarts {
				if d >= r {
					n += 600
				}
			}
			return n
		}),
	}}

	fires := func(db *memQueryable) (time.Duration, bool) { return firesAt(t, rule, db, 6*time.Minute, span, scrape) }
	if at, ok := fires(db); ok {
		t.Errorf("HandoffEdgeFailing fires at %v: two copies restarted 45 s apart, every unary call answered; a page on every deploy", at)
	}
	// What it is for still pages: catalog down from minute 10, its calls all Unavailable.
	down := &memQueryable{series: []storage.Series{
		series("/handoff.catalog.v1.CatalogService/ListProducts", "ok", func(d time.Duration) float64 { return 5 * min(d, 10*time.Minute).Seconds() }),
		series("/handoff.catalog.v1.CatalogService/ListProducts", "unavailable", func(d time.Duration) float64 { return 5 * max(d-10*time.Minute, 0).Seconds() }),
	}}
	if _, ok := fires(down); !ok {
		t.Errorf("HandoffEdgeFailing does not fire with catalog down for 20 minutes")
	}
}
