package main

import (
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/handoff-dev/handoff/internal/stacktest"
)

const alertsFile = "../../deploy/prometheus/alerts.yml"

// The alerting rules shipped in deploy/ are ones Prometheus loads (promtool's own parsing and
// checks), and every handoff_ metric they name, in their expressions or in the text that says
// where to look, is one a running system registers: a renamed metric would otherwise leave its
// alert silent for ever, or send the operator to a metric that is not there.
func TestAlertRulesLoadAndNameMetricsTheSystemServes(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", alertsFile, err)
	}
	if groups == nil {
		t.FailNow()
	}

	stacktest.Start(t) // registers the backlog gauges, read at scrape time, beside the rest
	metric := regexp.MustCompile(`\bhandoff_[a-z_]+`)
	var named []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: want an alert with a severity and a summary", r.Alert)
			}
			for _, name := range metric.FindAllString(r.Expr, -1) {
				if !slices.Contains(named, name) {
					named = append(named, name)
				}
			}
			// What the runbook text tells the operator to look at must exist too.
			for _, text := range r.Annotations {
				for _, name := range metric.FindAllString(text, -1) {
					if !registered(name) {
						t.Errorf("%s: %s's annotations name %s, which the system does not register", alertsFile, r.Alert, name)
					}
				}
			}
		}
	}
	if len(named) < 10 {
		t.Errorf("the rules name %d handoff metrics (%v): the file lost its rules?", len(named), named)
	}
	for _, name := range named {
		if !registered(name) {
			t.Errorf("%s names %s, which the system does not register", alertsFile, name)
		}
	}
}

// registered reports whether a collector of the process's default registry describes a metric
// called name, whether or not it has a sample yet (a counter vector with no labels seen has
// none): registering another metric of that name then clashes with it.
func registered(name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe of " + name})
	err := prometheus.DefaultRegisterer.Register(probe)
	if err == nil {
		prometheus.DefaultRegisterer.Unregister(probe)
		return false
	}
	already := prometheus.AlreadyRegisteredError{}
	return !errors.As(err, &already) // the same gauge cannot be registered already: a clash
}
