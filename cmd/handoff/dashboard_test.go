package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/protobuf/proto"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
	"github.com/handoff-dev/handoff/mobile-mock/journey"
	"github.com/handoff-dev/handoff/mobile-mock/system"
	commonv1 "github.com/handoff-dev/handoff/proto/handoff/common/v1"
)

const dashboardFile = "../../deploy/grafana/handoff.json"

// The Grafana dashboard shipped in deploy/ asks only what a running system answers: every query
// parses as PromQL, every handoff_ metric it names is registered, each label it selects on by
// equality (an edge, a procedure, a side) has a series with that value, and each label it sums
// by is one the metric has, once an order has gone through. A renamed metric or label would
// otherwise leave a panel empty, or its lines merged into one, for good.
func TestTheDashboardAsksOnlyWhatTheSystemServes(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if len(dash.Panels) < 8 {
		t.Fatalf("%d panels: the dashboard lost its panels?", len(dash.Panels))
	}

	ready := stacktest.Start(t)
	placeOneOrder(t, ready)
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(target.Expr)
			if err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, target.Expr, err)
				continue
			}
			for _, sel := range parser.ExtractSelectors(expr) {
				checkSelector(t, p.Title, sel, byName)
			}
			for _, problem := range groupingProblems(expr, byName) {
				t.Errorf("panel %q %s", p.Title, problem)
			}
		}
	}
}

// checkSelector checks one vector selector of a panel's query against the metrics gathered.
func checkSelector(t *testing.T, panel string, sel []*labels.Matcher, byName map[string]*dto.MetricFamily) {
	t.Helper()
	var name string
	var equal []*labels.Matcher
	for _, m := range sel {
		switch {
		case m.Name == model.MetricNameLabel:
			name = m.Value
		case m.Type == labels.MatchEqual:
			equal = append(equal, m)
		}
	}
	if !strings.HasPrefix(name, "handoff_") {
		return
	}
	family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
	if !registered(family) {
		t.Errorf("panel %q names %s, which the system does not register", panel, name)
		return
	}
	f := byName[family]
	if f == nil || len(f.GetMetric()) == 0 || len(equal) == 0 {
		return // registered, no series yet to hold the labels against
	}
	for _, m := range f.GetMetric() {
		values := map[string]string{}
		for _, l := range m.GetLabel() {
			values[l.GetName()] = l.GetValue()
		}
		matches := true
		for _, eq := range equal {
			matches = matches && values[eq.Name] == eq.Value
		}
		if matches {
			return
		}
	}
	t.Errorf("panel %q selects %s with %v, which no series of it has", panel, name, equal)
}

// placeOneOrder plays the demo journey once, an order from checkout to hand-over through the
// gateway and a terminal, so that the metrics of each step have their series.
func placeOneOrder(t *testing.T, ready stack.Ready) {
	t.Helper()
	items, err := journey.ParseItems("CROISSANT")
	if err != nil {
		t.Fatal(err)
	}
	_, err = journey.Run(t.Context(), journey.Config{
		Endpoints: system.Endpoints{GatewayURL: "http://" + ready.GatewayAddr, POSURL: "http://" + ready.POSAdapterAddr,
			InventoryAddr: ready.ServiceAddrs[stack.TargetInventory], Keys: ready.Keys},
		Near: &commonv1.LatLng{Latitude: 47.61, Longitude: -122.33}, RadiusMeters: 25000, Items: items, Out: io.Discard,
	})
	if err != nil {
		t.Fatalf("one order's journey: %v", err)
	}
}

// groupingProblems says which labels expr aggregates by (sum by (state)) that the handoff_
// metrics under that aggregation do not have: a misspelt one merges a panel's lines.
func groupingProblems(expr parser.Expr, byName map[string]*dto.MetricFamily) []string {
	var problems []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		agg, ok := node.(*parser.AggregateExpr)
		if !ok || agg.Without {
			return nil
		}
		for _, sel := range parser.ExtractSelectors(agg.Expr) {
			for _, m := range sel {
				if m.Name != model.MetricNameLabel || !strings.HasPrefix(m.Value, "handoff_") {
					continue
				}
				// A histogram's series: _bucket (by le too), _sum and _count, of one family.
				family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m.Value, "_bucket"), "_sum"), "_count")
				f := byName[family]
				if f == nil || len(f.GetMetric()) == 0 {
					continue
				}
				has := map[string]bool{"le": strings.HasSuffix(m.Value, "_bucket")}
				for _, series := range f.GetMetric() {
					for _, l := range series.GetLabel() {
						has[l.GetName()] = true
					}
				}
				for _, by := range agg.Grouping {
					if !has[by] {
						problems = append(problems, fmt.Sprintf("sums %s by %q, a label it does not have", m.Value, by))
					}
				}
			}
		}
		return nil
	})
	return problems
}

// The grouping check holds a histogram's _count and _sum to the labels of its family, as its
// _bucket.
func TestTheGroupingCheckKnowsAHistogramsSeries(t *testing.T) {
	byName := map[string]*dto.MetricFamily{"handoff_x_seconds": {
		Name:   proto.String("handoff_x_seconds"),
		Type:   dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: proto.String("edge"), Value: proto.String("gateway")}}}},
	}}
	for q, want := range map[string]int{
		`sum by (le, edge) (rate(handoff_x_seconds_bucket[5m]))`:  0,
		`sum by (edge) (rate(handoff_x_seconds_count[5m]))`:       0,
		`sum by (le, edgee) (rate(handoff_x_seconds_bucket[5m]))`: 1,
		`sum by (edgee) (rate(handoff_x_seconds_count[5m]))`:      1,
		`sum by (edgee) (rate(handoff_x_seconds_sum[5m]))`:        1,
		`sum by (le) (rate(handoff_x_seconds_count[5m]))`:         1,
	} {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
		if err != nil {
			t.Fatal(err)
		}
		if got := groupingProblems(expr, byName); len(got) != want {
			t.Errorf("%s: %v; want %d problems", q, got, want)
		}
	}
}
