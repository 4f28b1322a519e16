package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/testbin"
)

// jaegerBin finds Jaeger's all-in-one binary: $TANDEM_JAEGER, then
// .cache/bin under the repository (scripts/setup.sh jaeger puts it there),
// then $PATH. In CI a missing one fails the test.
func jaegerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TANDEM_JAEGER"); p != "" {
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", "..", ".cache", "bin", "jaeger")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("jaeger"); err == nil {
		return p
	}
	const msg = "jaeger not found: run `bash scripts/setup.sh jaeger` (installs it into .cache/bin) or set TANDEM_JAEGER"
	if os.Getenv("CI") != "" {
		t.Fatal("CI: " + msg)
	}
	t.Skip("SKIPPED, NOT TESTED: " + msg)
	return ""
}

// jaeger is one Jaeger all-in-one process: an OTLP/HTTP receiver and the
// query API on loopback, traces kept in memory.
type jaeger struct {
	otlp, query string // host:port
	log         *syncBuffer
}

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 1000
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// freeAddrs returns n loopback addresses that were free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

// startJaeger runs Jaeger until the test ends.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := jaegerBin(t)
	var lastErr error
	for try := 0; try < 3; try++ { // a port taken between freeAddrs and the start: again
		addrs := freeAddrs(t, 3)
		j := &jaeger{otlp: addrs[0], query: addrs[1], log: &syncBuffer{}}
		cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
		writeFile(t, cfg, fmt.Sprintf(jaegerConfig, j.query, addrs[2], j.otlp))
		cmd := exec.Command(bin, "--config", cfg)
		cmd.Stdout, cmd.Stderr = j.log, j.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		if lastErr = j.waitReady(exited); lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("jaeger log:\n%s", j.log)
				}
			})
			return j
		}
		stop()
	}
	t.Fatal(lastErr)
	return nil
}

// waitReady waits until both the query API and the OTLP receiver answer.
func (j *jaeger) waitReady(exited chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		q, err1 := http.Get("http://" + j.query + "/api/services")
		if err1 == nil {
			q.Body.Close()
		}
		// An empty export: 200 once the receiver runs.
		o, err2 := http.Post("http://"+j.otlp+"/v1/traces", "application/json", strings.NewReader("{}"))
		if err2 == nil {
			o.Body.Close()
		}
		if err1 == nil && err2 == nil && q.StatusCode == 200 && o.StatusCode == 200 {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("jaeger exited at start:\n%s", j.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not ready after 60s:\n%s", j.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// jaegerSpan is a span as Jaeger's query API gives it.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64 `json:"startTime"` // microseconds
	Duration  int64 `json:"duration"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// trace reads a trace back through the query API once it has every span
// named in want, waiting at most 60s (a bound against hangs).
func (j *jaeger) trace(t *testing.T, traceID string, want []string) []jaegerTrace {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		resp, err := http.Get("http://" + j.query + "/api/traces/" + traceID)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			var out struct {
				Data []jaegerTrace `json:"data"`
			}
			if resp.StatusCode == 200 && json.Unmarshal(b, &out) == nil && len(out.Data) > 0 {
				have := map[string]bool{}
				for _, tr := range out.Data {
					for _, s := range tr.Spans {
						have[s.OperationName] = true
					}
				}
				all := true
				for _, w := range want {
					all = all && have[w]
				}
				if all {
					return out.Data
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s: not all of %v in Jaeger within 60s; last answer: %s", traceID, want, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTracing_ColdStartInJaeger: one request woken from zero, sent with a
// caller's traceparent, is one trace in a real Jaeger, read back through
// its query API: the gateway span under the caller's, with authentication,
// the queue wait, the cold start (its trigger, exec and ready phases
// inside) and the instance call as its children; and the instance received
// a traceparent of that trace naming the instance call.
func TestTracing_ColdStartInJaeger(t *testing.T) {
	j := startJaeger(t)
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(),
		extraArgs: []string{"--auth", "keys", "--otlp-endpoint", "http://" + j.otlp},
		extraEnv:  []string{"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=", "OTEL_TRACES_SAMPLER=", "OTEL_EXPORTER_OTLP_PROTOCOL="}}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	s.mustTandem("tenant", "create", "acme")
	_, key := s.newKey("acme")
	s.deploy("", fakeManifest(t, "traced", "serverless", nil, "min: 0\nmax: 1\nidle_timeout: 1h", "startup: 30s"))
	if st := s.status("traced"); st.Ready != 0 {
		t.Fatalf("not at zero before the request: %d ready", st.Ready)
	}

	const traceID, callerSpan = "5a1e0f00d1ce0ba5eba11c0ffee0babe", "00f067aa0ba902b7"
	r := s.callAs("GET", "/models/traced/echo", "", map[string]string{
		"Authorization": "Bearer " + key,
		"Traceparent":   "00-" + traceID + "-" + callerSpan + "-01",
	})
	if r.err != nil || r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("request from zero: %v cold=%q", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	var echo struct {
		Headers http.Header `json:"headers"`
	}
	if err := json.Unmarshal([]byte(r.body), &echo); err != nil {
		t.Fatalf("echo: %v: %s", err, r.body)
	}
	got := echo.Headers.Get("Traceparent")

	traces := j.trace(t, traceID, []string{"gateway", "authenticate", "queue", "cold start", "trigger", "exec", "ready", "instance call"})
	if len(traces) != 1 {
		t.Fatalf("%d traces for %s, want 1", len(traces), traceID)
	}
	tr := traces[0]
	byName := map[string][]jaegerSpan{}
	for _, sp := range tr.Spans {
		byName[sp.OperationName] = append(byName[sp.OperationName], sp)
		if p := tr.Processes[sp.ProcessID]; p.ServiceName != "tandem" {
			t.Errorf("span %s from service %q, want tandem", sp.OperationName, p.ServiceName)
		}
	}
	onlyOne := func(name string) jaegerSpan {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("%d spans %q in the trace, want 1; spans: %s", len(byName[name]), name, spanList(tr))
		}
		return byName[name][0]
	}
	gw := onlyOne("gateway")
	if gw.parent() != callerSpan {
		t.Fatalf("gateway span's parent %q, want the caller's %s", gw.parent(), callerSpan)
	}
	for tag, want := range map[string]string{"tandem.model": "traced", "tandem.tenant": "acme", "tandem.cold_start": "true",
		"http.response.status_code": "200", "span.kind": "server"} {
		if v := gw.tag(tag); v != want {
			t.Errorf("gateway span %s=%q, want %q", tag, v, want)
		}
	}
	for _, name := range []string{"authenticate", "queue", "cold start", "instance call"} {
		if sp := onlyOne(name); sp.parent() != gw.SpanID {
			t.Errorf("%s span's parent %q, want the gateway span %s", name, sp.parent(), gw.SpanID)
		}
	}
	cs := onlyOne("cold start")
	for _, name := range []string{"trigger", "exec", "ready"} {
		sp := onlyOne(name)
		if sp.parent() != cs.SpanID {
			t.Errorf("phase %s's parent %q, want the cold start %s", name, sp.parent(), cs.SpanID)
		}
		// Jaeger keeps microseconds: a start and a duration each cut to
		// the microsecond may put a phase's end 1-2 us past its parent's.
		const slack = 2
		if sp.StartTime+slack < cs.StartTime || sp.StartTime+sp.Duration > cs.StartTime+cs.Duration+slack {
			t.Errorf("phase %s [%d+%d] outside the cold start [%d+%d]", name, sp.StartTime, sp.Duration, cs.StartTime, cs.Duration)
		}
	}
	if q := onlyOne("queue"); q.tag("tandem.cold_start") != "true" {
		t.Errorf("queue span tags %v", q.Tags)
	}
	call := onlyOne("instance call")
	if want := "00-" + traceID + "-" + call.SpanID + "-01"; got != want {
		t.Fatalf("the instance received traceparent %q, want %q (the instance call's)", got, want)
	}
	st := s.status("traced")
	if st.Ready != 1 {
		t.Fatalf("after the request: %d ready", st.Ready)
	}
	t.Logf("trace %s: %s", traceID, spanList(tr))
}

// spanList shows a trace's spans as name(id<-parent), for failure messages.
func spanList(tr jaegerTrace) string {
	var b bytes.Buffer
	for _, s := range tr.Spans {
		fmt.Fprintf(&b, "%s(%s<-%s) ", s.OperationName, s.SpanID, s.parent())
	}
	return b.String()
}
