package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Per-revision figures on /metrics, read at scrape time from the published
// plans and each unit's rollout counters (never on the request path), so
// that a dashboard or an outside analysis (Flagger's way) can compare a
// canary with the main revision.

var (
	descRevRequests = prometheus.NewDesc("tandem_revision_requests_total",
		"Requests a model's revision answered since its unit started (cold starts included).", []string{"model", "revision"}, nil)
	descRevErrors = prometheus.NewDesc("tandem_revision_errors_total",
		"5xx answers of a model's revision since its unit started.", []string{"model", "revision"}, nil)
	descRevCold = prometheus.NewDesc("tandem_revision_cold_starts_total",
		"Requests of a model's revision that waited for a cold start, since its unit started.", []string{"model", "revision"}, nil)
	descRevPercent = prometheus.NewDesc("tandem_revision_traffic_percent",
		"A revision's share of its model's split (0 for a revision reached only by tag, route or shadow).", []string{"model", "revision"}, nil)
)

type revisionMetrics struct{ c *Controller }

func (revisionMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRevRequests
	ch <- descRevErrors
	ch <- descRevCold
	ch <- descRevPercent
}

func (r revisionMetrics) Collect(ch chan<- prometheus.Metric) {
	plans := *r.c.plans.Load()
	for name, main := range *r.c.snap.Load() {
		pct := map[*Deployment]int{main: 100}
		if p := plans[name]; p != nil {
			pct = p.percents()
		}
		for _, d := range r.c.unitsOf(name, main) {
			rev := d.Revision()
			s := d.Stats.Snapshot()
			ch <- prometheus.MustNewConstMetric(descRevRequests, prometheus.CounterValue, float64(s.Requests), name, rev)
			ch <- prometheus.MustNewConstMetric(descRevErrors, prometheus.CounterValue, float64(s.Errors), name, rev)
			ch <- prometheus.MustNewConstMetric(descRevCold, prometheus.CounterValue, float64(s.Cold), name, rev)
			ch <- prometheus.MustNewConstMetric(descRevPercent, prometheus.GaugeValue, float64(pct[d]), name, rev)
		}
	}
}

// percents returns each unit's share of the split.
func (p *plan) percents() map[*Deployment]int {
	out := map[*Deployment]int{}
	prev := 0
	for _, w := range p.split {
		out[w.d] += w.upto - prev
		prev = w.upto
	}
	return out
}

// units returns a model's running units from its plan, main first
// (lock-free, for scrapes).
func (c *Controller) unitsOf(name string, main *Deployment) []*Deployment {
	units := []*Deployment{main}
	if p := (*c.plans.Load())[name]; p != nil {
		for _, d := range p.byRev {
			if d != main {
				units = append(units, d)
			}
		}
	}
	return units
}
