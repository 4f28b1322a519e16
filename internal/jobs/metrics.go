package jobs

import "github.com/prometheus/client_golang/prometheus"

// metrics are the jobs' Prometheus series: counted when a job is accepted
// and when it ends, never per attempt on the gateway's path.
type metrics struct {
	accepted *prometheus.CounterVec // model
	finished *prometheus.CounterVec // model, status
	retries  *prometheus.CounterVec // model
	pending  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_jobs_accepted_total",
			Help: "Asynchronous jobs accepted (stored and answered 202), by model."}, []string{"model"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_jobs_finished_total",
			Help: "Asynchronous jobs that ended, by model and status (succeeded, or failed: the dead-letter list)."}, []string{"model", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_job_retries_total",
			Help: "Attempts of asynchronous jobs that failed and were queued again, by model."}, []string{"model"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_jobs_pending",
			Help: "Asynchronous jobs queued or running in this tandem process."}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.finished, m.retries, m.pending)
	}
	return m
}
