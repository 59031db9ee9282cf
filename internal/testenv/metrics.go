package testenv

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// CounterSums reads the counters (or gauges) of metric name on the default registry whose
// labels include every one of match, and sums them by the value of their label by: what an
// operator would graph of it.
func CounterSums(t testing.TB, name string, match map[string]string, by string) map[string]float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, p := range m.GetLabel() {
				labels[p.GetName()] = p.GetValue()
			}
			for k, v := range match {
				if labels[k] != v {
					continue series
				}
			}
			out[labels[by]] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}
