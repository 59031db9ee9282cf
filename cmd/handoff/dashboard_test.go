package main

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

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
			checkGrouping(t, p.Title, expr, byName)
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
		case m.Name == labels.MetricName:
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

// checkGrouping checks that every label a panel's query aggregates by (sum by (state)) is a label
// of the handoff_ metrics under that aggregation: a misspelt one merges the panel's lines.
func checkGrouping(t *testing.T, panel string, expr parser.Expr, byName map[string]*dto.MetricFamily) {
	t.Helper()
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		agg, ok := node.(*parser.AggregateExpr)
		if !ok || agg.Without {
			return nil
		}
		for _, sel := range parser.ExtractSelectors(agg.Expr) {
			for _, m := range sel {
				if m.Name != labels.MetricName || !strings.HasPrefix(m.Value, "handoff_") {
					continue
				}
				histogram := strings.HasSuffix(m.Value, "_bucket")
				f := byName[strings.TrimSuffix(m.Value, "_bucket")]
				if f == nil || len(f.GetMetric()) == 0 {
					continue
				}
				has := map[string]bool{"le": histogram}
				for _, series := range f.GetMetric() {
					for _, l := range series.GetLabel() {
						has[l.GetName()] = true
					}
				}
				for _, by := range agg.Grouping {
					if !has[by] {
						t.Errorf("panel %q sums %s by %q, a label it does not have", panel, m.Value, by)
					}
				}
			}
		}
		return nil
	})
}
