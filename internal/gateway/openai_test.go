package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// oaiInstance answers like an OpenAI-compatible model server and records
// what it received. A streamed answer writes its first event, then waits
// for hold (when not nil) before its last.
type oaiInstance struct {
	mu   sync.Mutex
	seen []oaiRequest
	hold chan struct{}
}

type oaiRequest struct {
	path   string
	body   []byte
	header http.Header
}

func (o *oaiInstance) requests() []oaiRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

func (o *oaiInstance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	o.mu.Lock()
	o.seen = append(o.seen, oaiRequest{r.URL.Path, body, r.Header.Clone()})
	hold := o.hold
	o.mu.Unlock()
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		Fail          bool   `json:"fail"`
		HangUp        bool   `json:"hangup"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	json.Unmarshal(body, &req)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case req.HangUp:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	case req.Fail:
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"boom","type":"server_error","param":null,"code":null},"usage":{"prompt_tokens":1000,"completion_tokens":1000}}`)
	case r.URL.Path == "/v1/embeddings":
		fmt.Fprintf(w, `{"object":"list","model":%q,"data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":3,"total_tokens":3}}`, req.Model)
	case !req.Stream:
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"say \"usage\": {\"prompt_tokens\": 99}"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}}`, req.Model)
	default:
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}],\"usage\":null}\n\n")
		rc.Flush()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n")
		if req.StreamOptions.IncludeUsage {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n")
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
}

// oaiGateway is a gateway with the OpenAI routes over a controller with the
// fake backend and three deployments: chat (aliases gpt-test and
// org/Chat-7B), embed (openai: {}) and plain (no openai block), and
// oaiStage.
type oaiGateway struct {
	url      string
	inst     *oaiInstance
	ctrl     *controller.Controller
	registry *prometheus.Registry
}

func setupOpenAI(t testing.TB) *oaiGateway {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	inst := &oaiInstance{}
	m := metrics.New()
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(inst)},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: m})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	for _, y := range []string{
		"name: chat\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\nopenai: {models: [gpt-test, org/Chat-7B]}\n",
		"name: embed\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\nopenai: {}\n",
		"name: plain\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n",
	} {
		apply(t, c, y)
	}
	g := gateway.New(c, nil)
	g.Use(oaiStage{})
	g.MountOpenAI(m.Registry)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &oaiGateway{url: srv.URL, inst: inst, ctrl: c, registry: m.Registry}
}

// oaiStage names the tenant from X-Tenant and refuses with the status in
// X-Refuse. As a Viewer it refuses listings with 401 when X-View is "401",
// and shows only the deployment it names otherwise.
type oaiStage struct{}

var _ gateway.Viewer = oaiStage{}

func (oaiStage) Admit(_ context.Context, ex *gateway.Exchange) error {
	ex.Tenant = ex.Header.Get("X-Tenant")
	switch ex.Header.Get("X-Refuse") {
	case "401":
		return problem.New(http.StatusUnauthorized, "unauthenticated", "an API key is required")
	case "403":
		return problem.New(http.StatusForbidden, "forbidden", "tenant may not call this model")
	case "429":
		e := problem.New(http.StatusTooManyRequests, "rate_limited", "over its rate")
		e.RetryAfter = 2 * time.Second
		return e
	}
	return nil
}

func (oaiStage) View(h http.Header, model string) error {
	switch v := h.Get("X-View"); v {
	case "":
		return nil
	case "401":
		return problem.New(http.StatusUnauthorized, "unauthenticated", "an API key is required")
	default:
		if v != model {
			return problem.New(http.StatusForbidden, "forbidden", "not yours")
		}
		return nil
	}
}

func apply(t testing.TB, c *controller.Controller, yaml string) {
	t.Helper()
	m, err := manifest.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func (o *oaiGateway) post(t *testing.T, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, o.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// scrape returns the registry in the text format.
func (o *oaiGateway) scrape(t *testing.T) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// oaiErr is OpenAI's error shape, with param and code as raw JSON so that
// a null is told from a missing field.
type oaiErr struct {
	Error *struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

func decodeOAIErr(t *testing.T, b []byte) oaiErr {
	t.Helper()
	var e oaiErr
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Param == nil || e.Error.Code == nil {
		t.Fatalf("not OpenAI's error shape {\"error\":{\"message\",\"type\",\"param\",\"code\"}}: %v: %s", err, b)
	}
	return e
}

func TestOpenAI_RoutesByNameAndAlias(t *testing.T) {
	o := setupOpenAI(t)
	tests := []struct {
		path, model, deployment string
	}{
		{"/v1/chat/completions", "chat", "chat"},
		{"/v1/chat/completions", "gpt-test", "chat"},
		{"/v1/completions", "org/Chat-7B", "chat"},
		{"/v1/embeddings", "embed", "embed"},
	}
	for _, tt := range tests {
		t.Run(tt.model+tt.path, func(t *testing.T) {
			before := len(o.inst.requests())
			// Odd spacing, key order and an unknown field: the instance
			// must get these bytes exactly.
			body := fmt.Sprintf("{ \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\n  \"model\" : %q, \"x_extra\": [1, 2.50] }", tt.model)
			resp, b := o.post(t, tt.path, body, "Accept-Encoding", "gzip")
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var ans struct{ Model string }
			if err := json.Unmarshal(b, &ans); err != nil || ans.Model != tt.model {
				t.Fatalf("answer %s (%v), want the instance's answer echoing model %q", b, err, tt.model)
			}
			seen := o.inst.requests()
			if len(seen) != before+1 {
				t.Fatalf("instance saw %d requests, want %d", len(seen), before+1)
			}
			got := seen[len(seen)-1]
			if got.path != tt.path || string(got.body) != body {
				t.Errorf("instance got %s %q, want %s %q", got.path, got.body, tt.path, body)
			}
			if ae := got.header.Get("Accept-Encoding"); ae != "" {
				t.Errorf("instance got Accept-Encoding %q; answers must come uncompressed to be metered", ae)
			}
		})
	}
	// Each request went to the deployment its model names.
	metricsText := o.scrape(t)
	for _, want := range []string{
		`tandem_requests_total{code="200",model="chat",protocol="openai"} 3`,
		`tandem_requests_total{code="200",model="embed",protocol="openai"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metricsText, `model="plain",protocol="openai"`) {
		t.Error("a request reached plain, which has no openai block")
	}
}

func TestOpenAI_Errors(t *testing.T) {
	o := setupOpenAI(t)
	chat := `{"model":"chat","messages":[]}`
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		header  []string
		status  int
		typ     string
		code    string
		param   string // "" means null
		retryAf string
	}{
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"gpt-5"}`, nil, 404, "invalid_request_error", "model_not_found", "model", ""},
		{"model without openai block", "POST", "/v1/chat/completions", `{"model":"plain"}`, nil, 404, "invalid_request_error", "model_not_found", "model", ""},
		{"no model", "POST", "/v1/completions", `{"prompt":"x"}`, nil, 400, "invalid_request_error", "model_required", "model", ""},
		{"model not a string", "POST", "/v1/completions", `{"model":7}`, nil, 400, "invalid_request_error", "model_required", "model", ""},
		{"not JSON", "POST", "/v1/embeddings", `model=chat`, nil, 400, "invalid_request_error", "invalid_json", "", ""},
		{"GET", "GET", "/v1/chat/completions", "", nil, 405, "invalid_request_error", "method_not_allowed", "", ""},
		{"too large", "POST", "/v1/embeddings", `{"model":"embed","input":"` + strings.Repeat("a", gateway.MaxOpenAIBody) + `"}`, nil, 413, "invalid_request_error", "request_too_large", "", ""},
		{"unauthenticated", "POST", "/v1/chat/completions", chat, []string{"X-Refuse", "401"}, 401, "authentication_error", "unauthenticated", "", ""},
		{"forbidden", "POST", "/v1/chat/completions", chat, []string{"X-Refuse", "403"}, 403, "permission_error", "forbidden", "", ""},
		{"rate limited", "POST", "/v1/chat/completions", chat, []string{"X-Refuse", "429"}, 429, "rate_limit_error", "rate_limited", "", "2"},
		{"unknown model listed", "GET", "/v1/models/plain", "", nil, 404, "invalid_request_error", "model_not_found", "model", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, o.url+tt.path, strings.NewReader(tt.body))
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			e := decodeOAIErr(t, b).Error
			if e.Type != tt.typ || string(e.Code) != `"`+tt.code+`"` {
				t.Errorf("type %q code %s, want %q %q: %s", e.Type, e.Code, tt.typ, tt.code, b)
			}
			wantParam := "null"
			if tt.param != "" {
				wantParam = `"` + tt.param + `"`
			}
			if string(e.Param) != wantParam {
				t.Errorf("param %s, want %s", e.Param, wantParam)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAf {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAf)
			}
		})
	}
	if n := len(o.inst.requests()); n != 0 {
		t.Errorf("refused requests reached an instance %d times", n)
	}
	// Refusals by the admission stages are counted like any other door's.
	if m := o.scrape(t); !strings.Contains(m, `tandem_requests_total{code="429",model="chat",protocol="openai"} 1`) {
		t.Errorf("the 429 is not counted:\n%s", grep(m, "tandem_requests_total"))
	}
}

// The instance's own error answers pass through untouched.
func TestOpenAI_InstanceErrorPassesThrough(t *testing.T) {
	o := setupOpenAI(t)
	resp, b := o.post(t, "/v1/chat/completions", `{"model":"gpt-test","fail":true}`, "X-Tenant", "acme")
	if resp.StatusCode != 500 || !strings.Contains(string(b), `"message":"boom"`) {
		t.Fatalf("%d %s, want the instance's 500", resp.StatusCode, b)
	}
	if m := o.scrape(t); strings.Contains(m, "tandem_openai_tokens_total{") {
		t.Errorf("an error answer's usage was counted:\n%s", grep(m, "tandem_openai_tokens_total"))
	}
}

// An instance that fails a request without answering gets the gateway's
// error, in OpenAI's shape too.
func TestOpenAI_InstanceFailure(t *testing.T) {
	o := setupOpenAI(t)
	resp, b := o.post(t, "/v1/chat/completions", `{"model":"chat","hangup":true}`)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("%d %s, want 502", resp.StatusCode, b)
	}
	if e := decodeOAIErr(t, b).Error; e.Type != "server_error" || !strings.Contains(e.Message, "chat") {
		t.Errorf("error %+v, want a server_error naming the model", e)
	}
}

func TestOpenAI_Models(t *testing.T) {
	o := setupOpenAI(t)
	resp, err := http.Get(o.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "tandem" || m.Created < time.Now().Add(-time.Hour).Unix() {
			t.Errorf("entry %+v, want object model, owned_by tandem, created when deployed", m)
		}
	}
	if want := []string{"chat", "embed", "gpt-test", "org/Chat-7B"}; list.Object != "list" || !slices.Equal(ids, want) {
		t.Errorf("GET /v1/models: object %q, ids %q; want list of %q", list.Object, ids, want)
	}
	code, body, _ := get(t, o.url+"/v1/models/org/Chat-7B")
	if code != 200 || !strings.Contains(body, `"id":"org/Chat-7B"`) {
		t.Errorf("GET /v1/models/org/Chat-7B: %d %s", code, body)
	}
}

// Listings show a caller only what the stages let it see.
func TestOpenAI_ModelsViewedByStages(t *testing.T) {
	o := setupOpenAI(t)
	list := func(path, view string) (int, string) {
		req, _ := http.NewRequest("GET", o.url+path, nil)
		req.Header.Set("X-View", view)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := list("/v1/models", "401"); code != 401 || decodeOAIErr(t, []byte(body)).Error.Type != "authentication_error" {
		t.Errorf("unauthenticated listing: %d %s", code, body)
	}
	code, body := list("/v1/models", "embed")
	if code != 200 || !strings.Contains(body, `"id":"embed"`) || strings.Contains(body, `"id":"chat"`) || strings.Contains(body, "gpt-test") {
		t.Errorf("listing for embed only: %d %s", code, body)
	}
	if code, body := list("/v1/models/gpt-test", "embed"); code != 404 {
		t.Errorf("a model the caller may not see: %d %s, want 404", code, body)
	}
	if code, body := list("/v1/models/gpt-test", "chat"); code != 200 {
		t.Errorf("a model the caller may see: %d %s", code, body)
	}
}

// A deploy may not take another deployment's OpenAI name; a deployment's
// own new aliases route at once.
func TestOpenAI_AliasesAtDeploy(t *testing.T) {
	o := setupOpenAI(t)
	for _, y := range []string{
		"name: other\nruntime: {command: [x]}\nopenai: {models: [gpt-test]}\n",
		"name: other\nruntime: {command: [x]}\nopenai: {models: [embed]}\n",
		"name: gpt-test\nruntime: {command: [x]}\nopenai: {}\n",
	} {
		m, err := manifest.Parse([]byte(y), "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.ctrl.Apply(context.Background(), m)
		if pe := problem.From(err); err == nil || pe.Status != http.StatusConflict {
			t.Errorf("Apply(%q) = %v, want a 409", y, err)
		}
	}
	// Without an openai block a deployment may have such a name.
	apply(t, o.ctrl, "name: gpt-test\nruntime: {command: [x]}\n")
	apply(t, o.ctrl, "name: chat\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\nopenai: {models: [gpt-next]}\n")
	if resp, b := o.post(t, "/v1/chat/completions", `{"model":"gpt-next"}`); resp.StatusCode != 200 {
		t.Errorf("new alias: %d %s", resp.StatusCode, b)
	}
	if resp, b := o.post(t, "/v1/chat/completions", `{"model":"gpt-test"}`); resp.StatusCode != 404 {
		t.Errorf("dropped alias: %d %s, want 404", resp.StatusCode, b)
	}
}

// The first event of a streamed answer reaches the client while the
// instance still holds the rest, also when the request woke the model.
func TestOpenAI_StreamIsNotBuffered(t *testing.T) {
	o := setupOpenAI(t)
	hold := make(chan struct{})
	o.inst.mu.Lock()
	o.inst.hold = hold
	o.inst.mu.Unlock()
	req, _ := http.NewRequest("POST", o.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true}}`))
	req.Header.Set("X-Tenant", "acme")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get(gateway.HeaderColdStart) != "true" {
		t.Fatalf("%d %v, want a cold 200 event stream", resp.StatusCode, resp.Header)
	}
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	if err != nil || !strings.Contains(first, `"content":"Hel"`) {
		t.Fatalf("first event %q (%v)", first, err)
	}
	close(hold) // only now may the instance write the rest
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), `"content":"lo"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("rest %q (%v)", rest, err)
	}
	waitMetric(t, o, `tandem_openai_tokens_total{kind="completion",model="chat",tenant="acme"} 2`)
	waitMetric(t, o, `tandem_openai_tokens_total{kind="prompt",model="chat",tenant="acme"} 5`)
}

func TestOpenAI_UsageMetered(t *testing.T) {
	o := setupOpenAI(t)
	for range 2 {
		if resp, b := o.post(t, "/v1/chat/completions", `{"model":"org/Chat-7B"}`, "X-Tenant", "acme"); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if resp, b := o.post(t, "/v1/embeddings", `{"model":"embed","input":"a b c"}`, "X-Tenant", "beta"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// A stream without include_usage carries no usage: nothing to count.
	if resp, b := o.post(t, "/v1/chat/completions", `{"model":"chat","stream":true}`, "X-Tenant", "gamma"); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// The chat answer's content says "usage" too, escaped in its string:
	// only the usage object counts (5 and 7 per answer, not 99).
	waitMetric(t, o, `tandem_openai_tokens_total{kind="prompt",model="chat",tenant="acme"} 10`)
	waitMetric(t, o, `tandem_openai_tokens_total{kind="completion",model="chat",tenant="acme"} 14`)
	waitMetric(t, o, `tandem_openai_tokens_total{kind="prompt",model="embed",tenant="beta"} 3`)
	m := o.scrape(t)
	if strings.Contains(m, `kind="completion",model="embed"`) && !strings.Contains(m, `tandem_openai_tokens_total{kind="completion",model="embed",tenant="beta"} 0`) {
		t.Errorf("embeddings counted completion tokens:\n%s", grep(m, "tandem_openai_tokens_total"))
	}
	if strings.Contains(m, `tenant="gamma"`) {
		t.Errorf("a stream without usage was counted:\n%s", grep(m, "tandem_openai_tokens_total"))
	}
}

// waitMetric waits for a series: a request is metered just after its answer
// is sent. The bound is against a hang, not a timing check.
func waitMetric(t *testing.T, o *oaiGateway, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := o.scrape(t)
		if strings.Contains(m, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %s:\n%s", want, grep(m, "tandem_openai_tokens_total"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// BenchmarkOpenAI compares a warm chat completion through the OpenAI door
// (the body read whole, its model decoded, the answer's usage scanned and
// counted) with the same request through pass-through /models/{name}/.
func BenchmarkOpenAI(b *testing.B) {
	o := setupOpenAI(b)
	body := `{"model":"chat","messages":[{"role":"user","content":"Say hello to tandem please"}],"temperature":0.7,"max_tokens":64}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for _, bm := range []struct{ name, path string }{
		{"openai", "/v1/chat/completions"},
		{"passthrough", "/models/chat/v1/chat/completions"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Post(o.url+bm.path, "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
