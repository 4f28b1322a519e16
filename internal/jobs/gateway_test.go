package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/jobs"
	"tandem/internal/manifest"
	"tandem/internal/store"
	"tandem/internal/tenant"
)

// seen records what the model's instances received.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Clone(context.Background()))
	s.mu.Unlock()
	io.WriteString(w, "done "+r.URL.Path)
}

func (s *seen) byJob(id string) []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*http.Request
	for _, r := range s.reqs {
		if r.Header.Get(jobs.HeaderJobID) == id {
			out = append(out, r)
		}
	}
	return out
}

// TestAsync_ThroughGateway wires the real gateway, tenant stage, jobs
// manager and controller (over the fake backend), as server.Run does.
func TestAsync_ThroughGateway(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	model := &seen{}
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(model)},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	mf, err := manifest.Parse([]byte("name: echo\nruntime: {command: [x]}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), mf); err != nil {
		t.Fatal(err)
	}
	reg, err := tenant.Open(st, cost.DefaultPrices(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range []tenant.Tenant{{Name: "acme", Models: []string{"echo"}}, {Name: "other"}} {
		if _, err := reg.Create(tn); err != nil {
			t.Fatal(err)
		}
	}
	_, acme, _ := reg.CreateKey("acme", 0)
	_, other, _ := reg.CreateKey("other", 0)

	gw := gateway.New(c, nil)
	gw.Use(tenant.NewStage(reg, nil))
	m, err := jobs.Open(jobs.Config{DataDir: dir, Identify: gw.Identify, MaxBody: 1 << 10,
		Lookup: func(name string) (*manifest.Manifest, bool) {
			d, ok := c.Lookup(name)
			if !ok {
				return nil, false
			}
			return d.Manifest(), true
		}})
	if err != nil {
		t.Fatal(err)
	}
	gw.MountJobs(m)
	m.Start(gw)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)

	send := func(method, path, key, body string, h ...string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	async := []string{"Prefer", "respond-async"}

	// Refusals come before anything is stored.
	refusals := []struct {
		name, path, key, body string
		status                int
	}{
		{"no key", "/models/echo/a", "", "x", 401},
		{"bad key", "/models/echo/a", "tdm_nope_nope", "x", 401},
		{"unknown model", "/models/chat/a", acme, "x", 404},
		{"unknown model by the async path", "/v1/async/nope/a", other, "x", 404},
		{"body over the limit", "/models/echo/a", acme, strings.Repeat("x", 2<<10), 413},
	}
	for _, tt := range refusals {
		if code, _, body := send("POST", tt.path, tt.key, tt.body, async...); code != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.status)
		}
	}
	if all, _ := m.List(jobs.Filter{}); len(all) != 0 {
		t.Fatalf("refused requests were stored: %d jobs", len(all))
	}

	// Accepted: 202, the id in the header and the body.
	code, h, body := send("POST", "/models/echo/predict?q=1", acme, `{"x": 1}`, async...)
	id := h.Get(jobs.HeaderJobID)
	var acc struct {
		ID        string `json:"id"`
		StatusURL string `json:"status_url"`
	}
	if err := json.Unmarshal([]byte(body), &acc); code != 202 || id == "" || err != nil || acc.ID != id || acc.StatusURL != srv.URL+"/v1/jobs/"+id {
		t.Fatalf("accept: %d %q (header id %q)", code, body, id)
	}
	if got := h.Get("Preference-Applied"); got != "respond-async" {
		t.Errorf("Preference-Applied: %q, want respond-async", got)
	}
	code, h, _ = send("POST", "/v1/async/echo/other/path", acme, `{}`)
	id2 := h.Get(jobs.HeaderJobID)
	if code != 202 || id2 == "" {
		t.Fatalf("POST /v1/async: %d", code)
	}

	// Both run as acme, with the job id and without the key.
	for _, want := range []struct{ id, path string }{{id, "/predict"}, {id2, "/other/path"}} {
		deadline := time.Now().Add(20 * time.Second)
		var j *jobs.Job
		for {
			if j, err = m.Get(want.id); err == nil && j.Status.Final() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s not finished: %+v %v", want.id, j, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if j.Status != jobs.Succeeded || j.Tenant != "acme" || j.Result.Body != "done "+want.path {
			t.Errorf("job %s = %s as %q, answer %+v", want.id, j.Status, j.Tenant, j.Result)
		}
		got := model.byJob(want.id)
		if len(got) != 1 || got[0].URL.Path != want.path || got[0].Header.Get("Authorization") != "" || got[0].Header.Get("Prefer") != "" {
			t.Errorf("the instance got %d requests for job %s: %+v", len(got), want.id, got)
		}
	}
	if tn, _ := reg.Get("acme"); tn.Usage.Requests != 2 {
		t.Errorf("acme was metered %d requests, want 2 (its two jobs)", tn.Usage.Requests)
	}

	// The status route: the submitting tenant only.
	if code, _, body := send("GET", "/v1/jobs/"+id, acme, ""); code != 200 || !strings.Contains(body, `"status":"succeeded"`) {
		t.Errorf("GET own job: %d %s", code, body)
	}
	if code, _, _ := send("GET", "/v1/jobs/"+id, other, ""); code != 404 {
		t.Errorf("GET another tenant's job: %d, want 404", code)
	}
	if code, _, _ := send("GET", "/v1/jobs/"+id, "", ""); code != 401 {
		t.Errorf("GET without a key: %d, want 401", code)
	}
	if code, _, _ := send("GET", "/v1/jobs/nonsense", acme, ""); code != 404 {
		t.Errorf("GET an unknown id: %d, want 404", code)
	}
}
