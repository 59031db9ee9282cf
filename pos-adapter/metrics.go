package posadapter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	posv1 "github.com/handoff-dev/handoff/proto/handoff/pos/v1"
)

// The adapter's own metrics: how many terminals listen, and how fast tickets reach them.
var (
	streamsOpen = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "handoff_pos_ticket_streams_open",
		Help: "StreamTickets streams open on this adapter (terminals listening).",
	})
	ticketsSent = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_pos_tickets_sent_total",
		Help: "Tickets sent to terminals, by source: backlog (replayed from Postgres) or live.",
	}, []string{"source"})
	webhookRounds = promauto.NewCounter(prometheus.CounterOpts{
		Name: "handoff_pos_webhook_rounds_total",
		Help: "Rounds of the webhook dispatcher's claim of due deliveries (one statement each).",
	})
	webhookDeliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "handoff_pos_webhook_deliveries_total",
		Help: "Attempts of deliveries to stores' POS webhooks by outcome: delivered, retry (refused or unanswered; tried again later), dead (given up: kept as a dead letter for ListFailedDeliveries and ReplayDelivery), dropped (webhook disabled or narrowed).",
	}, []string{"outcome"})
	ticketSendDelay = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "handoff_pos_ticket_send_delay_seconds",
		Help:    "Time from a ticket being raised to it being sent to a terminal, by source.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300, 3600},
	}, []string{"source"})
)

// metricsEdge is the adapter's edge label on the edges' request metrics
// (handoff_edge_requests_total, handoff_edge_request_duration_seconds; package edge).
const metricsEdge = "pos"

// Every outcome's series is on /metrics from the start, at 0, so that an alert on the first
// dead letter (increase(…) > 0) sees it grow.
func init() {
	for _, outcome := range []string{"delivered", "retry", "dead", "dropped"} {
		webhookDeliveries.WithLabelValues(outcome)
	}
}

// sent records a ticket sent to a terminal.
func sent(source string, t *posv1.Ticket) {
	ticketsSent.WithLabelValues(source).Inc()
	if ct := t.GetCreateTime(); ct.IsValid() {
		ticketSendDelay.WithLabelValues(source).Observe(time.Since(ct.AsTime()).Seconds())
	}
}
