package lambda

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/process"
	"tandem/internal/manifest"
	"tandem/internal/testbin"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newWrapped is Wrap around a real process backend over dir.
func newWrapped(t testing.TB, dir string) *Backend {
	t.Helper()
	pb, err := process.New(process.Config{DataDir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return Wrap(pb, Config{Dir: filepath.Join(dir, "lambda"), Logger: quiet})
}

// fnSpec is a spec of testdata/fn (aws-lambda-go) as the controller gives
// it: the manifest parsed with defaults, prepared by Runtime.
func fnSpec(t testing.TB, id, yaml string) backend.Spec {
	t.Helper()
	bin := testbin.Build(t, "tandem/internal/lambda/testdata/fn")
	m, err := manifest.Parse([]byte("name: fn\nruntime:\n  lambda:\n    command: ["+bin+"]\n"+yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec := backend.Spec{ID: id, Deployment: "fn", Revision: m.Hash(), Manifest: m}
	if err := (Runtime{}).Prepare(manifest.BackendProcess, &spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

// start starts spec and stops it at the end of the test.
func start(t *testing.T, b *Backend, spec backend.Spec) backend.Instance {
	t.Helper()
	inst, err := b.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background(), spec.ID, 0) })
	return inst
}

// waitReady polls the ingress's readiness path as the controller does.
func waitReady(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + ReadyPath); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s", addr)
}

func do(t *testing.T, method, url string, body []byte, h http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// waitExit waits for the instance's Exit.
func waitExit(t *testing.T, b *Backend, id string) backend.Exit {
	t.Helper()
	ch, err := b.Wait(id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("the instance did not end within 30s")
	}
	return backend.Exit{}
}

// TestBackend_GoFunction runs a function built with aws-lambda-go behind
// the decorator: readiness on its first /next, an HTTP request as an API
// Gateway v1 event, a raw invocation, a handler error in Lambda's shape,
// the Lambda environment, and a crash mid-event answered 502 with the
// exit, after which the instance has ended.
func TestBackend_GoFunction(t *testing.T) {
	b := newWrapped(t, t.TempDir())
	defer b.Close()
	inst := start(t, b, fnSpec(t, "fn-1", ""))
	waitReady(t, inst.Addr)
	base := "http://" + inst.Addr

	resp, body := do(t, "POST", base+"/echo?k=1&k=2", []byte(`{"x":1}`), http.Header{"Content-Type": {"application/json"}})
	var s struct {
		Shape, Method, Path, Function, ARN string
		Query                              map[string][]string
		BodyLen                            int    `json:"body_len"`
		RequestID                          string `json:"request_id"`
		DeadlineMs                         int64  `json:"deadline_ms"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &s) != nil {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	if s.Shape != "v1" || s.Method != "POST" || s.Path != "/echo" || s.BodyLen != 7 || len(s.Query["k"]) != 2 {
		t.Errorf("the function saw %+v", s)
	}
	if s.Function != "fn" || s.ARN != ARN("us-east-1", "fn") || s.RequestID == "" {
		t.Errorf("the function's context: %+v", s)
	}
	if left := time.Until(time.UnixMilli(s.DeadlineMs)); left <= 0 || left > manifest.DefaultRequestTimeout {
		t.Errorf("deadline %v away, want within timeouts.request (%s)", left, manifest.DefaultRequestTimeout)
	}
	if got := resp.Header.Values("X-Multi"); len(got) != 2 || resp.Header.Get("X-Fn") != "v1" {
		t.Errorf("the function's headers did not come back: %v", resp.Header)
	}

	// A raw invocation, marked with this process's token.
	resp, body = do(t, "POST", base+"/", []byte(`{"op":"sum","numbers":[1,2,3.5]}`), http.Header{InvokeHeader: {InvokeToken()}})
	var sum struct{ Sum float64 }
	if resp.StatusCode != 200 || json.Unmarshal(body, &sum) != nil || sum.Sum != 6.5 {
		t.Fatalf("raw invocation: %d %s", resp.StatusCode, body)
	}
	// A forged mark is an HTTP request like any other.
	resp, body = do(t, "POST", base+"/echo", []byte(`{"op":"crash"}`), http.Header{InvokeHeader: {"guess"}})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"shape":"v1"`) {
		t.Fatalf("a forged invoke header was taken as a raw invocation: %d %s", resp.StatusCode, body)
	}

	// A handler error: 502 with Lambda's error JSON through the HTTP door,
	// 200 with X-Amz-Function-Error raw.
	resp, body = do(t, "GET", base+"/fail", nil, nil)
	var eb ErrorBody
	if resp.StatusCode != 502 || resp.Header.Get(HeaderFunctionError) != "Unhandled" || json.Unmarshal(body, &eb) != nil ||
		eb.Message != "the handler failed on purpose" || eb.Type != "errorString" {
		t.Errorf("handler error: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = do(t, "POST", base+"/", []byte(`{"op":"fail"}`), http.Header{InvokeHeader: {InvokeToken()}})
	if resp.StatusCode != 200 || resp.Header.Get(HeaderFunctionError) != "Unhandled" || !strings.Contains(string(body), "failed on purpose") {
		t.Errorf("raw handler error: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	// Not a proxy response.
	resp, body = do(t, "GET", base+"/notproxy", nil, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(body), "statusCode") {
		t.Errorf("a result without statusCode: %d %s", resp.StatusCode, body)
	}

	// A crash mid-event.
	resp, body = do(t, "GET", base+"/crash", nil, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(body), "exited with code 3") {
		t.Errorf("crash: %d %s", resp.StatusCode, body)
	}
	if e := waitExit(t, b, "fn-1"); e.Code != 3 {
		t.Errorf("exit %v, want code 3", e)
	}
}

// TestBackend_InitError: a function that reports an init error ends, and
// its Exit says the error's text (the controller fails the start with it).
func TestBackend_InitError(t *testing.T) {
	b := newWrapped(t, t.TempDir())
	defer b.Close()
	spec := fnSpec(t, "fn-init", "  env: {FN_INIT: error}\n")
	start(t, b, spec)
	e := waitExit(t, b, "fn-init")
	if !strings.Contains(e.String(), "model.bin is missing") || !strings.Contains(e.String(), "Runtime.InitError") {
		t.Errorf("exit %q does not say the init error", e)
	}
}

// TestBackend_Timeout: an event that overruns timeouts.request is answered
// 504 with Sandbox.Timedout, and the instance is stopped.
func TestBackend_Timeout(t *testing.T) {
	b := newWrapped(t, t.TempDir())
	defer b.Close()
	inst := start(t, b, fnSpec(t, "fn-slow", "timeouts: {request: 300ms}\n"))
	waitReady(t, inst.Addr)
	resp, body := do(t, "GET", "http://"+inst.Addr+"/sleep?ms=5000", nil, nil)
	if resp.StatusCode != 504 || !strings.Contains(string(body), "Sandbox.Timedout") {
		t.Errorf("overrun: %d %s", resp.StatusCode, body)
	}
	if e := waitExit(t, b, "fn-slow"); !strings.Contains(e.String(), "overran timeouts.request") {
		t.Errorf("exit %q does not say the overrun", e)
	}
}

// TestBackend_PayloadLimits: an event over 6 MB is refused before the
// function sees it, in the shape of the door it came through.
func TestBackend_PayloadLimits(t *testing.T) {
	b := newWrapped(t, t.TempDir())
	defer b.Close()
	inst := start(t, b, fnSpec(t, "fn-big", ""))
	waitReady(t, inst.Addr)
	big := bytes.Repeat([]byte("a"), MaxPayload+1)
	resp, body := do(t, "POST", "http://"+inst.Addr+"/", big, http.Header{InvokeHeader: {InvokeToken()}})
	if resp.StatusCode != 413 || resp.Header.Get("X-Amzn-ErrorType") != "RequestTooLargeException" {
		t.Errorf("raw: %d %v %.200s", resp.StatusCode, resp.Header, body)
	}
	// Under 6 MB as bytes, over it as base64 in the event.
	bin := bytes.Repeat([]byte{0xff}, MaxPayload*4/5)
	resp, body = do(t, "POST", "http://"+inst.Addr+"/echo", bin, http.Header{"Content-Type": {"application/octet-stream"}})
	if resp.StatusCode != 413 || !strings.Contains(string(body), "base64") {
		t.Errorf("http: %d %.200s", resp.StatusCode, body)
	}
	// The function still serves.
	resp, body = do(t, "GET", "http://"+inst.Addr+"/echo", nil, nil)
	if resp.StatusCode != 200 {
		t.Errorf("after the refusals: %d %s", resp.StatusCode, body)
	}
}

// TestBackend_RecoverStopsFunctions: a function instance left running by
// an earlier tandem (its Runtime API gone with it) is stopped by Recover,
// not returned for adoption.
func TestBackend_RecoverStopsFunctions(t *testing.T) {
	dir := t.TempDir()
	b1 := newWrapped(t, dir)
	inst := start(t, b1, fnSpec(t, "fn-left", "  env: {FN_INIT: survive}\n"))
	waitReady(t, inst.Addr)
	resp, body := do(t, "GET", "http://"+inst.Addr+"/echo", nil, nil)
	var s struct{ PID int }
	if resp.StatusCode != 200 || json.Unmarshal(body, &s) != nil || s.PID == 0 {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	pid := s.PID
	b1.Close() // as a crash of tandem: the process runs on
	time.Sleep(100 * time.Millisecond)
	if syscall.Kill(pid, 0) != nil {
		t.Fatalf("the function's process %d ended with its Runtime API: the test needs it left behind", pid)
	}

	b2 := newWrapped(t, dir)
	defer b2.Close()
	got, err := b2.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range got {
		if in.ID == "fn-left" {
			t.Fatalf("Recover returned the function instance %+v for adoption", in)
		}
	}
	if syscall.Kill(pid, 0) == nil {
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); !strings.Contains(string(st), ") Z ") {
			t.Errorf("the function's process %d still runs after Recover", pid)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "lambda")); len(ents) != 0 {
		t.Errorf("markers left: %v", ents)
	}
}
