package posadapter_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// metricValue reads a counter or gauge of the process's default registry (summed over labels
// matching label=value, or all series when label is "").
func metricValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

// An operator sees on /metrics how many terminals listen and that tickets reach them.
func TestMetricsCountOpenStreamsAndTicketsSent(t *testing.T) {
	e := newEnv(t)
	_, cred := e.register("Counter", "metrics-1")
	streamsBefore := metricValue(t, "handoff_pos_ticket_streams_open", "", "")
	sentBefore := metricValue(t, "handoff_pos_tickets_sent_total", "source", "live") + metricValue(t, "handoff_pos_tickets_sent_total", "source", "backlog")

	f := e.openFeed(e.terminal(overGRPCWeb, cred), "metrics-1")
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := metricValue(t, "handoff_pos_ticket_streams_open", "", ""); got != streamsBefore+1 {
			return fmt.Errorf("streams open %v, want %v", got, streamsBefore+1)
		}
		return nil
	})
	e.publish("confirmed", order("metrics-1", 1), nil)
	f.take(1, 5*time.Second)
	sent := metricValue(t, "handoff_pos_tickets_sent_total", "source", "live") + metricValue(t, "handoff_pos_tickets_sent_total", "source", "backlog")
	if sent < sentBefore+1 {
		t.Fatalf("tickets sent counter %v after a ticket reached the terminal, want at least %v", sent, sentBefore+1)
	}
}
