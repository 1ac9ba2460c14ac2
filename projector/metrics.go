package projector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/internal/platform"
)

type metrics struct {
	applied    prometheus.Counter
	retries    prometheus.Counter
	parked     prometheus.Counter
	partitions prometheus.Gauge
	batchSize  prometheus.Histogram
	batchTime  prometheus.Histogram
	delay      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, projection string) *metrics {
	l := prometheus.Labels{"projection": projection}
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_projector_applied_total",
			Help: "Events applied to the read model.", ConstLabels: l}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_projector_retries_total",
			Help: "Failed attempts to apply an event that were retried.", ConstLabels: l}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_projector_parked_total",
			Help: "Events parked in the dead-letter store, failed or waiting behind a failed one.", ConstLabels: l}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "strata_projector_partitions_owned",
			Help: "Partitions this process consumes.", ConstLabels: l}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_projector_batch_events",
			Help: "Events per applied batch.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(1, 4, 6)}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_projector_batch_seconds",
			Help: "Time to apply and commit a batch.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(0.0005, 3, 10)}),
		// How stale the read model is when an event reaches it: what a reader without a consistency
		// token may see, and most of what one with a token waits.
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_projector_delay_seconds",
			Help:        "Time from an event's commit in the event store to the commit that applied it to the read model.",
			ConstLabels: l, Buckets: platform.DelayBuckets()}),
	}
	if reg != nil {
		reg.MustRegister(m.applied, m.retries, m.parked, m.partitions, m.batchSize, m.batchTime, m.delay)
	}
	return m
}

func (m *metrics) observeBatch(n int, d time.Duration) {
	m.batchSize.Observe(float64(n))
	m.batchTime.Observe(d.Seconds())
}

// observeApplied counts the items of a committed batch that were applied, all but those in skipped,
// and how long after their commit in the event store each was applied.
func (m *metrics) observeApplied(items []item, skipped map[int]bool) {
	now := time.Now()
	for i, it := range items {
		if skipped[i] {
			continue
		}
		m.applied.Inc()
		if !it.rec.RecordedAt.IsZero() {
			m.delay.Observe(now.Sub(it.rec.RecordedAt).Seconds())
		}
	}
}
