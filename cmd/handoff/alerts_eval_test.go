package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// alertRule is the rule of deploy/prometheus/alerts.yml named name.
func alertRule(t *testing.T, name string) *rulefmt.Rule {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 || groups == nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	for _, g := range groups.Groups {
		for i, r := range g.Rules {
			if r.Alert == name {
				return &g.Rules[i]
			}
		}
	}
	t.Fatalf("no %s in %s", name, alertsFile)
	return nil
}

// firesAt evaluates rule over db with Prometheus's own engine, as often as it is scraped, from
// from to until, and says when the rule fires (its for: held), if it does.
func firesAt(t *testing.T, rule *rulefmt.Rule, db *memQueryable, from, until, every time.Duration) (time.Duration, bool) {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, Parser: p})
	defer func() { _ = engine.Close() }()
	var activeAt time.Duration = -1
	for d := from; d <= until; d += every {
		q, err := engine.NewInstantQuery(context.Background(), db, nil, rule.Expr, time.Unix(0, 0).Add(d))
		if err != nil {
			t.Fatal(err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		v, _ := res.Vector()
		q.Close()
		switch {
		case len(v) == 0:
			activeAt = -1
		case activeAt < 0:
			activeAt = d
		}
		if activeAt >= 0 && d-activeAt >= time.Duration(rule.For) {
			return d, true
		}
	}
	return 0, false
}

// HandoffMostOrdersRejected fires when more than half the orders placed in half an hour were
// rejected, and not for a few rejections, nor for a handful of orders.
func TestHandoffMostOrdersRejectedFiresWhenMostOrdersAreRejected(t *testing.T) {
	rule := alertRule(t, "HandoffMostOrdersRejected")
	const scrape, span = time.Minute, time.Hour
	orders := func(placedPerMinute, rejectedPerMinute float64) *memQueryable {
		series := func(state string, perMinute float64) storage.Series {
			var samples []chunks.Sample
			for d := time.Duration(0); d <= span; d += scrape {
				samples = append(samples, fsample{t: d.Milliseconds(), f: perMinute * d.Minutes()})
			}
			return storage.NewListSeries(labels.FromStrings("__name__", "handoff_fulfilment_order_transitions_total", "state", state), samples)
		}
		return &memQueryable{series: []storage.Series{series("pending", placedPerMinute), series("rejected", rejectedPerMinute), series("confirmed", placedPerMinute-rejectedPerMinute)}}
	}
	if _, ok := firesAt(t, rule, orders(100, 70), 31*time.Minute, span, scrape); !ok {
		t.Error("70 of every 100 orders rejected for an hour: no alert")
	}
	if at, ok := firesAt(t, rule, orders(100, 10), 31*time.Minute, span, scrape); ok {
		t.Errorf("10 of every 100 orders rejected: alert at %v", at)
	}
	if at, ok := firesAt(t, rule, orders(0.5, 0.4), 31*time.Minute, span, scrape); ok {
		t.Errorf("a handful of orders, most rejected (a quiet night): alert at %v", at)
	}
}
