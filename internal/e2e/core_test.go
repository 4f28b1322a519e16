package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
)

func instances(st *controller.Status) int { return st.Ready + st.Starting }

// Serverless from zero: cold first request, warm second, back to zero.
func TestServerless_ScaleFromZeroAndBack(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "fz", "serverless", nil,
		"max: 2\nidle_timeout: 1s\nstable_window: 2s\npanic_window: 500ms", "startup: 20s\nrequest: 10s"))
	if n := instances(s.status("fz")); n != 0 {
		t.Fatalf("serverless deployment started %d instances before any request", n)
	}
	r := s.call("POST", "/models/fz/echo?x=1&y=2", `{"hello":"world"}`)
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("first request: %v, cold start %q; want 200 and true", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	var echo struct {
		Method, Path, Query, Body string
		Headers                   http.Header
	}
	if err := json.Unmarshal([]byte(r.body), &echo); err != nil {
		t.Fatal(err)
	}
	if echo.Method != "POST" || echo.Path != "/echo" || echo.Query != "x=1&y=2" || echo.Body != `{"hello":"world"}` {
		t.Fatalf("request not forwarded intact: %+v", echo)
	}
	r = s.call("GET", "/models/fz/echo", "")
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "false" {
		t.Fatalf("second request: %v, cold start %q; want 200 and false", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	s.waitFor("scale to zero after idle_timeout", 20*time.Second, func(st *controller.Status) bool {
		return len(st.Instances) == 0
	}, "fz")
	r = s.call("GET", "/models/fz/echo", "")
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("request after scale to zero: %v, cold start %q; want 200 and true", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	// Metrics tell the story: requests, the cold starts and their phases.
	// (A request is counted just after its answer is sent: poll briefly.)
	want := []string{
		`tandem_requests_total{code="200",model="fz",protocol="http"} 3`,
		`tandem_cold_starts_total{model="fz"} 2`,
		`tandem_instance_start_phase_seconds_count{model="fz",phase="exec"} 2`,
		`tandem_instance_start_phase_seconds_count{model="fz",phase="ready"} 2`,
		`tandem_cold_start_wait_seconds_count{model="fz"} 2`,
		`tandem_queue_depth{model="fz"} 0`,
		`tandem_instances{model="fz",state="ready"}`,
		`tandem_request_duration_seconds_count{model="fz"} 3`,
	}
	var missing []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + s.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("/metrics lacks %s", strings.Join(missing, ", "))
	}
	// Streaming: every line the instance flushed arrives.
	r = s.call("GET", "/models/fz/stream?n=3&d=50ms", "")
	if r.code != 200 || r.body != "line 0\nline 1\nline 2\n" {
		t.Fatalf("stream: %v", r)
	}
}

// A burst of 50 slow requests scales to max 4 and never beyond; all succeed.
func TestBurst_ScalesToMaxNeverMore(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "burst", "serverless", nil,
		"max: 4\ntarget_concurrency: 1\nidle_timeout: 2s\nstable_window: 3s\npanic_window: 500ms\nmax_queue: 100",
		"startup: 20s\nrequest: 30s"))
	replies, most := s.burst(50, "/models/burst/sleep?d=3s", 10*time.Millisecond,
		func() int { return len(s.status("burst").Instances) },
		func() {
			s.waitFor("4 instances", 10*time.Second, func(st *controller.Status) bool { return st.Ready == 4 }, "burst")
		})
	for i, r := range replies {
		if r.code != 200 {
			t.Errorf("request %d: %v", i, r)
		}
	}
	if most != 4 {
		t.Fatalf("most instances seen = %d, want exactly 4 (max)", most)
	}
}

// Scale-down under load loses nothing: instances drained while serving
// finish their requests.
func TestScaleDown_DrainLosesNothing(t *testing.T) {
	s := startServer(t, "")
	dir := t.TempDir()
	base := "min: 4\nmax: 4\ncontainer_concurrency: 1\nmax_queue: 100"
	s.deploy(dir, fakeManifest(t, "drain", "dedicated", nil, base, "startup: 20s\nrequest: 30s\ngrace: 5s"))
	s.waitFor("4 ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 4 }, "drain")

	var wg sync.WaitGroup
	replies := make([]reply, 8)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = s.call("GET", "/models/drain/sleep?d=2s", "")
		}()
	}
	s.waitFor("4 busy instances", 10*time.Second, func(st *controller.Status) bool { return st.InFlight == 4 }, "drain")
	// Shrink to one instance while every instance serves a request.
	s.deploy(dir, fakeManifest(t, "drain", "dedicated", nil, "min: 1\nmax: 1\ncontainer_concurrency: 1\nmax_queue: 100", "startup: 20s\nrequest: 30s\ngrace: 5s"))
	wg.Wait()
	for i, r := range replies {
		if r.code != 200 {
			t.Errorf("request %d during drain: %v", i, r)
		}
	}
	s.waitFor("one instance left", 20*time.Second, func(st *controller.Status) bool {
		return len(st.Instances) == 1 && st.Ready == 1
	}, "drain")
}

// Dedicated keeps min warm through idle and across restarts, adopting its
// instances after a crash of tandem instead of starting them twice.
func TestDedicated_WarmAcrossRestart(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "ded", "dedicated", nil,
		"min: 2\nmax: 3\nidle_timeout: 500ms\nstable_window: 1s\npanic_window: 500ms", "startup: 20s"))
	st := s.waitFor("2 ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "ded")
	time.Sleep(2 * time.Second) // an idle period longer than idle_timeout
	if st2 := s.status("ded"); st2.Ready != 2 {
		t.Fatalf("dedicated dropped to %d ready instances while idle", st2.Ready)
	}
	pids := pidsOf(t, s, "ded", 2)

	// Crash of tandem: the instances keep running and are adopted.
	s.restart(syscall.SIGKILL)
	st2 := s.waitFor("2 ready after SIGKILL restart", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "ded")
	if ids(st) != ids(st2) {
		t.Fatalf("instances after crash restart = %s, want the adopted %s (nothing started twice)", ids(st2), ids(st))
	}
	if got := pidsOf(t, s, "ded", 2); got != pids {
		t.Fatalf("instance pids after crash restart = %s, want %s", got, pids)
	}

	// Graceful restart: instances stop with tandem and come back on start.
	s.restart(syscall.SIGTERM)
	for _, p := range strings.Split(pids, ",") {
		pid, _ := strconv.Atoi(p)
		if alive(pid) {
			t.Errorf("instance pid %d outlived a graceful stop of tandem", pid)
		}
	}
	s.waitFor("2 ready after graceful restart", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "ded")
}

func ids(st *controller.Status) string {
	var out []string
	for _, in := range st.Instances {
		out = append(out, in.ID)
	}
	return strings.Join(out, ",")
}

// pidsOf asks each instance of a deployment for its pid, through the
// instances' own addresses, in instance order.
func pidsOf(t *testing.T, s *server, name string, want int) string {
	t.Helper()
	st := s.status(name)
	if len(st.Instances) != want {
		t.Fatalf("%s has %d instances, want %d", name, len(st.Instances), want)
	}
	var out []string
	for _, in := range st.Instances {
		resp, err := http.Get("http://" + in.Addr + "/pid")
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 32)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		out = append(out, string(b[:n]))
	}
	return strings.Join(out, ",")
}

// A full queue answers 503 with Retry-After at once; a start that never
// becomes ready answers 504 and the broken instance is killed.
func TestActivator_QueueFullAndStartTimeout(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "slowstart", "serverless", map[string]string{"FAKE_READY_DELAY": "2s"},
		"max: 1\nmax_queue: 3", "startup: 20s"))
	var wg sync.WaitGroup
	replies := make([]reply, 10)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = s.call("GET", "/models/slowstart/echo", "")
		}()
	}
	wg.Wait()
	var ok, full int
	for _, r := range replies {
		switch {
		case r.code == 200:
			ok++
		case r.code == 503:
			full++
			if r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "max_queue") {
				t.Errorf("503 without Retry-After or reason: %v %v", r, r.header)
			}
		default:
			t.Errorf("unexpected reply %v", r)
		}
	}
	if ok != 3 || full != 7 {
		t.Fatalf("got %d OK and %d queue-full answers, want 3 and 7 (max_queue 3)", ok, full)
	}

	s.deploy("", fakeManifest(t, "never", "serverless", map[string]string{"FAKE_NEVER_READY": "1"},
		"max: 1", "startup: 2s"))
	r := s.call("GET", "/models/never/echo", "")
	if r.code != 504 || !strings.Contains(r.body, "timeouts.startup") {
		t.Fatalf("never-ready start: %v, want 504 naming timeouts.startup", r)
	}
	st := s.waitFor("broken instance killed", 20*time.Second, func(st *controller.Status) bool {
		return len(st.Instances) == 0 && strings.Contains(st.LastError, "not ready within")
	}, "never")
	t.Logf("last error: %s", st.LastError)
}

// kill -9 of an instance under load: clear 502s for the requests it had
// taken (POSTs whose bodies it had: never retried), a replacement, success.
func TestCrash_KilledInstanceReplaced(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "crash", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s\nrequest: 20s"))
	killedID := s.waitFor("ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "crash").Instances[0].ID
	pid, _ := strconv.Atoi(pidsOf(t, s, "crash", 1))
	var wg sync.WaitGroup
	replies := make([]reply, 5)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = s.call("POST", "/models/crash/sleep?d=10s", "not idempotent")
		}()
	}
	s.waitFor("5 in flight", 10*time.Second, func(st *controller.Status) bool { return st.InFlight == 5 }, "crash")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range replies {
		if r.code != 502 || !strings.Contains(r.body, "died") || !strings.Contains(r.body, "killed") {
			t.Errorf("in-flight request %d: %v, want 502 saying the instance died (killed)", i, r)
		}
	}
	// The status read right after the kill may be one published before the
	// loop saw the exit (the old instance still ready): wait for the
	// restart to be recorded and the replacement to be ready.
	st := s.waitFor("replacement ready", 20*time.Second, func(st *controller.Status) bool {
		return st.Restarts >= 1 && st.Ready == 1 && len(st.Instances) == 1 && st.Instances[0].ID != killedID
	}, "crash")
	if st.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", st.Restarts)
	}
	for i := 0; i < 5; i++ {
		if r := s.call("GET", "/models/crash/echo", ""); r.code != 200 {
			t.Fatalf("request after replacement: %v", r)
		}
	}
}

// kill -9 of one of two instances under 20 concurrent GET clients: the
// GETs it had taken go again to the other instance, and every GET answers
// 200 (nginx's proxy_next_upstream for idempotent requests).
func TestCrash_GETsRetriedOnAnotherInstance(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "retry", "dedicated", nil, "min: 2\nmax: 2", "startup: 20s\nrequest: 20s"))
	s.waitFor("ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "retry")
	pid, _ := strconv.Atoi(strings.Split(pidsOf(t, s, "retry", 2), ",")[0])
	const clients, each = 20, 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []reply
	var done atomic.Int64
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := s.call("GET", "/models/retry/sleep?d=50ms", "")
				done.Add(1)
				if r.code != 200 {
					mu.Lock()
					failed = append(failed, r)
					mu.Unlock()
				}
			}
		}()
	}
	for done.Load() < clients*2 { // both instances busy
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d GETs failed after kill -9 of one instance, first: %v", len(failed), clients*each, failed[0])
	}
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `tandem_retries_total{model="retry"}`) || strings.Contains(string(b), `tandem_retries_total{model="retry"} 0`) {
		t.Errorf("no retry counted in /metrics")
	}
}

// Bad manifests are rejected by `tandem deploy` with every problem listed.
func TestDeploy_BadManifests(t *testing.T) {
	s := startServer(t, "")
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "name: a\nruntime: {command: [x]}\nscaling: {maxx: 3}\nfoo: 1\n", []string{"scaling.maxx: unknown field", "foo: unknown field"}},
		{"bad duration", "name: a\nruntime: {command: [x]}\ntimeouts: {startup: 10 parsecs}\n", []string{"timeouts.startup: invalid duration"}},
		{"min > max", "name: a\nruntime: {command: [x]}\nscaling: {min: 5, max: 2}\n", []string{"scaling.min: min (5) is greater than max (2)"}},
		{"dedicated min 0", "name: a\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 0}\n", []string{"scaling.min: dedicated"}},
		{"missing command", "name: a\nruntime: {env: {A: b}}\n", []string{"runtime.command: required"}},
		{"all at once", "name: Bad_Name\nmode: sometimes\nruntime: {}\nscaling: {min: 3, max: 1}\n", []string{"name:", "mode:", "runtime.command: required", "scaling.min"}},
		{"not yaml", "name: [unclosed\n", []string{"not valid YAML"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := dir + "/m.yaml"
			writeFile(t, f, tc.yaml)
			out, err := s.tandem("deploy", "-f", f)
			if err == nil {
				t.Fatalf("deploy accepted a bad manifest:\n%s", out)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("deploy error %v, want exit code 1", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out, _ := s.tandem("ls"); strings.Contains(out, "\na ") {
		t.Fatalf("a rejected manifest was deployed:\n%s", out)
	}
	// Unknown model: JSON 404 from the gateway.
	r := s.call("GET", "/models/nope/x", "")
	if r.code != 404 || !strings.Contains(r.body, `"code":"model_not_found"`) {
		t.Fatalf("unknown model: %v", r)
	}
}

// An instance over its memory limit is killed and reported as out of
// memory: to its caller, in status and in the logs; others keep serving.
func TestMemoryLimit_OOMReported(t *testing.T) {
	s := startServer(t, "")
	m := fakeManifest(t, "hungry", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s") + "resources:\n  memory: 64Mi\n"
	s.deploy("", m)
	s.deploy("", fakeManifest(t, "neighbour", "dedicated", nil, "min: 1\nmax: 1", "startup: 20s"))
	s.waitFor("ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "hungry")
	r := s.call("GET", "/models/hungry/alloc?mb=512", "")
	if r.code != 502 || !strings.Contains(r.body, "instance_oom") || !strings.Contains(r.body, "out of memory") {
		t.Fatalf("allocating past the limit: %v, want 502 instance_oom", r)
	}
	st := s.waitFor("OOM in status", 20*time.Second, func(st *controller.Status) bool {
		return strings.Contains(st.LastError, "out of memory")
	}, "hungry")
	t.Logf("status: %s", st.LastError)
	if out, err := s.tandem("logs", "hungry"); err != nil || !strings.Contains(out, "out of memory") {
		t.Errorf("logs do not report the OOM kill: %v\n%s", err, out)
	}
	s.waitFor("neighbour ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "neighbour")
	if r := s.call("GET", "/models/neighbour/echo", ""); r.code != 200 {
		t.Fatalf("neighbour after the OOM kill: %v", r)
	}
	s.waitFor("replacement", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "hungry")
}
