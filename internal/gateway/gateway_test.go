package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/store"
)

// setup runs a controller over the fake backend with one deployment.
func setup(t testing.TB, yaml string) (*httptest.Server, *controller.Controller, *fake.Backend) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(50 * time.Millisecond)
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	m, err := manifest.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gateway.New(c, nil))
	t.Cleanup(srv.Close)
	return srv, c, fb
}

func get(t testing.TB, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestGateway_ColdThenWarm(t *testing.T) {
	srv, _, fb := setup(t, "name: m\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n")
	code, body, h := get(t, srv.URL+"/models/m/a/b?q=1")
	if code != 200 || body != "ok /a/b" || h.Get(gateway.HeaderColdStart) != "true" {
		t.Fatalf("cold: %d %q %v", code, body, h)
	}
	code, _, h = get(t, srv.URL+"/models/m/a")
	if code != 200 || h.Get(gateway.HeaderColdStart) != "false" {
		t.Fatalf("warm: %d %v", code, h)
	}
	if n := len(fb.Calls()); n != 1 {
		t.Fatalf("backend calls %v, want one start", fb.Calls())
	}
}

func TestGateway_Errors(t *testing.T) {
	srv, c, fb := setup(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\n")
	code, body, _ := get(t, srv.URL+"/models/nope/x")
	if code != 404 || !strings.Contains(body, `"code":"model_not_found"`) || !strings.Contains(body, `"source":"gateway"`) {
		t.Fatalf("unknown model: %d %s", code, body)
	}
	code, body, _ = get(t, srv.URL+"/elsewhere")
	if code != 404 || !strings.Contains(body, "/models/{name}") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	// A crash while serving: 502 that says the instance died. A POST whose
	// body was sent, because a GET would go again to the replacement.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ := c.Status("m"); st.Ready == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st, _ := c.Status("m")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Post(srv.URL+"/models/m/slow", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
	}()
	time.Sleep(10 * time.Millisecond)
	fb.Crash(st.Instances[0].ID)
	<-done
	if code != 502 || !strings.Contains(body, "died") {
		t.Fatalf("crash in flight: %d %s", code, body)
	}
}

// BenchmarkGateway_Warm measures the gateway's own cost on the warm path
// (loopback, fake instance in-process).
func BenchmarkGateway_Warm(b *testing.B) {
	srv, _, _ := setup(b, "name: m\nmode: dedicated\nruntime: {command: [x]}\n")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := srv.URL + "/models/m/x"
	for {
		resp, err := client.Get(url)
		if err == nil && resp.StatusCode == 200 {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
