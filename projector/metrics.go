package projector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied    prometheus.Counter
	retries    prometheus.Counter
	parked     prometheus.Counter
	partitions prometheus.Gauge
	batchSize  prometheus.Histogram
	batchTime  prometheus.Histogram
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
	}
	if reg != nil {
		reg.MustRegister(m.applied, m.retries, m.parked, m.partitions, m.batchSize, m.batchTime)
	}
	return m
}

func (m *metrics) observeBatch(n int, d time.Duration) {
	m.batchSize.Observe(float64(n))
	m.batchTime.Observe(d.Seconds())
}
