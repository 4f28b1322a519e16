package cost

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descInstanceSeconds = prometheus.NewDesc("tandem_cost_instance_seconds_total",
		"Instance-seconds by state: starting (decided to ready), busy (at least one request in flight) and idle (ready, nothing in flight), since tandem started.",
		[]string{"model", "state"}, nil)
	descCost = prometheus.NewDesc("tandem_cost_total",
		"What the deployment's usage since tandem started cost priced as each mode, in the price table's currency; priced_as equal to the deployment's mode is what it paid.",
		[]string{"model", "priced_as", "currency"}, nil)
	descIdleCost = prometheus.NewDesc("tandem_cost_idle_total",
		"The part of what the deployment paid since tandem started that went to instances serving nothing.",
		[]string{"model", "currency"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Meter) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInstanceSeconds
	ch <- descCost
	ch <- descIdleCost
}

// Collect implements prometheus.Collector: it flushes, then reports the
// running totals.
func (m *Meter) Collect(ch chan<- prometheus.Metric) {
	l := m.Live(time.Now())
	p := m.Prices()
	for model, u := range l.Models {
		for _, s := range []struct {
			state string
			a     Amount
		}{{"starting", u.Starting}, {"busy", u.Busy}, {"idle", u.Idle}} {
			ch <- prometheus.MustNewConstMetric(descInstanceSeconds, prometheus.CounterValue, s.a.Seconds, model, s.state)
		}
		for _, mode := range Modes {
			v := p.CostIf(mode, u)
			if mode == u.Mode {
				v = p.Cost(mode, u)
			}
			ch <- prometheus.MustNewConstMetric(descCost, prometheus.CounterValue, v, model, string(mode), l.Currency)
		}
		ch <- prometheus.MustNewConstMetric(descIdleCost, prometheus.CounterValue, p.IdleCost(u.Mode, u), model, l.Currency)
	}
}
