package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/problem"
)

// fakeGateway stands in for the gateway: it answers with answer(attempt)
// and records what each attempt carried.
type fakeGateway struct {
	mu       sync.Mutex
	calls    []call
	answer   func(r *http.Request) int
	inFlight atomic.Int32
	maxSeen  atomic.Int32
	block    chan struct{} // when set, attempts wait on it
}

type call struct {
	jobID, tenant, auth, path, body string
	marked                          bool
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-r.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	jc, marked := gateway.JobFrom(r.Context())
	f.mu.Lock()
	f.calls = append(f.calls, call{jobID: r.Header.Get(HeaderJobID), tenant: jc.Tenant, marked: marked,
		auth: r.Header.Get("Authorization"), path: r.URL.RequestURI(), body: string(body)})
	f.mu.Unlock()
	code := http.StatusOK
	if f.answer != nil {
		code = f.answer(r)
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	io.WriteString(w, "answer to "+string(body))
}

func (f *fakeGateway) seen() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// models is a fake deployment table: every name but "nope" exists.
func testConfig(_ testing.TB, dir string, async *manifest.Async) Config {
	return Config{
		DataDir: dir,
		Identify: func(_ context.Context, model string, h http.Header) (string, bool, error) {
			if model == "nope" {
				return "", false, problem.New(http.StatusNotFound, "model_not_found", "model \"nope\" is not deployed")
			}
			return "acme", true, nil
		},
		Lookup: func(model string) (*manifest.Manifest, bool) {
			return &manifest.Manifest{Name: model, Async: async, Scaling: manifest.Scaling{MaxQueue: 100}}, true
		},
		Backoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}
}

func open(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func submit(t *testing.T, m *Manager, model, body string) string {
	t.Helper()
	r := httptest.NewRequest("POST", "/models/"+model+"/predict?x=1", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer secret-key")
	r.Header.Set("X-Api-Key", "secret-key")
	r.Header.Set("Prefer", "respond-async")
	r.Header.Set("X-Custom", "kept")
	id, err := m.Submit(context.Background(), model, r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitFinal polls until job id is final; the limit is a bound against a
// hang, not a timing check.
func waitFinal(t *testing.T, m *Manager, id string) *Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := m.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status.Final() && !strings.HasPrefix(j.Destination, "pending") {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not finished: %+v", id, j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestManager_SubmitRuns(t *testing.T) {
	gw := &fakeGateway{}
	m := open(t, testConfig(t, t.TempDir(), nil))
	m.Start(gw)
	defer m.Close()
	id := submit(t, m, "iris", `{"x":1}`)
	j := waitFinal(t, m, id)
	if j.Status != Succeeded || j.Attempts != 1 || j.Result == nil || j.Result.Status != 200 || j.Result.Body != `answer to {"x":1}` {
		t.Fatalf("job = %+v, result %+v", j, j.Result)
	}
	calls := gw.seen()
	if len(calls) != 1 {
		t.Fatalf("%d attempts, want 1", len(calls))
	}
	c := calls[0]
	if c.jobID != id || !c.marked || c.tenant != "acme" || c.path != "/models/iris/predict?x=1" || c.body != `{"x":1}` {
		t.Errorf("attempt = %+v", c)
	}
	if c.auth != "" {
		t.Errorf("the caller's key reached the attempt: %q", c.auth)
	}
	stored, _ := m.db.get(id)
	raw, _ := json.Marshal(stored)
	if strings.Contains(string(raw), "secret-key") {
		t.Errorf("the stored job holds the caller's key: %s", raw)
	}
	if stored.Request.Header.Get("X-Custom") != "kept" || stored.Request.Header.Get("Prefer") != "" {
		t.Errorf("stored headers = %v", stored.Request.Header)
	}
}

func TestManager_RetriesThenDeadLetter(t *testing.T) {
	var posts []Job
	var mu sync.Mutex
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var j Job
		json.NewDecoder(r.Body).Decode(&j)
		mu.Lock()
		posts = append(posts, j)
		mu.Unlock()
	}))
	defer dest.Close()
	retries := 2
	gw := &fakeGateway{answer: func(r *http.Request) int {
		if strings.Contains(r.URL.Path, "/fail") {
			return 500
		}
		return 200
	}}
	cfg := testConfig(t, t.TempDir(), &manifest.Async{Retries: &retries, OnFailure: dest.URL + "/failed", OnSuccess: dest.URL + "/ok"})
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	m := open(t, cfg)
	m.Start(gw)
	defer m.Close()
	r := httptest.NewRequest("POST", "/models/iris/fail", strings.NewReader("x"))
	bad, err := m.Submit(context.Background(), "iris", r)
	if err != nil {
		t.Fatal(err)
	}
	good := submit(t, m, "iris", "y")
	j := waitFinal(t, m, bad)
	if j.Status != Failed || j.Attempts != 3 || j.Result.Status != 500 || !strings.Contains(j.Reason, "3 attempts failed") {
		t.Fatalf("failing job = %+v", j)
	}
	if !strings.HasPrefix(j.Destination, "delivered ") {
		t.Errorf("destination = %q", j.Destination)
	}
	waitFinal(t, m, good)
	failed, _ := m.List(Filter{Status: Failed})
	if len(failed) != 1 || failed[0].ID != bad {
		t.Errorf("dead-letter list = %+v, want only %s", failed, bad)
	}
	for name, want := range map[string]float64{
		`tandem_jobs_accepted_total{model="iris"}`:                    2,
		`tandem_jobs_finished_total{model="iris",status="failed"}`:    1,
		`tandem_jobs_finished_total{model="iris",status="succeeded"}`: 1,
		`tandem_job_retries_total{model="iris"}`:                      2,
		`tandem_jobs_pending`:                                         0,
	} {
		if got := gather(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 2 {
		t.Fatalf("%d destination posts, want 2", len(posts))
	}
	for _, p := range posts {
		want := map[string]Status{bad: Failed, good: Succeeded}[p.ID]
		if want == "" || p.Status != want || p.Result == nil {
			t.Errorf("posted %+v", p)
		}
	}
}

func TestManager_SubmitRefusals(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), nil)
	cfg.MaxBody = 10
	m := open(t, cfg)
	defer m.Close()
	tests := []struct {
		name, model, body string
		status            int
	}{
		{"unknown model", "nope", "x", 404},
		{"body over the limit", "iris", strings.Repeat("x", 11), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/models/"+tt.model+"/p", strings.NewReader(tt.body))
			_, err := m.Submit(context.Background(), tt.model, r)
			var pe *problem.Error
			if !errors.As(err, &pe) || pe.Status != tt.status {
				t.Fatalf("err = %v, want a %d", err, tt.status)
			}
		})
	}
	t.Run("body over the limit, length unknown", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/models/iris/p", io.MultiReader(strings.NewReader(strings.Repeat("x", 20))))
		r.ContentLength = -1
		if _, err := m.Submit(context.Background(), "iris", r); problem.From(err).Status != 413 {
			t.Fatalf("err = %v, want a 413", err)
		}
	})
	if all, _ := m.List(Filter{}); len(all) != 0 {
		t.Errorf("refused requests were stored: %+v", all)
	}
}

// TestManager_Restart: jobs queued, and one stored as running (its attempt
// cut by a crash), all run after the store is opened again.
func TestManager_Restart(t *testing.T) {
	dir := t.TempDir()
	m := open(t, testConfig(t, dir, nil))
	ids := []string{submit(t, m, "a", "1"), submit(t, m, "b", "2")}
	j, _ := m.db.get(ids[1])
	j.Status, j.Attempts = Running, 1
	m.db.put(j)
	m.Close() // never started: nothing ran

	gw := &fakeGateway{}
	m2 := open(t, testConfig(t, dir, nil))
	m2.Start(gw)
	defer m2.Close()
	for i, id := range ids {
		j := waitFinal(t, m2, id)
		if j.Status != Succeeded || j.Attempts != i+1 {
			t.Errorf("job %s = %s after %d attempts", id, j.Status, j.Attempts)
		}
	}
	if n := len(gw.seen()); n != 2 {
		t.Errorf("%d attempts after the restart, want 2", n)
	}
}

func TestManager_DamagedRecordSkipped(t *testing.T) {
	dir := t.TempDir()
	m := open(t, testConfig(t, dir, nil))
	id := submit(t, m, "a", "1")
	m.Close()
	b, err := bolt.Open(filepath.Join(dir, File), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte("0000000000000000deadbeef"), []byte("{not json"))
	})
	b.Close()

	m2 := open(t, testConfig(t, dir, nil)) // no error: the record is skipped
	m2.Start(&fakeGateway{})
	defer m2.Close()
	if j := waitFinal(t, m2, id); j.Status != Succeeded {
		t.Errorf("the good job = %s", j.Status)
	}
	all, err := m2.List(Filter{})
	if err != nil || len(all) != 1 {
		t.Errorf("List = %d jobs, %v; want the 1 good one", len(all), err)
	}
	if _, err := m2.Get("0000000000000000deadbeef"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Get of the damaged record: %v", err)
	}
}

// TestManager_PerModelBound: a backlog never has more attempts of one
// deployment in flight than the bound.
func TestManager_PerModelBound(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), nil)
	cfg.PerModel = 3
	gw := &fakeGateway{block: make(chan struct{})}
	m := open(t, cfg)
	m.Start(gw)
	defer m.Close()
	var ids []string
	for range 20 {
		ids = append(ids, submit(t, m, "a", "x"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for gw.inFlight.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gw.block)
	for _, id := range ids {
		waitFinal(t, m, id)
	}
	if got := gw.maxSeen.Load(); got != 3 {
		t.Errorf("at most %d attempts in flight, want 3", got)
	}
}

func TestManager_Prune(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cfg := testConfig(t, t.TempDir(), nil)
	cfg.Now = func() time.Time { return now }
	m := open(t, cfg)
	defer m.Close()
	done := &Job{ID: newID(now), Model: "a", Status: Succeeded, UpdatedAt: now.Add(-25 * time.Hour)}
	recent := &Job{ID: newID(now.Add(1)), Model: "a", Status: Failed, UpdatedAt: now.Add(-time.Hour)}
	old := &Job{ID: newID(now.Add(2)), Model: "a", Status: Queued, UpdatedAt: now.Add(-48 * time.Hour)}
	for _, j := range []*Job{done, recent, old} {
		m.db.put(j)
	}
	n, err := m.db.prune(now.Add(-24 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	all, _ := m.List(Filter{})
	if len(all) != 2 {
		t.Errorf("%d jobs left, want 2 (a recent failure and a queued job)", len(all))
	}
}

// gather reads one series, written as name{label="value",...}, from reg.
func gather(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				name += "{" + strings.Join(ls, ",") + "}"
			}
			if name != series {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
