package metrics

import "github.com/prometheus/client_golang/prometheus"

// prewarmGauges are the prewarm floor and the cold start estimate of each
// deployment, set by its loop (never per request).
type prewarmGauges struct {
	floor    *prometheus.GaugeVec
	estimate *prometheus.GaugeVec
}

func newPrewarmGauges() prewarmGauges {
	return prewarmGauges{
		floor: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_prewarm_floor", Help: "Instances prewarm keeps warm now (scheduled windows, the predictive learner, a request that asked for a warm instance); 0 when none.",
		}, []string{"model"}),
		estimate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_cold_start_estimate_seconds", Help: "The expected cold start that deadline-aware requests are compared with: the median of the deployment's last measured starts (trigger to ready).",
		}, []string{"model"}),
	}
}

func (g prewarmGauges) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.floor, g.estimate}
}

// PrewarmFloor sets a deployment's prewarm floor.
func (m *Metrics) PrewarmFloor(model string, n int) {
	m.prewarm.floor.WithLabelValues(model).Set(float64(n))
}

// ColdStartEstimate sets a deployment's expected cold start.
func (m *Metrics) ColdStartEstimate(model string, seconds float64) {
	m.prewarm.estimate.WithLabelValues(model).Set(seconds)
}
