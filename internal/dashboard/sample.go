package dashboard

import (
	"fmt"
	"math"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"tandem/internal/controller"
	"tandem/internal/cost"
)

// point is one deployment in one sample. Counters are cumulative, as
// Prometheus keeps them; rates and quantiles come from differences.
type point struct {
	Mode, Backend, Revision      string
	Desired, Ready, Starting     int
	Draining, InFlight, Queued   int
	Restarts                     int
	LastError                    string
	Requests, Errors, ColdStarts float64
	// Buckets are the cumulative counts of tandem_request_duration_seconds
	// at the sample's bounds.
	Buckets []float64
	// Exits counts ended instances by reason.
	Exits map[string]float64
	// Phases is the mean seconds of each instance start phase so far.
	Phases map[string]float64
	// Cost is the deployment's cost over the last 24 hours (what `tandem
	// cost` shows), when Priced (not without a meter or usage).
	Cost   float64
	Priced bool
}

// latest is what the dashboard shows of the newest sample only. It is
// kept apart from the points, so that a deployment's point stays the same
// from one sample to the next while it sits idle (see share): the
// autoscaler's reason of an idle deployment says for how long, and the
// cost line's floor grows with the deployment's age.
type latest struct {
	Reason string
	Cost   *cost.ModelReport // nil without a meter or usage
}

// sample is every deployment at one time.
type sample struct {
	At     time.Time
	Bounds []float64 // latency histogram upper bounds, seconds
	Deps   map[string]*point
}

// Event is something that happened to a deployment, derived from two
// samples in a row.
type Event struct {
	At         time.Time `json:"at"`
	Deployment string    `json:"deployment"`
	// Kind is deployed, deleted, rollout, scale_up, scale_down, crash or
	// error.
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// build assembles a sample from the controller's statuses, the gathered
// metric families and a cost report (either may be nil), and returns what
// only the newest sample shows apart, by deployment.
func build(now time.Time, sts []*controller.Status, mfs []*dto.MetricFamily, rep *cost.Report) (*sample, map[string]latest) {
	s := &sample{At: now, Deps: map[string]*point{}}
	last := make(map[string]latest, len(sts))
	for _, st := range sts {
		last[st.Name] = latest{Reason: st.Reason}
		s.Deps[st.Name] = &point{
			Mode: string(st.Mode), Backend: st.Backend, Revision: st.Revision,
			Desired: st.Desired, Ready: st.Ready, Starting: st.Starting, Draining: st.Draining,
			InFlight: st.InFlight, Queued: st.Queued, Restarts: st.Restarts, LastError: st.LastError,
			Exits: map[string]float64{}, Phases: map[string]float64{},
		}
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			p := s.Deps[label(m, "model")]
			if p == nil {
				continue
			}
			switch mf.GetName() {
			case "tandem_requests_total":
				v := m.GetCounter().GetValue()
				p.Requests += v
				if code := label(m, "code"); len(code) == 3 && code[0] == '5' {
					p.Errors += v
				}
			case "tandem_cold_starts_total":
				p.ColdStarts += m.GetCounter().GetValue()
			case "tandem_instance_exits_total":
				p.Exits[label(m, "reason")] += m.GetCounter().GetValue()
			case "tandem_request_duration_seconds":
				h := m.GetHistogram()
				if s.Bounds == nil {
					for _, b := range h.GetBucket() {
						s.Bounds = append(s.Bounds, b.GetUpperBound())
					}
					// The exposition's +Inf bucket is the sample count.
					s.Bounds = append(s.Bounds, math.Inf(1))
				}
				if len(h.GetBucket())+1 == len(s.Bounds) {
					p.Buckets = make([]float64, 0, len(s.Bounds))
					for _, b := range h.GetBucket() {
						p.Buckets = append(p.Buckets, float64(b.GetCumulativeCount()))
					}
					p.Buckets = append(p.Buckets, float64(h.GetSampleCount()))
				}
			case "tandem_instance_start_phase_seconds":
				h := m.GetHistogram()
				if h.GetSampleCount() > 0 {
					p.Phases[label(m, "phase")] = h.GetSampleSum() / float64(h.GetSampleCount())
				}
			}
		}
	}
	if rep != nil {
		for i := range rep.Models {
			mr := &rep.Models[i] // a report is never changed once read
			if p := s.Deps[mr.Model]; p != nil {
				p.Cost, p.Priced = mr.Cost, true
				l := last[mr.Model]
				l.Cost = mr
				last[mr.Model] = l
			}
		}
	}
	return s, last
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// failures are the instance exit reasons that are crashes, not stops.
var failures = []string{"crashed", "oom", "start_failed", "start_timeout"}

// events compares two samples in a row; last is cur's.
func events(prev, cur *sample, last map[string]latest) []Event {
	if prev == nil {
		return nil
	}
	var out []Event
	add := func(name, kind, msg string) {
		out = append(out, Event{At: cur.At, Deployment: name, Kind: kind, Message: msg})
	}
	for _, name := range sortedNames(cur.Deps) {
		c, p := cur.Deps[name], prev.Deps[name]
		if p == nil {
			add(name, "deployed", fmt.Sprintf("deployed revision %s, %s on %s", c.Revision, c.Mode, c.Backend))
			continue
		}
		if c.Revision != p.Revision {
			add(name, "rollout", fmt.Sprintf("revision %s replaces %s", c.Revision, p.Revision))
		}
		switch {
		case c.Desired > p.Desired:
			add(name, "scale_up", fmt.Sprintf("scale up %d → %d instances%s", p.Desired, c.Desired, because(last[name].Reason)))
		case c.Desired < p.Desired:
			add(name, "scale_down", fmt.Sprintf("scale down %d → %d instances%s", p.Desired, c.Desired, because(last[name].Reason)))
		}
		for _, r := range failures {
			if n := c.Exits[r] - p.Exits[r]; n > 0 {
				add(name, "crash", fmt.Sprintf("%g instance(s) ended: %s", n, r))
			}
		}
		if c.LastError != "" && c.LastError != p.LastError {
			add(name, "error", c.LastError)
		}
	}
	for _, name := range sortedNames(prev.Deps) {
		if cur.Deps[name] == nil {
			add(name, "deleted", "deleted")
		}
	}
	return out
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

func sortedNames(m map[string]*point) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// quantile is Prometheus's histogram_quantile over the difference of two
// cumulative bucket counts: linear within a bucket, the last finite bound
// for the +Inf bucket. It returns NaN when no request fell in between.
func quantile(q float64, bounds, from, to []float64) float64 {
	if len(to) == 0 || len(to) != len(bounds) {
		return math.NaN()
	}
	d := make([]float64, len(to))
	for i := range to {
		d[i] = to[i]
		if len(from) == len(to) {
			d[i] -= from[i]
		}
	}
	total := d[len(d)-1] // the +Inf bucket
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lo, below := 0.0, 0.0
	for i, b := range bounds {
		if d[i] >= rank {
			if math.IsInf(b, 1) {
				return lo
			}
			if d[i] == below {
				return b
			}
			return lo + (b-lo)*(rank-below)/(d[i]-below)
		}
		lo, below = b, d[i]
	}
	return lo
}
