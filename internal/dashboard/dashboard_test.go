package dashboard_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/api"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/dashboard"
	"tandem/internal/manifest"
)

// fakeDeployments returns whatever statuses the test sets.
type fakeDeployments struct{ sts []*controller.Status }

func (f *fakeDeployments) List() []*controller.Status { return f.sts }

type fakeCosts struct{ rep *cost.Report }

func (f *fakeCosts) Report(string, time.Time, time.Time) (*cost.Report, error) { return f.rep, nil }

func st(name, rev string, desired, ready, starting int) *controller.Status {
	return &controller.Status{Name: name, Mode: manifest.Serverless, Backend: "process", Revision: rev, Desired: desired, Ready: ready, Starting: starting}
}

func TestDashboard_Overview(t *testing.T) {
	deps := &fakeDeployments{}
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_requests_total"}, []string{"model", "protocol", "code"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_request_duration_seconds", Buckets: []float64{.01, .1, 1}}, []string{"model"})
	exits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_instance_exits_total"}, []string{"model", "reason"})
	phases := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_instance_start_phase_seconds"}, []string{"model", "phase"})
	reg.MustRegister(reqs, lat, exits, phases)
	costs := &fakeCosts{rep: &cost.Report{Currency: "USD", Models: []cost.ModelReport{{Model: "a", Mode: manifest.Serverless, Cost: 0.00012,
		CostAs: map[manifest.Mode]float64{manifest.Serverless: 0.00012, manifest.Dedicated: 0.5}}}}}
	d := dashboard.New(dashboard.Config{Deployments: deps, Costs: costs, Metrics: reg, Keep: 4})
	t0 := time.Unix(1000, 0)

	d.Sample(t0) // nothing deployed
	deps.sts = []*controller.Status{st("a", "r1", 0, 0, 0)}
	d.Sample(t0.Add(time.Second))
	deps.sts = []*controller.Status{st("a", "r1", 2, 1, 1)}
	for range 10 {
		reqs.WithLabelValues("a", "http", "200").Inc()
		lat.WithLabelValues("a").Observe(0.005)
	}
	phases.WithLabelValues("a", "exec").Observe(0.2)
	d.Sample(t0.Add(2 * time.Second))
	deps.sts = []*controller.Status{st("a", "r2", 1, 1, 0)}
	exits.WithLabelValues("a", "crashed").Inc()
	reqs.WithLabelValues("a", "http", "503").Inc()
	lat.WithLabelValues("a").Observe(0.5)
	d.Sample(t0.Add(3 * time.Second))
	deps.sts = nil
	d.Sample(t0.Add(4 * time.Second)) // the ring (4) drops the first sample

	o := d.Overview("")
	if len(o.Deployments) != 0 {
		t.Fatalf("deleted deployment still listed: %+v", o.Deployments)
	}
	var kinds []string
	for i := len(o.Events) - 1; i >= 0; i-- {
		kinds = append(kinds, o.Events[i].Kind)
	}
	want := "deployed scale_up rollout scale_down crash deleted"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("events %q, want %q", got, want)
	}

	// One sample back, before the deletion.
	deps.sts = []*controller.Status{st("a", "r2", 1, 1, 0)}
	d.Sample(t0.Add(5 * time.Second))
	o = d.Overview("a")
	if len(o.Deployments) != 1 {
		t.Fatalf("deployments %+v", o.Deployments)
	}
	v := o.Deployments[0]
	if v.Revision != "r2" || len(v.Traffic) != 1 || v.Traffic[0].Percent != 100 || v.Requests != 11 {
		t.Errorf("view %+v", v)
	}
	if len(v.Series.T) != 4 || v.Series.T[0] != 1002 {
		t.Errorf("series times %v, want the last 4 samples from t=1002", v.Series.T)
	}
	// 1002: 1 ready + 1 starting; 1004: not deployed (null).
	if *v.Series.Ready[0] != 1 || *v.Series.Starting[0] != 1 || v.Series.Ready[2] != nil {
		t.Errorf("ready %v starting %v", v.Series.Ready, v.Series.Starting)
	}
	if v.Cost == nil || v.Cost.Text != "$0.000120" || v.Cost.AsText["dedicated"] != "$0.5000" || o.Currency != "USD" {
		t.Errorf("cost %+v currency %q", v.Cost, o.Currency)
	}
	if math.Abs(v.Phases["exec"]-200) > 1e-9 {
		t.Errorf("phases %v", v.Phases)
	}
	for _, e := range o.Events {
		if e.Deployment != "a" {
			t.Errorf("event of another deployment: %+v", e)
		}
	}
}

func TestDashboard_latency(t *testing.T) {
	deps := &fakeDeployments{sts: []*controller.Status{st("a", "r1", 1, 1, 0)}}
	reg := prometheus.NewRegistry()
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tandem_request_duration_seconds", Buckets: []float64{.01, .1, 1}}, []string{"model"})
	reg.MustRegister(lat)
	d := dashboard.New(dashboard.Config{Deployments: deps, Metrics: reg})
	t0 := time.Unix(1000, 0)
	lat.WithLabelValues("a").Observe(5) // before the window: not counted
	d.Sample(t0)
	for range 99 {
		lat.WithLabelValues("a").Observe(0.05) // (0.01, 0.1]
	}
	lat.WithLabelValues("a").Observe(0.5)
	d.Sample(t0.Add(time.Second))
	v := d.Overview("a").Deployments[0]
	if v.Rate != 0 {
		t.Errorf("rate %v without tandem_requests_total", v.Rate)
	}
	// 50th of 100 in (10ms, 100ms] holding 99: 10 + 90*50/99 ms.
	if v.P50 == nil || math.Abs(*v.P50-(10+90*50.0/99)) > 1e-6 {
		t.Errorf("p50 %v", v.P50)
	}
	if v.P99 == nil || math.Abs(*v.P99-100) > 1e-6 {
		t.Errorf("p99 %v, want 100 (the 99th request is the last in its bucket)", v.P99)
	}
	d.Sample(t0.Add(2 * time.Second))
	if v := d.Overview("a").Deployments[0]; v.P50 == nil {
		t.Error("p50 of the last 5 s lost after a quiet second")
	}
}

// TestDashboard_behindProtect checks the browser login: ?token= on a page
// sets an HttpOnly, SameSite=Strict cookie that reads /ui with; without it,
// or with a wrong one, 401; the cookie opens nothing outside /ui.
func TestDashboard_behindProtect(t *testing.T) {
	const token = "0123456789abcdef0123"
	mux := http.NewServeMux()
	d := dashboard.Start(t.Context(), dashboard.Config{Deployments: &fakeDeployments{}})
	d.Mount(mux.Handle)
	mux.HandleFunc("GET /v1/deployments", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("[]")) })
	srv := httptest.NewServer(api.Protect(mux, api.Access{Token: token}))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookie *http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("/ui/", nil); r.StatusCode != 401 {
		t.Errorf("/ui/ without a token: %d", r.StatusCode)
	}
	if r := get("/ui/?token=wrong", nil); r.StatusCode != 401 {
		t.Errorf("/ui/ with a wrong token: %d", r.StatusCode)
	}
	r := get("/ui/?token="+token, nil)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/" {
		t.Fatalf("login: %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, x := range r.Cookies() {
		if x.Name == dashboard.TokenCookie {
			c = x
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui" {
		t.Fatalf("cookie %+v", c)
	}
	for _, p := range []string{"/ui/", "/ui/api/overview", "/ui/d/x", "/ui/assets/uPlot.js", "/ui/assets/app.js"} {
		if r := get(p, c); r.StatusCode != 200 {
			t.Errorf("%s with the cookie: %d", p, r.StatusCode)
		} else if r.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s has no Content-Security-Policy", p)
		}
	}
	if r := get("/v1/deployments", c); r.StatusCode != 401 {
		t.Errorf("the dashboard cookie opened /v1/deployments: %d", r.StatusCode)
	}
	if r := get("/v1/deployments?token="+token, nil); r.StatusCode != 401 {
		t.Errorf("?token= opened /v1/deployments: %d", r.StatusCode)
	}
	// A write under /ui with the cookie is no read.
	req, _ := http.NewRequest("POST", srv.URL+"/ui/api/overview", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(c)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("POST with the cookie: %d", resp.StatusCode)
	}
}

func TestDashboard_overviewJSON(t *testing.T) {
	d := dashboard.New(dashboard.Config{Deployments: &fakeDeployments{sts: []*controller.Status{st("a", "r1", 0, 0, 0)}}})
	d.Sample(time.Unix(1, 0))
	mux := http.NewServeMux()
	d.Mount(mux.Handle)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/api/overview", nil))
	var o map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil {
		t.Fatal(err)
	}
	deps := o["deployments"].([]any)
	if len(deps) != 1 || deps[0].(map[string]any)["p50_ms"] != nil {
		t.Errorf("%s", rec.Body)
	}
}
