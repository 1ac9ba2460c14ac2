package relay

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dev/strata/eventstore"
	"github.com/strata-dev/strata/internal/platform"
)

type metrics struct {
	published  prometheus.Counter
	errors     prometheus.Counter
	restarts   prometheus.Counter
	leader     prometheus.Gauge
	lagEvents  prometheus.Gauge
	lagSeconds prometheus.Gauge
	delay      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_relay_published_total", Help: "Events whose publish JetStream acknowledged."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_relay_publish_errors_total", Help: "Publishes JetStream refused or did not acknowledge in time."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_relay_restarts_total", Help: "Times the relay started over from JetStream's last message."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_relay_leader", Help: "1 while this relay holds the leader lock."}),
		lagEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_relay_lag_events", Help: "Committed events not yet acknowledged by JetStream (counted up to 1,000,000)."}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_relay_lag_seconds", Help: "Age of the last acknowledged event while there is lag; 0 when caught up."}),
		// The relay's share of the projector's delay: waiting for older transactions to end (see
		// eventstore.Store.ReadAll), reading, and JetStream storing.
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_relay_delay_seconds",
			Help:    "Time from an event's commit in the event store to JetStream's acknowledgement of its publish.",
			Buckets: platform.DelayBuckets()}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.errors, m.restarts, m.leader, m.lagEvents, m.lagSeconds, m.delay)
	}
	return m
}

// measureLag updates the lag gauges and logs when the relay catches up or falls behind.
func (r *Relay) measureLag(ctx context.Context) {
	counter, ok := r.store.(eventstore.Counter)
	if !ok {
		return
	}
	t := time.NewTicker(r.cfg.LagInterval)
	defer t.Stop()
	caughtUp := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		acked := r.acked
		r.mu.Unlock()
		n, err := counter.CountAfter(ctx, acked.Position, 1_000_000)
		if err != nil {
			continue // the next tick tries again; a failing store shows up in the relay's own errors
		}
		r.m.lagEvents.Set(float64(n))
		if n == 0 {
			r.m.lagSeconds.Set(0)
			if !caughtUp {
				caughtUp = true
				r.log.Info("caught up", "position", acked.Position.String())
			}
			continue
		}
		if !acked.RecordedAt.IsZero() {
			r.m.lagSeconds.Set(time.Since(acked.RecordedAt).Seconds())
		}
		if caughtUp && n > 10_000 {
			caughtUp = false
			r.log.Warn("falling behind", "lag_events", n)
		}
	}
}
