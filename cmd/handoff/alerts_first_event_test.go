package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/handoff-dev/handoff/internal/stacktest"
)

// An alert written "increase(counter{…}[w]) > 0" says one event is news (an event given up, a
// notification dead-lettered, a short hand-over). Prometheus's increase() measures a counter's
// growth between the samples it has: a series that first appears on /metrics already at 1 (a
// CounterVec child made by the first event's WithLabelValues(…).Inc()) never grew in
// Prometheus's eyes, and the alert stays silent for the first such event of every process —
// which, for rare events, is nearly every one. The series an alert reads must be on /metrics,
// at 0, before the event happens.
//
// For each such rule of deploy/prometheus/alerts.yml this test looks at what the running
// system serves before any event: a series the rule selects, or none. It then feeds Prometheus's
// own query engine what a scrape every minute would store when one event happens — the series
// at 0 then 1 if it was served, absent then 1 if not — and wants the rule's expression to fire.
func TestAlertsOnSingleEventsFireOnTheFirstEvent(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 || groups == nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	stacktest.Start(t)
	time.Sleep(2 * time.Second) // the consumers and dispatchers are under way
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}

	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, Parser: p})
	t.Cleanup(func() { _ = engine.Close() })

	checked := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			selectors := singleEventSelectors(expr)
			if len(selectors) == 0 {
				continue
			}
			checked++
			var series []storage.Series
			for _, vs := range selectors {
				ls, ok := servedSeries(families, vs.LabelMatchers)
				if !ok {
					ls = seriesOf(vs.LabelMatchers)
				}
				series = append(series, scraped(ls, ok))
			}
			db := &memQueryable{series: series}
			fired := false
			for m := 11; m <= 40 && !fired; m++ {
				q, err := engine.NewInstantQuery(context.Background(), db, nil, r.Expr, time.Unix(0, 0).Add(time.Duration(m)*time.Minute))
				if err != nil {
					t.Fatalf("%s: %v", r.Alert, err)
				}
				res := q.Exec(context.Background())
				if res.Err != nil {
					t.Fatalf("%s: %v", r.Alert, res.Err)
				}
				if v, _ := res.Vector(); len(v) > 0 {
					fired = true
				}
				q.Close()
			}
			if !fired {
				t.Errorf("%s (%s) never fires on one event: /metrics serves no series it selects until the first event (%v), which then appears at 1 and increase() sees no growth",
					r.Alert, r.Expr, selectors)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no rule of the form increase(…) > 0 found: the file changed?")
	}
}

// singleEventSelectors returns the counters read by increase() or rate() in an expression of the
// form "… > 0" (one event is news); none for other expressions.
func singleEventSelectors(expr parser.Expr) []*parser.VectorSelector {
	b, ok := expr.(*parser.BinaryExpr)
	if !ok || b.Op != parser.GTR {
		return nil
	}
	if n, ok := b.RHS.(*parser.NumberLiteral); !ok || n.Val != 0 {
		return nil
	}
	var out []*parser.VectorSelector
	parser.Inspect(b.LHS, func(node parser.Node, _ []parser.Node) error {
		call, ok := node.(*parser.Call)
		if !ok || (call.Func.Name != "increase" && call.Func.Name != "rate") {
			return nil
		}
		for _, a := range call.Args {
			if m, ok := a.(*parser.MatrixSelector); ok {
				out = append(out, m.VectorSelector.(*parser.VectorSelector))
			}
		}
		return nil
	})
	return out
}

// servedSeries finds a series among families that every matcher selects.
func servedSeries(families []*dto.MetricFamily, matchers []*labels.Matcher) (labels.Labels, bool) {
	for _, f := range families {
		for _, m := range f.GetMetric() {
			b := labels.NewBuilder(labels.FromStrings("__name__", f.GetName()))
			for _, l := range m.GetLabel() {
				b.Set(l.GetName(), l.GetValue())
			}
			ls := b.Labels()
			all := true
			for _, mt := range matchers {
				if !mt.Matches(ls.Get(mt.Name)) {
					all = false
				}
			}
			if all {
				return ls, true
			}
		}
	}
	return labels.EmptyLabels(), false
}

// seriesOf is a series the matchers select (their equalities), as the first event makes it.
func seriesOf(matchers []*labels.Matcher) labels.Labels {
	b := labels.NewBuilder(labels.FromStrings("consumer", "some-consumer", "channel", "webhook"))
	for _, m := range matchers {
		if m.Type == labels.MatchEqual {
			b.Set(m.Name, m.Value)
		}
	}
	return b.Labels()
}

// scraped is what a scrape every minute stores of a counter that counts one event at minute
// 10: 0 before it when /metrics served the series, nothing before it when not; 1 after.
func scraped(ls labels.Labels, served bool) storage.Series {
	var samples []chunks.Sample
	for m := range 41 {
		if m < 10 && !served {
			continue
		}
		v := 0.0
		if m >= 10 {
			v = 1
		}
		samples = append(samples, fsample{t: int64(m) * time.Minute.Milliseconds(), f: v})
	}
	return storage.NewListSeries(ls, samples)
}

type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                    { return s.t }
func (fsample) ST() int64                     { return 0 }
func (s fsample) F() float64                  { return s.f }
func (fsample) H() *histogram.Histogram       { return nil }
func (fsample) FH() *histogram.FloatHistogram { return nil }
func (fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample         { return s }

// memQueryable holds a few series in memory for Prometheus's query engine.
type memQueryable struct{ series []storage.Series }

func (q *memQueryable) Querier(int64, int64) (storage.Querier, error) { return q, nil }
func (*memQueryable) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (*memQueryable) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (*memQueryable) Close() error { return nil }
func (q *memQueryable) Select(_ context.Context, _ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range q.series {
		all := true
		for _, m := range matchers {
			if !m.Matches(s.Labels().Get(m.Name)) {
				all = false
			}
		}
		if all {
			out = append(out, s)
		}
	}
	return &listSet{series: out, i: -1}
}

type listSet struct {
	series []storage.Series
	i      int
}

func (s *listSet) Next() bool                      { s.i++; return s.i < len(s.series) }
func (s *listSet) At() storage.Series              { return s.series[s.i] }
func (*listSet) Err() error                        { return nil }
func (*listSet) Warnings() annotations.Annotations { return nil }

// When every copy of a part is down (a crash loop, a bad rollout, a node pool gone), its
// /metrics is gone and with it every gauge the alerts read of its queues: max(…) > N over no
// series is no alert. The backlog gauges exist because "a stuck loop does nothing and so
// reports nothing" (README, "Watching it"); a stopped part reports nothing either. Fed what
// Prometheus stores for an hour in which fulfilment serves no /metrics while the other parts
// are healthy, some rule of the file must fire.
func TestAlertsFireWhenAPartServesNoMetrics(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 || groups == nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	healthy := func(name string, kv ...string) storage.Series {
		var samples []chunks.Sample
		for m := range 61 {
			samples = append(samples, fsample{t: int64(m) * time.Minute.Milliseconds(), f: 0})
		}
		return storage.NewListSeries(labels.FromStrings(append([]string{"__name__", name}, kv...)...), samples)
	}
	var series []storage.Series
	for _, schema := range []string{"catalog", "inventory", "cart", "pos"} { // fulfilment is down
		series = append(series,
			healthy("handoff_outbox_backlog_events", "schema", schema),
			healthy("handoff_outbox_oldest_event_age_seconds", "schema", schema),
			healthy("handoff_backlog_scrape_failures_total", "schema", schema))
	}
	series = append(series,
		healthy("handoff_inventory_holds_overdue_seconds", "schema", "inventory"),
		healthy("handoff_pos_webhooks_late_seconds", "schema", "pos"),
		healthy("handoff_jetstream_consumer_scrape_failures_total"))
	db := &memQueryable{series: series}
	p := parser.NewParser(parser.Options{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, Parser: p})
	t.Cleanup(func() { _ = engine.Close() })

	var fired []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			q, err := engine.NewInstantQuery(context.Background(), db, nil, r.Expr, time.Unix(0, 0).Add(60*time.Minute))
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			res := q.Exec(context.Background())
			if res.Err != nil {
				t.Fatalf("%s: %v", r.Alert, res.Err)
			}
			if v, _ := res.Vector(); len(v) > 0 {
				fired = append(fired, r.Alert)
			}
			q.Close()
		}
	}
	if len(fired) == 0 {
		t.Errorf("fulfilment has served no /metrics for an hour (no order timers, effects, notifications or outbox of its read) and no rule of %s fires", alertsFile)
	}
}
