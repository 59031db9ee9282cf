package dbclock

import "github.com/prometheus/client_golang/prometheus"

// OffsetMetric is the gauge a Clock's collector serves: the offset it goes by, in seconds.
const OffsetMetric = "handoff_db_clock_offset_seconds"

// Collector returns a collector that serves, at each scrape, the offset c goes by as
// handoff_db_clock_offset_seconds{schema}: the database's clock ahead of this copy's (negative:
// behind). The warning past WarnOffset is said once; the gauge keeps saying it, for an alert
// that fires while it lasts. It is read at scrape time, costing the readings that set it
// nothing. Until an offset is known it serves no sample: a zero would claim a clock checked.
func (c *Clock) Collector(schema string) prometheus.Collector {
	return &offsetCollector{clock: c, desc: prometheus.NewDesc(OffsetMetric,
		"How far the database's clock is ahead of this copy's (negative: behind), as the copy last measured or observed it; past 2 s (dbclock.WarnOffset) the machine's clock is wrong.",
		nil, prometheus.Labels{"schema": schema})}
}

type offsetCollector struct {
	clock *Clock
	desc  *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (o *offsetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- o.desc }

// Collect implements prometheus.Collector.
func (o *offsetCollector) Collect(ch chan<- prometheus.Metric) {
	if !o.clock.Known() {
		return
	}
	ch <- prometheus.MustNewConstMetric(o.desc, prometheus.GaugeValue, o.clock.Offset().Seconds())
}
