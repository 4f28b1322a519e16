package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/lambda"
	"tandem/internal/testbin"
)

// lambdaModule finds @aws-sdk/client-lambda: $TANDEM_AWS_LAMBDA_MODULE,
// then .cache/npm/awslambda (bash scripts/setup.sh awslambda puts it
// there), and node on $PATH. In CI a missing one fails the test.
func lambdaModule(t *testing.T) (node, module string) {
	t.Helper()
	module = os.Getenv("TANDEM_AWS_LAMBDA_MODULE")
	if module == "" {
		module = filepath.Join(testbin.RepoRoot(t), ".cache", "npm", "awslambda", "node_modules", "@aws-sdk", "client-lambda")
	}
	var msg string
	if _, err := os.Stat(filepath.Join(module, "package.json")); err != nil {
		msg = "@aws-sdk/client-lambda is not in " + module + ": run `bash scripts/setup.sh awslambda` or set TANDEM_AWS_LAMBDA_MODULE"
	} else if node, err = exec.LookPath("node"); err != nil {
		msg = "node not found on $PATH: run `bash scripts/setup.sh awslambda`"
	}
	if msg == "" {
		return node, module
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI: " + msg)
	}
	t.Skip("SKIPPED, NOT TESTED: " + msg)
	return "", ""
}

// fnManifest deploys internal/lambda/testdata/fn, a function built with
// aws-lambda-go, as a custom runtime (runtime.lambda.command).
func fnManifest(t *testing.T, name, event, extra string) string {
	bin := testbin.Build(t, "tandem/internal/lambda/testdata/fn")
	return fmt.Sprintf("name: %s\nruntime:\n  lambda:\n    command: [%q]\n    event: %s\n%sscaling: {idle_timeout: 10m, max: 2}\ntimeouts: {startup: 30s, request: 3s}\n",
		name, bin, event, extra)
}

// fnSeen is what testdata/fn reports about an event.
type fnSeen struct {
	Shape      string              `json:"shape"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	Query      map[string][]string `json:"query"`
	Header     map[string]string   `json:"header"`
	BodySHA256 string              `json:"body_sha256"`
	BodyLen    int                 `json:"body_len"`
	Base64     bool                `json:"base64"`
	RequestID  string              `json:"request_id"`
	ARN        string              `json:"arn"`
	Function   string              `json:"function"`
	PID        int                 `json:"pid"`
	Client     map[string]string   `json:"client"`
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func invert(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = ^c
	}
	return out
}

// send is server.call with headers and a binary body.
func (s *server) send(method, path string, body []byte, h http.Header) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+s.gateway+path, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// TestLambda_GoFunction deploys a function built with aws-lambda-go as
// runtime.lambda.command and drives it through both doors: API Gateway v1
// and v2 events through /models/NAME/... (text and binary bodies, the
// function's answer compared with what the test computes), the Invoke API
// (raw events, errors in Lambda's shapes, bad and oversized payloads), the
// AWS SDK's Lambda client, a handler error, a crash mid-event (502 naming
// the exit, the next request served by a new instance), and no process
// left behind.
func TestLambda_GoFunction(t *testing.T) {
	var pids []int
	t.Cleanup(func() { // after the server has stopped (cleanups run last first)
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("function process %d outlived tandem", pid)
			}
		}
	})
	s := startServer(t, "")
	s.deploy("", fnManifest(t, "gofn", "apigw-v1", ""))
	s.deploy("", fnManifest(t, "gofn2", "apigw-v2", ""))
	s.deploy("", fakeManifest(t, "plain", "serverless", nil, "idle_timeout: 10m", "startup: 30s"))
	json1 := []byte(`{"features": [5.1, 3.5, 1.4, 0.2]}`)
	var seen fnSeen
	decode := func(what string, r reply) {
		t.Helper()
		seen = fnSeen{}
		if r.code != 200 || json.Unmarshal([]byte(r.body), &seen) != nil {
			t.Fatalf("%s: %v", what, r)
		}
		pids = append(pids, seen.PID)
	}

	t.Run("apigw-v1", func(t *testing.T) {
		r := s.send("POST", "/models/gofn/predict/echo?k=1&k=2", json1, http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}})
		decode("v1 echo", r)
		if r.header.Get(gatewayCold) != "true" {
			t.Errorf("the first request did not wake the function from zero: %v", r.header)
		}
		if seen.Shape != "v1" || seen.Method != "POST" || seen.Path != "/predict/echo" || strings.Join(seen.Query["k"], ",") != "1,2" ||
			seen.BodySHA256 != sha(json1) || seen.Base64 || seen.Header["X-Multi"] != "b" {
			t.Errorf("the function saw %+v", seen)
		}
		if seen.Function != "gofn" || seen.ARN != lambda.ARN("us-east-1", "gofn") || seen.RequestID == "" {
			t.Errorf("the function's context: %+v", seen)
		}
		if got := r.header.Values("X-Multi"); strings.Join(got, ",") != "one,two" || r.header.Get("X-Fn") != "v1" {
			t.Errorf("the function's headers: %v", r.header)
		}
		// A binary body goes base64 in the event and comes back as bytes.
		bin := make([]byte, 70000)
		rand.Read(bin)
		r = s.send("POST", "/models/gofn/binary", bin, http.Header{"Content-Type": {"application/octet-stream"}})
		if r.code != 200 || !bytes.Equal([]byte(r.body), invert(bin)) || r.header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("binary: %d, %d bytes, content type %q; want the %d bytes inverted", r.code, len(r.body), r.header.Get("Content-Type"), len(bin))
		}
		// The status the function chose.
		if r = s.send("GET", "/models/gofn/echo?status=418", nil, nil); r.code != 418 {
			t.Errorf("status: %v", r)
		}
		// A client cannot pass for the Invoke API: the header's value is
		// tandem's own secret.
		r = s.send("POST", "/models/gofn/echo", []byte(`{"op":"crash"}`), http.Header{lambda.InvokeHeader: {"guess"}})
		decode("forged invoke header", r)
		if seen.Shape != "v1" {
			t.Errorf("a forged invoke header made a raw invocation: %+v", seen)
		}
	})

	t.Run("apigw-v2", func(t *testing.T) {
		r := s.send("GET", "/models/gofn2/a%2Fb/echo?x=1&x=2", nil, http.Header{"Cookie": {"c1=v1; c2=v2"}})
		decode("v2 echo", r)
		if seen.Shape != "v2" || seen.Method != "GET" || seen.Path != "/a%2Fb/echo" || strings.Join(seen.Query["x"], ",") != "1,2" || seen.BodyLen != 0 {
			t.Errorf("the function saw %+v", seen)
		}
		if got := r.header.Values("Set-Cookie"); len(got) != 2 || r.header.Get("X-Fn") != "v2" {
			t.Errorf("cookies and headers: %v", r.header)
		}
		if r = s.send("GET", "/models/gofn2/string", nil, nil); r.code != 200 || r.body != "plain string from the function" ||
			r.header.Get("Content-Type") != "application/json" {
			t.Errorf("a plain string result: %v %v", r, r.header)
		}
		if r = s.send("GET", "/models/gofn2/object", nil, nil); r.code != 200 || r.body != `{"n":7,"plain":"object"}` {
			t.Errorf("an object result without statusCode: %v", r)
		}
		bin := []byte{0, 1, 2, 0xff, 'x'}
		if r = s.send("POST", "/models/gofn2/binary", bin, http.Header{"Content-Type": {"image/png"}}); r.code != 200 || !bytes.Equal([]byte(r.body), invert(bin)) {
			t.Errorf("binary: %v", r)
		}
	})

	t.Run("handler error", func(t *testing.T) {
		r := s.send("GET", "/models/gofn/fail", nil, nil)
		var eb lambda.ErrorBody
		if r.code != 502 || r.header.Get(lambda.HeaderFunctionError) != "Unhandled" || json.Unmarshal([]byte(r.body), &eb) != nil ||
			eb.Message != "the handler failed on purpose" || eb.Type != "errorString" {
			t.Errorf("gateway: %v %v", r, r.header)
		}
		r = s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{"op":"fail"}`), nil)
		if r.code != 200 || r.header.Get(lambda.HeaderFunctionError) != "Unhandled" || json.Unmarshal([]byte(r.body), &eb) != nil ||
			eb.Message != "the handler failed on purpose" {
			t.Errorf("invoke: %v %v", r, r.header)
		}
	})

	t.Run("invoke", func(t *testing.T) {
		r := s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{"op":"sum","numbers":[1,2,3.5]}`), nil)
		var out struct {
			Sum  float64
			Seen fnSeen
		}
		if r.code != 200 || json.Unmarshal([]byte(r.body), &out) != nil || out.Sum != 6.5 || out.Seen.Shape != "raw" ||
			r.header.Get("X-Amz-Executed-Version") != "$LATEST" || r.header.Get(lambda.HeaderAmznRequestID) != out.Seen.RequestID {
			t.Errorf("raw invocation: %v %v", r, r.header)
		}
		errorType := func(what string, r reply, code int, typ string) {
			t.Helper()
			var e struct{ Type, Message string }
			if r.code != code || r.header.Get("X-Amzn-ErrorType") != typ || json.Unmarshal([]byte(r.body), &e) != nil || e.Message == "" {
				t.Errorf("%s: %v %v, want %d %s with a message", what, r, r.header, code, typ)
			}
		}
		errorType("unknown function", s.send("POST", "/2015-03-31/functions/nope/invocations", []byte(`{}`), nil), 404, "ResourceNotFoundException")
		errorType("not a function", s.send("POST", "/2015-03-31/functions/plain/invocations", []byte(`{}`), nil), 404, "ResourceNotFoundException")
		errorType("malformed event", s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{"op": `), nil), 400, "InvalidRequestContentException")
		errorType("oversized event", s.send("POST", "/2015-03-31/functions/gofn/invocations", bytes.Repeat([]byte(" "), lambda.MaxPayload+1), nil),
			413, "RequestTooLargeException")
		errorType("bad invocation type", s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{}`), http.Header{"X-Amz-Invocation-Type": {"Later"}}),
			400, "InvalidParameterValueException")
		// An Event invocation is an async job: 202 once stored, then it
		// runs through the same door, and its result is the raw answer.
		r = s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{"op":"sum","numbers":[2,3]}`), http.Header{"X-Amz-Invocation-Type": {"Event"}})
		id := r.header.Get("X-Tandem-Job-Id")
		if r.code != 202 || id == "" {
			t.Fatalf("Event invocation: %v %v, want 202 with a job id", r, r.header)
		}
		var job struct {
			Status string
			Result *struct {
				Status int
				Body   string
			}
		}
		deadline := time.Now().Add(30 * time.Second) // against a hang
		for {
			jr := s.send("GET", "/v1/jobs/"+id, nil, nil)
			if jr.code != 200 || json.Unmarshal([]byte(jr.body), &job) != nil {
				t.Fatalf("GET /v1/jobs/%s: %v", id, jr)
			}
			if job.Status == "succeeded" || job.Status == "failed" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if job.Status != "succeeded" || job.Result == nil || job.Result.Status != 200 || !strings.Contains(job.Result.Body, `"sum":5`) {
			t.Errorf("the Event invocation's job: %+v %+v, want succeeded with the raw answer (Sum 5)", job, job.Result)
		}
		if r := s.send("POST", "/2015-03-31/functions/gofn/invocations", []byte(`{}`), http.Header{"X-Amz-Invocation-Type": {"DryRun"}}); r.code != 204 {
			t.Errorf("DryRun: %v", r)
		}
		// An oversized HTTP request through the gateway door.
		r = s.send("POST", "/models/gofn/echo", bytes.Repeat([]byte("a"), lambda.MaxPayload+1), nil)
		if r.code != 413 || !strings.Contains(r.body, "limit") {
			t.Errorf("oversized request through /models/: %v", r)
		}
	})

	t.Run("aws-sdk", func(t *testing.T) {
		node, module := lambdaModule(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // against a hang
		defer cancel()
		cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "awslambda", "invoke.cjs"))
		cmd.Env = append(os.Environ(), "LAMBDA_MODULE="+module, "ENDPOINT=http://"+s.gateway, "FUNCTION=gofn")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("invoke.cjs: %v\n%s", err, stderr.String())
		}
		type call struct {
			Status        int
			FunctionError *string
			Version       *string
			Payload       json.RawMessage
			Error         *struct {
				Name    string
				Status  int
				Message string
			}
		}
		var res struct{ Sum, ByArn, Fail, DryRun, Event, Unknown, BadVersion call }
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("invoke.cjs printed %q: %v", out, err)
		}
		var sum struct {
			Sum  float64
			Seen fnSeen
		}
		if c := res.Sum; c.Status != 200 || c.FunctionError != nil || c.Version == nil || *c.Version != "$LATEST" ||
			json.Unmarshal(c.Payload, &sum) != nil || sum.Sum != 6.5 || sum.Seen.Client["from"] != "sdk" {
			t.Errorf("InvokeCommand: %+v (payload %s)", c, c.Payload)
		}
		if c := res.ByArn; c.Status != 200 || json.Unmarshal(c.Payload, &sum) != nil || sum.Sum != 42 {
			t.Errorf("InvokeCommand by ARN:$LATEST: %+v (payload %s)", c, c.Payload)
		}
		var eb lambda.ErrorBody
		if c := res.Fail; c.Status != 200 || c.FunctionError == nil || *c.FunctionError != "Unhandled" ||
			json.Unmarshal(c.Payload, &eb) != nil || eb.Message != "the handler failed on purpose" {
			t.Errorf("a handler error: %+v (payload %s)", c, c.Payload)
		}
		if c := res.DryRun; c.Status != 204 || c.Error != nil {
			t.Errorf("DryRun: %+v", c)
		}
		if c := res.Event; c.Status != 202 || c.Error != nil {
			t.Errorf("an Event invocation (an async job): %+v, want 202", c)
		}
		if c := res.Unknown; c.Error == nil || c.Error.Name != "ResourceNotFoundException" || c.Error.Status != 404 ||
			!strings.Contains(c.Error.Message, "no-such-function") {
			t.Errorf("an unknown function: %+v", c)
		}
		if c := res.BadVersion; c.Error == nil || c.Error.Name != "ResourceNotFoundException" {
			t.Errorf("a version tandem does not keep: %+v", c)
		}
	})

	t.Run("crash", func(t *testing.T) {
		decode("before the crash", s.send("GET", "/models/gofn/echo", nil, nil))
		before := seen.PID
		r := s.send("GET", "/models/gofn/crash", nil, nil)
		if r.code != 502 || !strings.Contains(r.body, "exited with code 3") {
			t.Errorf("a crash mid-event: %v, want 502 naming the exit", r)
		}
		decode("after the crash", s.send("GET", "/models/gofn/echo", nil, nil))
		if seen.PID == before {
			t.Errorf("the request after the crash was served by the crashed process %d", before)
		}
	})
}

// TestLambda_StartFailures: a function that reports an init error fails
// its start with the error's text, on the request and in status; one that
// overruns timeouts.request is answered 504 and replaced.
func TestLambda_StartFailures(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fnManifest(t, "badinit", "apigw-v1", "  env: {FN_INIT: error}\n"))
	r := s.send("GET", "/models/badinit/echo", nil, nil)
	if r.code != 502 || !strings.Contains(r.body, "model.bin is missing") {
		t.Errorf("a function whose init fails: %v, want 502 with its error", r)
	}
	st := s.status("badinit")
	if b, _ := json.Marshal(st); !strings.Contains(string(b), "model.bin is missing") {
		t.Errorf("status does not say the init error: %s", b)
	}

	s.deploy("", fnManifest(t, "slow", "apigw-v1", ""))
	pid := func(what string) int {
		t.Helper()
		var seen fnSeen
		r := s.send("GET", "/models/slow/echo", nil, nil)
		if r.code != 200 || json.Unmarshal([]byte(r.body), &seen) != nil {
			t.Fatalf("%s: %v", what, r)
		}
		return seen.PID
	}
	before := pid("before the overrun")
	if r = s.send("GET", "/models/slow/sleep?ms=6000", nil, nil); r.code != 504 {
		t.Errorf("an overrun of timeouts.request (3s): %v, want 504", r)
	}
	if after := pid("after the overrun"); after == before {
		t.Errorf("the instance that overran (pid %d) served the next request: it should have been stopped", before)
	}
	if alive(before) {
		t.Errorf("the process that overran (pid %d) still runs", before)
	}
	s.waitFor("one instance of slow", 30*time.Second, func(st *controller.Status) bool { return instances(st) == 1 }, "slow")
}

// TestLambda_RestartStopsOrphans: after kill -9 of tandem a function's
// process that runs on without its Runtime API is stopped by the next
// tandem rather than adopted, and the function is served by a new
// instance.
func TestLambda_RestartStopsOrphans(t *testing.T) {
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("function process %d outlived tandem", pid)
			}
		}
	})
	s := startServer(t, "")
	// A runtime that outlives its Runtime API (aws-lambda-go's exits when
	// the API is gone).
	s.deploy("", fnManifest(t, "gofn", "apigw-v1", "  env: {FN_INIT: survive}\n"))
	pid := func(what string) int {
		t.Helper()
		var seen fnSeen
		r := s.send("GET", "/models/gofn/echo", nil, nil)
		if r.code != 200 || json.Unmarshal([]byte(r.body), &seen) != nil {
			t.Fatalf("%s: %v", what, r)
		}
		pids = append(pids, seen.PID)
		return seen.PID
	}
	before := pid("before the restart")
	s.stop(syscall.SIGKILL)
	if !alive(before) {
		t.Fatalf("the function's process %d ended with tandem: the test needs it left behind", before)
	}
	s.start()
	after := pid("after the restart")
	if after == before {
		t.Errorf("the function process left by the killed tandem (%d) was adopted; its Runtime API is gone", before)
	}
	deadline := time.Now().Add(30 * time.Second)
	for alive(before) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(before) {
		t.Errorf("the function process left by the killed tandem (%d) still runs", before)
	}
}

const gatewayCold = "X-Tandem-Cold-Start"
