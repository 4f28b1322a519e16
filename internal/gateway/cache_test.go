package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/inference"
	"tandem/internal/metrics"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// cacheDoors is a gateway with its pass-through, v2 REST and OpenAI doors
// over a controller with the fake backend, whose instances count the
// requests they answer (X-Served: n on every answer, "#n" in pass-through
// bodies).
type cacheDoors struct {
	url     string
	c       *controller.Controller
	fb      *fake.Backend
	metrics *metrics.Metrics
	meter   *cost.Meter
	served  atomic.Int64
}

// tenantStage names the tenant from X-Tenant and refuses X-Deny.
var tenantStage = gateway.StageFunc(func(_ context.Context, ex *gateway.Exchange) error {
	if ex.Header.Get("X-Deny") != "" {
		return problem.New(http.StatusForbidden, "forbidden", "not for you")
	}
	ex.Tenant = ex.Header.Get("X-Tenant")
	return nil
})

func newCacheDoors(t testing.TB, yaml string) *cacheDoors {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	meter, err := cost.Open(dir, cost.DefaultPrices(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meter.Close(time.Now()) })
	d := &cacheDoors{metrics: metrics.New(), meter: meter}
	d.fb = fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := d.served.Add(1)
		w.Header().Set("X-Served", fmt.Sprint(n))
		if cc := r.Header.Get("X-Answer-Cache-Control"); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		if r.Header.Get("X-Delay") != "" {
			time.Sleep(time.Millisecond)
		}
		switch {
		case r.URL.Path == "/cut": // dies in the middle of its answer
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "the first bytes")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case strings.HasSuffix(r.URL.Path, "/infer"):
			v2Instance(w, r)
		case strings.HasPrefix(r.URL.Path, "/v1/"):
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"object":"chat.completion","served":%d,"usage":{"prompt_tokens":1,"completion_tokens":1}}`, n)
		default:
			fmt.Fprintf(w, "%s %s for %q #%d", r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), n)
		}
	}))
	d.c = controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": d.fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: d.metrics, Meter: meter})
	if err := d.c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.c.Shutdown(context.Background()) })
	apply(t, d.c, yaml)
	gw := gateway.New(d.c, nil)
	gw.Use(tenantStage)
	gw.MountOpenAI(nil)
	v2 := inference.NewService(gw.V2Models(), inference.Options{Front: gw})
	gw.Handle("/v2/", v2.Handler())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	d.url = srv.URL
	return d
}

// do sends a request with headers given as name, value pairs.
func (d *cacheDoors) do(t testing.TB, method, path, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, d.url+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// expect checks an answer's status, X-Tandem-Cache and, when want is not
// empty, its body.
func expect(t *testing.T, what string, resp *http.Response, body, cache, want string) {
	t.Helper()
	if resp.StatusCode != 200 || resp.Header.Get(gateway.HeaderCache) != cache || want != "" && body != want {
		t.Fatalf("%s: %d %s=%q %q, want 200 %q %q", what, resp.StatusCode, gateway.HeaderCache, resp.Header.Get(gateway.HeaderCache), body, cache, want)
	}
}

func (d *cacheDoors) cacheCount(t *testing.T, result string) float64 {
	return sample(t, d.metrics, "tandem_cache_requests_total", map[string]string{"model": "m", "result": result})
}

// The test 4 at the gateway: the second identical v2 infer (its
// JSON written with other key order and whitespace) is a hit, does not wake
// the model that went to zero in between, and costs no instance time; a
// new revision misses.
func TestCache_V2HitDoesNotWakeModel(t *testing.T) {
	d := newCacheDoors(t, "name: m\nruntime: {command: [x]}\nscaling: {idle_timeout: 200ms, stable_window: 1s, panic_window: 200ms}\ncache: {ttl: 5m, max_bytes: 1Mi}\n")
	resp, first := d.do(t, "POST", "/v2/models/m/infer", inferBody)
	expect(t, "first", resp, first, "miss", "")
	if resp.Header.Get(gateway.HeaderColdStart) != "true" {
		t.Fatalf("first request did not wake the model: %v", resp.Header)
	}
	// Wait for the model to go to zero.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(strings.Join(d.fb.Calls(), " "), "stop ") {
		if time.Now().After(deadline) {
			t.Fatalf("the model did not go to zero: %v", d.fb.Calls())
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls := d.fb.Calls()
	variant := "{\n  \"inputs\": [{\"data\": [1.5, 2.5], \"shape\": [1, 2], \"datatype\": \"FP32\", \"name\": \"x\"}],\n  \"id\": \"r1\"\n}"
	resp, second := d.do(t, "POST", "/v2/models/m/infer", variant)
	expect(t, "second", resp, second, "hit", first)
	if resp.Header.Get(gateway.HeaderColdStart) != "false" || resp.Header.Get("Age") == "" {
		t.Errorf("hit headers: %v", resp.Header)
	}
	if got := d.fb.Calls(); len(got) != len(calls) {
		t.Fatalf("the hit woke the model: %v, before %v", got, calls)
	}
	if n := d.served.Load(); n != 1 {
		t.Fatalf("instances answered %d requests, want 1", n)
	}
	if hit, miss := d.cacheCount(t, "hit"), d.cacheCount(t, "miss"); hit != 1 || miss != 1 {
		t.Errorf("tandem_cache_requests_total hit %v miss %v, want 1 and 1", hit, miss)
	}
	if got := requests(t, d.metrics, "m", "v2", "200"); got != 2 {
		t.Errorf("tandem_requests_total = %v, want 2 (a hit is answered too)", got)
	}
	now := time.Now()
	d.meter.Flush(now)
	rep, err := d.meter.Report("m", now.Add(-time.Hour), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if u := rep.Models[0].Usage; u.Requests != 1 || u.CacheHits != 1 {
		t.Errorf("cost meter: %d requests, %d cache hits, want 1 and 1", u.Requests, u.CacheHits)
	}

	// A new revision misses, and the old revision's entries are gone.
	dep, _ := d.c.Lookup("m")
	apply(t, d.c, "name: m\nruntime: {command: [x], env: {V: '2'}}\nscaling: {idle_timeout: 1h}\ncache: {ttl: 5m, max_bytes: 1Mi}\n")
	if s := dep.Cache.Stats(); s.Entries != 0 {
		t.Errorf("after redeploy the cache holds %+v", s)
	}
	resp, body := d.do(t, "POST", "/v2/models/m/infer", inferBody)
	expect(t, "new revision", resp, body, "miss", "")
	resp, body = d.do(t, "POST", "/v2/models/m/infer", inferBody)
	expect(t, "new revision again", resp, body, "hit", "")

	// Deleting the deployment frees its entries at once.
	if err := d.c.Delete(context.Background(), "m"); err != nil {
		t.Fatal(err)
	}
	if s := dep.Cache.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("after delete the cache holds %+v", s)
	}
}

// One tenant never gets another's answer; without tenants, callers with
// other credentials do not share answers either.
func TestCache_CallersApart(t *testing.T) {
	d := newCacheDoors(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\ncache: {}\n")
	resp, a := d.do(t, "GET", "/models/m/x", "", "X-Tenant", "a")
	expect(t, "tenant a", resp, a, "miss", "")
	resp, b := d.do(t, "GET", "/models/m/x", "", "X-Tenant", "b")
	expect(t, "tenant b", resp, b, "miss", "")
	if a == b {
		t.Fatalf("tenant b got tenant a's answer %q", a)
	}
	resp, body := d.do(t, "GET", "/models/m/x", "", "X-Tenant", "a")
	expect(t, "tenant a again", resp, body, "hit", a)
	resp, body = d.do(t, "GET", "/models/m/x", "", "X-Tenant", "b")
	expect(t, "tenant b again", resp, body, "hit", b)

	resp, k1 := d.do(t, "GET", "/models/m/y", "", "Authorization", "Bearer one")
	expect(t, "key one", resp, k1, "miss", "")
	resp, k2 := d.do(t, "GET", "/models/m/y", "", "Authorization", "Bearer two")
	expect(t, "key two", resp, k2, "miss", "")
	resp, anon := d.do(t, "GET", "/models/m/y", "")
	expect(t, "anonymous", resp, anon, "miss", "")
	resp, body = d.do(t, "GET", "/models/m/y", "", "Authorization", "Bearer one")
	expect(t, "key one again", resp, body, "hit", k1)

	// Admission still applies to a cached answer.
	resp, _ = d.do(t, "GET", "/models/m/x", "", "X-Tenant", "a", "X-Deny", "1")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused caller got %d", resp.StatusCode)
	}
}

// What is cacheable, and what the client and the instance say about it.
func TestCache_Rules(t *testing.T) {
	d := newCacheDoors(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\nopenai: {}\ncache: {paths: [/predict]}\n")
	tests := []struct {
		name         string
		method, path string
		body         string
		header       []string
		first, again string // X-Tandem-Cache of the first and the second request
	}{
		{"get", "GET", "/models/m/get?q=1", "", nil, "miss", "hit"},
		{"get other query", "GET", "/models/m/get?q=2", "", nil, "miss", "hit"},
		{"post to a listed path", "POST", "/models/m/predict", `{"a": 1, "b": 2}`, nil, "miss", "hit"},
		{"post to another path", "POST", "/models/m/other", `{"a": 1}`, nil, "", ""},
		{"head", "HEAD", "/models/m/get?q=3", "", nil, "", ""},
		{"client no-cache", "GET", "/models/m/fresh", "", []string{"Cache-Control", "no-cache"}, "bypass", "bypass"},
		{"client no-store", "GET", "/models/m/fresh2", "", []string{"Cache-Control", "max-age=0, no-store"}, "bypass", "bypass"},
		{"instance no-store", "GET", "/models/m/ns", "", []string{"X-Answer-Cache-Control", "no-store"}, "miss", "miss"},
		{"instance private", "GET", "/models/m/pv", "", []string{"X-Answer-Cache-Control", "private, max-age=60"}, "miss", "miss"},
		{"instance max-age 0", "GET", "/models/m/ma", "", []string{"X-Answer-Cache-Control", "max-age=0"}, "miss", "miss"},
		{"openai temperature 0", "POST", "/v1/chat/completions", `{"model": "m", "temperature": 0, "messages": []}`, nil, "miss", "hit"},
		{"openai temperature 0.7", "POST", "/v1/chat/completions", `{"model": "m", "temperature": 0.7, "messages": []}`, nil, "", ""},
		{"openai no temperature", "POST", "/v1/chat/completions", `{"model": "m", "messages": []}`, nil, "", ""},
		{"openai streamed", "POST", "/v1/chat/completions", `{"model": "m", "temperature": 0, "stream": true}`, nil, "", ""},
		{"openai embeddings", "POST", "/v1/embeddings", `{"model": "m", "input": "x"}`, nil, "miss", "hit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := d.served.Load()
			resp, first := d.do(t, tt.method, tt.path, tt.body, tt.header...)
			resp2, again := d.do(t, tt.method, tt.path, tt.body, tt.header...)
			if got := resp.Header.Get(gateway.HeaderCache); resp.StatusCode != 200 || got != tt.first {
				t.Fatalf("first: %d %s %q, want %q", resp.StatusCode, gateway.HeaderCache, got, tt.first)
			}
			if got := resp2.Header.Get(gateway.HeaderCache); resp2.StatusCode != 200 || got != tt.again {
				t.Fatalf("again: %d %s %q, want %q", resp2.StatusCode, gateway.HeaderCache, got, tt.again)
			}
			wantServed := int64(2)
			if tt.again == "hit" {
				wantServed = 1
				if again != first || resp2.Header.Get("X-Served") != resp.Header.Get("X-Served") {
					t.Fatalf("hit %q %v differs from %q %v", again, resp2.Header, first, resp.Header)
				}
			}
			if n := d.served.Load() - before; n != wantServed {
				t.Fatalf("instances answered %d requests, want %d", n, wantServed)
			}
		})
	}
}

// An answer that is not a success is never kept.
func TestCache_OnlySuccess(t *testing.T) {
	d := newCacheDoors(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\ncache: {}\n")
	for range 2 {
		resp, body := d.do(t, "POST", "/v2/models/m/infer", `{"inputs": []}`)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(gateway.HeaderCache) != "miss" {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
	}
	if n := d.served.Load(); n != 2 {
		t.Fatalf("instances answered %d, want 2", n)
	}
}

// An answer cut short by the instance is never kept; identical misses at
// once all go to instances, and what they keep is then served.
func TestCache_CutAndConcurrent(t *testing.T) {
	d := newCacheDoors(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\ncache: {}\n")
	for i := range 2 {
		// The gateway cuts the client's connection too: before or after
		// the head, the client sees an error, never a whole answer.
		resp, err := http.Get(d.url + "/models/m/cut")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := resp.Header.Get(gateway.HeaderCache); got != "miss" {
				t.Fatalf("cut answer %d: %s %q, want miss", i, gateway.HeaderCache, got)
			}
		}
		if err == nil {
			t.Fatalf("cut answer %d looked whole", i)
		}
	}
	if n := d.served.Load(); n != 2 {
		t.Fatalf("instances answered %d, want 2 (the cut answer must not be kept)", n)
	}

	const n = 16
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := d.do(t, "POST", "/v2/models/m/infer", inferBody)
			if resp.StatusCode != 200 {
				t.Errorf("%d: %d %s", i, resp.StatusCode, body)
			}
			bodies[i] = body
		}()
	}
	wg.Wait()
	resp, body := d.do(t, "POST", "/v2/models/m/infer", inferBody)
	expect(t, "after the burst", resp, body, "hit", bodies[0])
}

// BenchmarkCache_V2 is the figure "cache hit latency vs miss": v2 infer
// requests through the gateway to a fake instance that takes about 1ms;
// miss sends a new body each time (looked up, forwarded, kept), hit the
// same body again, off has no cache block.
func BenchmarkCache_V2(b *testing.B) {
	for _, bc := range []struct{ name, cache string }{{"off", ""}, {"miss", "cache: {max_bytes: 64Mi}\n"}, {"hit", "cache: {max_bytes: 64Mi}\n"}} {
		b.Run(bc.name, func(b *testing.B) {
			d := newCacheDoors(b, "name: m\nmode: dedicated\nruntime: {command: [x]}\n"+bc.cache)
			post := func(id int) {
				body := strings.Replace(inferBody, `"r1"`, fmt.Sprintf(`"r%d"`, id), 1)
				req, _ := http.NewRequest("POST", d.url+"/v2/models/m/infer", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Delay", "1ms")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			post(0) // wake, and keep the answer for "hit"
			b.ReportAllocs()
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				if bc.name == "hit" {
					post(0)
				} else {
					post(i)
				}
			}
		})
	}
}
