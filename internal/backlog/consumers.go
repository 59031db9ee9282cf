package backlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Consumers reports, at each scrape, how far behind every durable consumer of the given
// streams is: the events it has not been handed yet, those handed and not yet acknowledged,
// those among them handed more than once, and the sequence below which all are acknowledged. A
// consumer whose handler fails on one event
// again and again (a poison event) shows as redelivered; one that is down or too slow shows as
// pending.
type Consumers struct {
	js       jetstream.JetStream
	streams  []string
	pending  *prometheus.Desc
	acking   *prometheus.Desc
	redeliv  *prometheus.Desc
	floor    *prometheus.Desc
	failures prometheus.Counter
	logger   *slog.Logger
}

// NewConsumers returns a collector of the durable consumers of streams.
func NewConsumers(js jetstream.JetStream, streams []string, logger *slog.Logger) *Consumers {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	labels := []string{"stream", "consumer"}
	return &Consumers{
		js: js, streams: streams, logger: logger,
		pending: prometheus.NewDesc("handoff_jetstream_consumer_pending_events",
			"Events in the stream a durable consumer has not been handed yet. Near zero while its service keeps up.", labels, nil),
		acking: prometheus.NewDesc("handoff_jetstream_consumer_unacknowledged_events",
			"Events handed to a durable consumer and not yet acknowledged (being handled, or waiting to be handed again after a failure).", labels, nil),
		redeliv: prometheus.NewDesc("handoff_jetstream_consumer_redelivered_events",
			"Events handed to a durable consumer more than once and still not acknowledged: handlers failing on them.", labels, nil),
		floor: prometheus.NewDesc("handoff_jetstream_consumer_ack_floor_sequence",
			"The stream sequence below which a durable consumer has acknowledged every event. It stops while one event stays unacknowledged, however many after it are handled.", labels, nil),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "handoff_jetstream_consumer_scrape_failures_total",
			Help: "Scrapes that could not read the durable consumers' state from JetStream; their gauges were left out.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *Consumers) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.acking
	ch <- c.redeliv
	ch <- c.floor
	c.failures.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Consumers) Collect(ch chan<- prometheus.Metric) {
	defer func() { ch <- c.failures }()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	infos, err := c.read(ctx)
	if err != nil {
		c.failures.Inc()
		c.logger.Warn("backlog: reading the durable consumers for /metrics failed; their gauges are left out of this scrape", "err", err)
		return
	}
	for _, in := range infos {
		labels := []string{in.Stream, in.Name}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(in.NumPending), labels...)
		ch <- prometheus.MustNewConstMetric(c.acking, prometheus.GaugeValue, float64(in.NumAckPending), labels...)
		ch <- prometheus.MustNewConstMetric(c.redeliv, prometheus.GaugeValue, float64(in.NumRedelivered), labels...)
		ch <- prometheus.MustNewConstMetric(c.floor, prometheus.GaugeValue, float64(in.AckFloor.Stream), labels...)
	}
}

// read lists the durable consumers of every stream; a stream not created yet has none.
func (c *Consumers) read(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	var infos []*jetstream.ConsumerInfo
	for _, name := range c.streams {
		stream, err := c.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		lister := stream.ListConsumers(ctx)
		for in := range lister.Info() {
			if in.Config.Durable != "" {
				infos = append(infos, in)
			}
		}
		if err := lister.Err(); err != nil {
			return nil, fmt.Errorf("consumers of %s: %w", name, err)
		}
	}
	return infos, nil
}
