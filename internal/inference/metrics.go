package inference

import (
	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/batcher"
	promreg "tandem/internal/metrics"
)

// metrics are the batching metrics. A nil *metrics keeps nothing.
type metrics struct {
	batchSize  *prometheus.HistogramVec
	batchRows  *prometheus.HistogramVec
	queueDelay *prometheus.HistogramVec
	unbatched  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_batch_size",
			Help:    "Requests combined into one call to an instance by dynamic batching.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, []string{"model"}),
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_batch_rows",
			Help:    "Rows (first dimension) of one batched call to an instance.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}, []string{"model"}),
		queueDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_batch_queue_delay_seconds",
			Help:    "Time a request waited for its batch to fill before the batch was sent.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1},
		}, []string{"model"}),
		unbatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_batch_bypassed_total",
			Help: "Requests to a model with batching on that went alone, by reason (parameters, shape, too_many_rows).",
		}, []string{"model", "reason"}),
	}
	m.batchSize = promreg.Register(reg, m.batchSize)
	m.batchRows = promreg.Register(reg, m.batchRows)
	m.queueDelay = promreg.Register(reg, m.queueDelay)
	m.unbatched = promreg.Register(reg, m.unbatched)
	return m
}

func (m *metrics) observe(model string, st batcher.Stats) {
	if m == nil {
		return
	}
	m.batchSize.WithLabelValues(model).Observe(float64(st.Items))
	m.batchRows.WithLabelValues(model).Observe(float64(st.Size))
	q := m.queueDelay.WithLabelValues(model)
	for _, w := range st.Waits {
		q.Observe(w.Seconds())
	}
}

func (m *metrics) alone(model, reason string) {
	if m == nil {
		return
	}
	m.unbatched.WithLabelValues(model, reason).Inc()
}
