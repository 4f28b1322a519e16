package gateway_test

import (
	"context"
	"errors"
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
	"tandem/internal/gateway"
	"tandem/internal/lambda"
	"tandem/internal/metrics"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// ingress stands in for a function's ingress: it records what the door
// sent and answers {"ok":true}.
type ingress struct {
	mu   sync.Mutex
	seen []oaiRequest
}

func (in *ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	in.mu.Lock()
	in.seen = append(in.seen, oaiRequest{r.URL.Path, body, r.Header.Clone()})
	in.mu.Unlock()
	w.Header().Set(lambda.HeaderAmznRequestID, "from-the-function")
	io.WriteString(w, `{"ok":true}`)
}

func (in *ingress) requests() []oaiRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]oaiRequest(nil), in.seen...)
}

// submitter records Event invocations.
type submitter struct {
	model, body string
	err         error
}

func (s *submitter) Submit(_ context.Context, model string, r *http.Request) (string, error) {
	b, _ := io.ReadAll(r.Body)
	s.model, s.body = model, string(b)
	return "job-1", s.err
}

func setupInvoke(t *testing.T, async gateway.AsyncSubmitter) (string, *ingress) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	in := &ingress{}
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(in)},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: metrics.New()})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	apply(t, c, "name: fn\nruntime: {lambda: {command: [x]}}\nscaling: {idle_timeout: 1h}\n")
	apply(t, c, "name: plain\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n")
	g := gateway.New(c, nil)
	g.Use(oaiStage{})
	g.MountInvoke(gateway.InvokeConfig{Async: async})
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL, in
}

func invoke(t *testing.T, url, fn, body string, h ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/2015-03-31/functions/"+fn+"/invocations", strings.NewReader(body))
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestInvoke_Door: RequestResponse reaches the instance as a raw event
// marked with this process's token (a client's copy is overwritten), an
// empty event is {}, DryRun and refusals never reach it, and the errors
// take Lambda's shape.
func TestInvoke_Door(t *testing.T) {
	url, in := setupInvoke(t, nil)
	resp, body := invoke(t, url, "arn:aws:lambda:us-east-1:000000000000:function:fn", `{"a":1}`, lambda.InvokeHeader, "forged")
	if resp.StatusCode != 200 || body != `{"ok":true}` || resp.Header.Get("X-Amz-Executed-Version") != "$LATEST" ||
		resp.Header.Get(lambda.HeaderAmznRequestID) != "from-the-function" {
		t.Fatalf("invoke: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, _ = invoke(t, url, "fn:$LATEST", "")
	if resp.StatusCode != 200 {
		t.Fatalf("empty event: %d", resp.StatusCode)
	}
	seen := in.requests()
	if len(seen) != 2 {
		t.Fatalf("the instance got %d requests, want 2", len(seen))
	}
	if seen[0].path != "/" || string(seen[0].body) != `{"a":1}` || seen[0].header.Get(lambda.InvokeHeader) != lambda.InvokeToken() {
		t.Errorf("the instance got %s %q with invoke header %q", seen[0].path, seen[0].body, seen[0].header.Get(lambda.InvokeHeader))
	}
	if string(seen[1].body) != "{}" {
		t.Errorf("an empty event reached the instance as %q, want {}", seen[1].body)
	}

	for _, tc := range []struct {
		name, fn, body string
		h              []string
		status         int
		errType        string
	}{
		{"dry run", "fn", "", []string{"X-Amz-Invocation-Type", "DryRun"}, 204, ""},
		{"no async", "fn", "{}", []string{"X-Amz-Invocation-Type", "Event"}, 501, "UnsupportedInvocationType"},
		{"unknown", "nope", "{}", nil, 404, "ResourceNotFoundException"},
		{"not a function", "plain", "{}", nil, 404, "ResourceNotFoundException"},
		{"version", "fn:3", "{}", nil, 404, "ResourceNotFoundException"},
		{"bad json", "fn", `{"a":`, nil, 400, "InvalidRequestContentException"},
		{"bad client context", "fn", "{}", []string{lambda.HeaderClientContextIn, "%%%"}, 400, "InvalidRequestContentException"},
		{"refused", "fn", "{}", []string{"X-Refuse", "401"}, 401, "UnrecognizedClientException"},
		{"rate", "fn", "{}", []string{"X-Refuse", "429"}, 429, "TooManyRequestsException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := invoke(t, url, tc.fn, tc.body, tc.h...)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.errType {
				t.Errorf("%d %q %s, want %d %q", resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), body, tc.status, tc.errType)
			}
			if tc.errType != "" && !strings.Contains(body, `"Message"`) {
				t.Errorf("body %s is not Lambda's error shape", body)
			}
		})
	}
	if n := len(in.requests()); n != 2 {
		t.Errorf("the instance got %d requests; DryRun and refusals must not reach it", n)
	}
}

// TestInvoke_Event: an Event invocation is handed to the async submitter
// with its event and answered 202 with the job id; the function is not
// called; a submitter's error is answered in Lambda's shape.
func TestInvoke_Event(t *testing.T) {
	sub := &submitter{}
	url, in := setupInvoke(t, sub)
	resp, body := invoke(t, url, "fn", `{"later":true}`, "X-Amz-Invocation-Type", "Event")
	if resp.StatusCode != 202 || resp.Header.Get(gateway.HeaderJobID) != "job-1" || !strings.Contains(body, `"job-1"`) {
		t.Fatalf("Event: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if sub.model != "fn" || sub.body != `{"later":true}` {
		t.Errorf("the submitter got %q %q", sub.model, sub.body)
	}
	if n := len(in.requests()); n != 0 {
		t.Errorf("an Event invocation reached the instance %d times", n)
	}
	sub.err = problem.New(http.StatusServiceUnavailable, "store_unavailable", "the job store is down")
	resp, body = invoke(t, url, "fn", `{}`, "X-Amz-Invocation-Type", "Event")
	if resp.StatusCode != 503 || !strings.Contains(body, "job store is down") {
		t.Errorf("a submitter error: %d %s", resp.StatusCode, body)
	}
	sub.err = errors.New("disk full")
	if resp, _ = invoke(t, url, "fn", `{}`, "X-Amz-Invocation-Type", "Event"); resp.StatusCode != 500 {
		t.Errorf("a plain submitter error: %d, want 500", resp.StatusCode)
	}
}
