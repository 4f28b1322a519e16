package dashboard

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/manifest"
)

// TestShare: an unchanged deployment's point is the previous sample's; a
// changed one is new and holds the new values; the autoscaler's reason
// and a cost line with the same cost, which change while a deployment is
// idle, stop nothing.
func TestShare(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_requests_total"}, []string{"model", "protocol", "code"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_request_duration_seconds", Buckets: []float64{.01, .1, 1}}, []string{"model"})
	reg.MustRegister(reqs, lat)
	sts := func(readyB int, reason string) []*controller.Status {
		var out []*controller.Status
		for i, n := range []string{"a", "b", "c"} {
			ready := []int{0, readyB, 0}[i]
			out = append(out, &controller.Status{Name: n, Mode: manifest.Serverless, Backend: "process", Revision: "r1", Ready: ready, Reason: reason})
		}
		return out
	}
	rep := &cost.Report{Models: []cost.ModelReport{{Model: "a", Cost: 1}, {Model: "b"}, {Model: "c"}}}
	now := time.Now()
	mfs, _ := reg.Gather()
	prev, _ := build(now, sts(0, "idle 1s -> 0"), mfs, rep)

	reqs.WithLabelValues("c", "http", "200").Inc()
	lat.WithLabelValues("c").Observe(0.05)
	mfs, _ = reg.Gather()
	rep2 := &cost.Report{Models: []cost.ModelReport{{Model: "a", Cost: 1, Usage: cost.Usage{Requests: 1}}, {Model: "b"}, {Model: "c"}}}
	cur, last := build(now.Add(time.Second), sts(1, "idle 2s -> 0"), mfs, rep2)
	share(prev, cur)
	if cur.Deps["a"] != prev.Deps["a"] {
		t.Error("a did not change but its point is a new one")
	}
	if cur.Deps["b"] == prev.Deps["b"] || cur.Deps["b"].Ready != 1 {
		t.Errorf("b changed (ready 0 -> 1) but its point is %+v", cur.Deps["b"])
	}
	if cur.Deps["c"] == prev.Deps["c"] || cur.Deps["c"].Requests != 1 {
		t.Errorf("c changed (one request) but its point is %+v", cur.Deps["c"])
	}
	if l := last["a"]; l.Reason != "idle 2s -> 0" || l.Cost != &rep2.Models[0] {
		t.Errorf("latest of a = %+v, want the newest reason and cost line", l)
	}
}

// TestShare_history bounds what the dashboard's history holds for 1,000
// deployments at zero: about 650 bytes each a sample without share, a map
// entry with it.
func TestShare_history(t *testing.T) {
	if testing.Short() {
		t.Skip("samples 1,000 deployments 300 times")
	}
	const n, keep = 1000, 300
	var sts []*controller.Status
	for i := range n {
		sts = append(sts, &controller.Status{Name: fmt.Sprintf("m%04d", i), Mode: manifest.Serverless, Backend: "process", Revision: "r1",
			Reason: fmt.Sprintf("idle %ds -> 0", i)})
	}
	d := New(Config{Deployments: listed(sts), Costs: &agingCosts{sts: sts}, Keep: keep})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	now := time.Now()
	for i := range keep {
		d.Sample(now.Add(time.Duration(i) * time.Second))
	}
	per := float64(heap()-before) / n
	t.Logf("history of %d samples: %.0f bytes a deployment", keep, per)
	if per > 50<<10 {
		t.Errorf("the history holds %.0f KB a deployment at zero, want under 50 KB", per/1024)
	}
	runtime.KeepAlive(d)
}

type listed []*controller.Status

func (l listed) List() []*controller.Status { return l }

// agingCosts reports a new cost line for every deployment each time, as
// the meter does: what a dedicated deployment would have cost grows with
// the deployment's age, while the cost itself stays 0 at zero.
type agingCosts struct {
	sts   []*controller.Status
	calls float64
}

func (a *agingCosts) Report(string, time.Time, time.Time) (*cost.Report, error) {
	a.calls++
	rep := &cost.Report{}
	for _, st := range a.sts {
		rep.Models = append(rep.Models, cost.ModelReport{Model: st.Name, CostAs: map[manifest.Mode]float64{manifest.Dedicated: a.calls}})
	}
	return rep, nil
}
