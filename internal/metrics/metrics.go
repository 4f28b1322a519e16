// Package metrics holds tandem's Prometheus metrics. Request-path metrics
// are pre-resolved per deployment (ForModel) so the hot path does no label
// lookups; gauges of pools and instances are read at scrape time.
package metrics

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is one registry and the vectors tandem records into.
type Metrics struct {
	Registry *prometheus.Registry

	requests    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	coldStarts  *prometheus.CounterVec
	coldStart   *prometheus.HistogramVec
	phases      *prometheus.HistogramVec
	instanceEnd *prometheus.CounterVec
	scaleEvents *prometheus.CounterVec
	cache       *prometheus.CounterVec
	prewarm     prewarmGauges
}

// New makes the registry with Go and process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	latencyBuckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := &Metrics{
		Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_requests_total", Help: "Requests through the gateway by model, protocol (http, v2, grpc) and HTTP status (gRPC: the HTTP status its code maps from).",
		}, []string{"model", "protocol", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_retries_total", Help: "Requests sent again to another instance after the first failed before answering.",
		}, []string{"model"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_request_duration_seconds", Help: "Gateway request latency, including any wait for a cold start.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_cold_starts_total", Help: "Requests that waited for an instance to start.",
		}, []string{"model"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_cold_start_wait_seconds", Help: "How long cold-start requests were queued before an instance took them.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_instance_start_phase_seconds",
			Help:    "Instance start, split into phases: trigger (scale decision to start call), the backend's own phases (exec; create, start), ready (started to readiness probe passing), total.",
			Buckets: latencyBuckets,
		}, []string{"model", "phase"}),
		instanceEnd: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_instance_exits_total", Help: "Instances that ended, by reason (stopped, crashed, oom, start_failed, start_timeout).",
		}, []string{"model", "reason"}),
		scaleEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_autoscaler_panic_total", Help: "Times the autoscaler entered panic mode.",
		}, []string{"model"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_cache_requests_total", Help: "Cacheable requests by model and result: hit (answered from the response cache), miss, bypass (the client asked for a fresh answer).",
		}, []string{"model", "result"}),
	}
	r.MustRegister(m.requests, m.retries, m.latency, m.coldStarts, m.coldStart, m.phases, m.instanceEnd, m.scaleEvents, m.cache)
	m.prewarm = newPrewarmGauges()
	r.MustRegister(m.prewarm.collectors()...)
	return m
}

// Model is the request-path metrics of one deployment, resolved once.
type Model struct {
	name       string
	m          *Metrics
	Latency    prometheus.Observer
	ColdStarts prometheus.Counter
	ColdWait   prometheus.Observer
	Retries    prometheus.Counter
	// CacheHit, CacheMiss and CacheBypass count cacheable requests.
	CacheHit, CacheMiss, CacheBypass prometheus.Counter
	codes                            sync.Map // codeKey -> prometheus.Counter
}

type codeKey struct {
	protocol string
	code     int
}

// ForModel resolves the label values of one deployment once.
func (m *Metrics) ForModel(name string) *Model {
	return &Model{
		name: name, m: m,
		Latency:     m.latency.WithLabelValues(name),
		ColdStarts:  m.coldStarts.WithLabelValues(name),
		ColdWait:    m.coldStart.WithLabelValues(name),
		Retries:     m.retries.WithLabelValues(name),
		CacheHit:    m.cache.WithLabelValues(name, "hit"),
		CacheMiss:   m.cache.WithLabelValues(name, "miss"),
		CacheBypass: m.cache.WithLabelValues(name, "bypass"),
	}
}

// Request counts one answered request that came in through protocol.
func (mm *Model) Request(protocol string, code int) {
	k := codeKey{protocol, code}
	if c, ok := mm.codes.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := mm.m.requests.WithLabelValues(mm.name, protocol, strconv.Itoa(code))
	mm.codes.Store(k, c)
	c.Inc()
}

// Phase records one instance start phase.
func (m *Metrics) Phase(model, phase string, seconds float64) {
	m.phases.WithLabelValues(model, phase).Observe(seconds)
}

// InstanceExit counts an ended instance.
func (m *Metrics) InstanceExit(model, reason string) {
	m.instanceEnd.WithLabelValues(model, reason).Inc()
}

// Panic counts entering panic mode.
func (m *Metrics) Panic(model string) { m.scaleEvents.WithLabelValues(model).Inc() }

// Forget drops a deleted deployment's series.
func (m *Metrics) Forget(model string) {
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.requests, m.retries, m.latency, m.coldStarts, m.coldStart, m.phases, m.instanceEnd, m.scaleEvents, m.cache, m.prewarm.floor, m.prewarm.estimate} {
		v.DeletePartialMatch(prometheus.Labels{"model": model})
	}
}

// GaugeSource reports per-deployment gauges at scrape time.
type GaugeSource interface {
	// Gauges calls fn once per deployment. It must not block for long.
	Gauges(fn func(model string, inflight, queued int, instances map[string]int))
}

// RegisterGauges exports in-flight, queue depth and instances by state,
// read from src at scrape time.
func (m *Metrics) RegisterGauges(src GaugeSource) {
	m.Registry.MustRegister(&gauges{src: src})
}

var (
	descInflight  = prometheus.NewDesc("tandem_inflight_requests", "Requests being served by instances.", []string{"model"}, nil)
	descQueue     = prometheus.NewDesc("tandem_queue_depth", "Requests held by the activator waiting for an instance.", []string{"model"}, nil)
	descInstances = prometheus.NewDesc("tandem_instances", "Instances by state (starting, ready, draining).", []string{"model", "state"}, nil)
)

type gauges struct{ src GaugeSource }

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInflight
	ch <- descQueue
	ch <- descInstances
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	g.src.Gauges(func(model string, inflight, queued int, instances map[string]int) {
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(inflight), model)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(queued), model)
		for _, st := range []string{"starting", "ready", "draining"} {
			ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(instances[st]), model, st)
		}
	})
}

// Register registers c on reg, or returns the collector already registered
// in its place, so that two users of one registry (two inference Services,
// two shadow Mirrors) share the series instead of panicking.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
