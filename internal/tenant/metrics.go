package tenant

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the per-tenant series: requests by tenant, model and status
// (resolved once per combination), and usage read from the registry at
// scrape time.
type metrics struct {
	r        *Registry
	requests *prometheus.CounterVec
	cache    sync.Map // reqKey -> prometheus.Counter
}

type reqKey struct {
	tenant, model string
	code          int
}

var (
	descSpend    = prometheus.NewDesc("tandem_tenant_spend_usd_total", "What each tenant's requests cost, priced as serverless.", []string{"tenant"}, nil)
	descBusy     = prometheus.NewDesc("tandem_tenant_busy_seconds_total", "Instance time spent serving each tenant's requests.", []string{"tenant"}, nil)
	descInFlight = prometheus.NewDesc("tandem_tenant_inflight_requests", "Each tenant's requests in flight.", []string{"tenant"}, nil)
)

func newMetrics(r *Registry, reg prometheus.Registerer) *metrics {
	m := &metrics{r: r, requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_tenant_requests_total", Help: "Admitted requests by tenant, model and HTTP status.",
	}, []string{"tenant", "model", "code"})}
	if reg != nil {
		reg.MustRegister(m.requests, m)
	}
	return m
}

func (m *metrics) request(tenant, model string, code int) {
	k := reqKey{tenant, model, code}
	if c, ok := m.cache.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := m.requests.WithLabelValues(tenant, model, strconv.Itoa(code))
	m.cache.Store(k, c)
	c.Inc()
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSpend
	ch <- descBusy
	ch <- descInFlight
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	now := m.r.Now()
	for name, s := range m.r.snap.Load().tenants {
		u := s.usage(now)
		ch <- prometheus.MustNewConstMetric(descSpend, prometheus.CounterValue, u.Spend, name)
		ch <- prometheus.MustNewConstMetric(descBusy, prometheus.CounterValue, u.BusySeconds, name)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(s.flight.Load()), name)
	}
}
