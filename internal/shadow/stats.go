package shadow

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/metrics"
)

// Stats is one shadow revision's counters, for status display.
type Stats struct {
	Model      string `json:"model"`
	Revision   string `json:"revision"`
	Sent       int64  `json:"sent"`       // copies sent: Matched + Mismatched + Errors + Unpaired + those still running or awaiting the primary
	Matched    int64  `json:"matched"`    // status and body equal to the primary's
	Mismatched int64  `json:"mismatched"` // status or body differ
	Errors     int64  `json:"errors"`     // Send failed (no answer, timeout, body read error): not compared
	Dropped    int64  `json:"dropped"`    // queue full (or Mirror closed): never sent
	Unpaired   int64  `json:"unpaired"`   // the shadow answered but the primary was abandoned: not compared
	// Status counts the shadow's answers by status code.
	Status map[int]int64 `json:"status,omitempty"`
	// P50 and P99 are the shadow latency of answered copies (from a
	// histogram; 0 when none).
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
}

// latencyBuckets are upper bounds in seconds, as internal/metrics uses for
// request latency.
var latencyBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Result label values of tandem_shadow_requests_total.
const (
	resultMatch    = "match"
	resultMismatch = "mismatch"
	resultError    = "error"
	resultDropped  = "dropped"
	resultUnpaired = "unpaired"
)

type vecs struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newVecs(reg prometheus.Registerer) *vecs {
	v := &vecs{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_shadow_requests_total",
			Help: "Shadow (mirrored) copies by model, shadow revision and result: match, mismatch (status or body differs from the primary's), error (no answer), dropped (queue full), unpaired (the primary failed before answering).",
		}, []string{"model", "revision", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_shadow_duration_seconds",
			Help:    "Shadow answer latency, from sending the copy until its body was read to the end.",
			Buckets: latencyBuckets[:],
		}, []string{"model", "revision"}),
	}
	if reg != nil {
		v.requests = metrics.Register(reg, v.requests)
		v.duration = metrics.Register(reg, v.duration)
	}
	return v
}

// series is the counters of one (model, revision). The Prometheus children
// are resolved once, when the series is made.
type series struct {
	model, revision string

	nSent, nMatch, nMismatch, nError, nDropped, nUnpaired atomic.Int64

	// codes counts answers by status for the usual range without a lock;
	// other codes go to the map.
	codes   [500]atomic.Int64 // index: status - 100
	otherMu sync.Mutex
	other   map[int]int64

	buckets [len(latencyBuckets) + 1]atomic.Int64 // the last is +Inf; not cumulative

	cMatch, cMismatch, cError, cDropped, cUnpaired prometheus.Counter
	hDuration                                      prometheus.Observer
}

func newSeries(v *vecs, model, revision string) *series {
	return &series{
		model: model, revision: revision,
		cMatch:    v.requests.WithLabelValues(model, revision, resultMatch),
		cMismatch: v.requests.WithLabelValues(model, revision, resultMismatch),
		cError:    v.requests.WithLabelValues(model, revision, resultError),
		cDropped:  v.requests.WithLabelValues(model, revision, resultDropped),
		cUnpaired: v.requests.WithLabelValues(model, revision, resultUnpaired),
		hDuration: v.duration.WithLabelValues(model, revision),
	}
}

func (s *series) matched()    { s.nMatch.Add(1); s.cMatch.Inc() }
func (s *series) mismatched() { s.nMismatch.Add(1); s.cMismatch.Inc() }
func (s *series) failed()     { s.nError.Add(1); s.cError.Inc() }
func (s *series) dropped()    { s.nDropped.Add(1); s.cDropped.Inc() }
func (s *series) unpaired()   { s.nUnpaired.Add(1); s.cUnpaired.Inc() }

func (s *series) status(code int) {
	if code >= 100 && code < 600 {
		s.codes[code-100].Add(1)
		return
	}
	s.otherMu.Lock()
	if s.other == nil {
		s.other = map[int]int64{}
	}
	s.other[code]++
	s.otherMu.Unlock()
}

func (s *series) observe(d time.Duration) {
	sec := d.Seconds()
	s.hDuration.Observe(sec)
	i := sort.SearchFloat64s(latencyBuckets[:], sec) // first bound >= sec: le semantics
	s.buckets[i].Add(1)
}

// quantile estimates the q-quantile from the buckets as Prometheus'
// histogram_quantile does: linear within the bucket, the highest finite
// bound for the +Inf bucket.
func (s *series) quantile(counts []int64, total int64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum int64
	for i, n := range counts {
		if n == 0 || float64(cum+n) < rank {
			cum += n
			continue
		}
		if i == len(latencyBuckets) {
			return seconds(latencyBuckets[i-1])
		}
		lo := 0.0
		if i > 0 {
			lo = latencyBuckets[i-1]
		}
		hi := latencyBuckets[i]
		return seconds(lo + (hi-lo)*(rank-float64(cum))/float64(n))
	}
	return seconds(latencyBuckets[len(latencyBuckets)-1])
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * float64(time.Second))) }

func (s *series) stats() Stats {
	st := Stats{
		Model: s.model, Revision: s.revision,
		Sent: s.nSent.Load(), Matched: s.nMatch.Load(), Mismatched: s.nMismatch.Load(),
		Errors: s.nError.Load(), Dropped: s.nDropped.Load(), Unpaired: s.nUnpaired.Load(),
		Status: map[int]int64{},
	}
	for i := range s.codes {
		if n := s.codes[i].Load(); n > 0 {
			st.Status[i+100] = n
		}
	}
	s.otherMu.Lock()
	for code, n := range s.other {
		st.Status[code] = n
	}
	s.otherMu.Unlock()
	counts := make([]int64, len(s.buckets))
	var total int64
	for i := range s.buckets {
		counts[i] = s.buckets[i].Load()
		total += counts[i]
	}
	st.P50 = s.quantile(counts, total, 0.5)
	st.P99 = s.quantile(counts, total, 0.99)
	return st
}

// lookup returns the series of (model, revision), making it on first use.
func (m *Mirror) lookup(model, revision string) *series {
	m.mu.RLock()
	s := m.series[model][revision]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	revs := m.series[model]
	if revs == nil {
		revs = map[string]*series{}
		m.series[model] = revs
	}
	if s = revs[revision]; s == nil {
		s = newSeries(m.metrics, model, revision)
		revs[revision] = s
	}
	return s
}

// Stats returns the counters of every revision shadowed for model, sorted by
// revision; nil when there are none.
func (m *Mirror) Stats(model string) []Stats {
	m.mu.RLock()
	list := make([]*series, 0, len(m.series[model]))
	for _, s := range m.series[model] {
		list = append(list, s)
	}
	m.mu.RUnlock()
	if len(list) == 0 {
		return nil
	}
	out := make([]Stats, len(list))
	for i, s := range list {
		out[i] = s.stats()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Revision < out[j].Revision })
	return out
}

// Forget drops a deleted model's counters and metric series. Copies of it
// still running finish into the forgotten counters and are not exported.
func (m *Mirror) Forget(model string) {
	m.mu.Lock()
	delete(m.series, model)
	m.mu.Unlock()
	m.metrics.requests.DeletePartialMatch(prometheus.Labels{"model": model})
	m.metrics.duration.DeletePartialMatch(prometheus.Labels{"model": model})
}
