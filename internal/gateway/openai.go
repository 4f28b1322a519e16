package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/controller"
	"tandem/internal/problem"
)

// ProtocolOpenAI is the OpenAI-compatible door: /v1/chat/completions,
// /v1/completions, /v1/embeddings and /v1/models.
const ProtocolOpenAI Protocol = "openai"

// MaxOpenAIBody bounds an OpenAI request's body: the gateway reads all of
// it to find the model field before it wakes anything. Larger bodies are
// answered 413.
const MaxOpenAIBody = 8 << 20

// openAIBodyTimeout bounds reading an OpenAI request's body, which happens
// before the model, and so its timeouts.request, is known.
const openAIBodyTimeout = 30 * time.Second

// OpenAIModels resolves the model names OpenAI clients send; the
// controller implements it. Both methods are called on the request path,
// concurrently, and must not block.
type OpenAIModels interface {
	// LookupOpenAI returns the deployment that serves a model name: a
	// deployment with an openai block, by its own name or an alias.
	LookupOpenAI(id string) (*controller.Deployment, bool)
	// OpenAIModels lists every such name, sorted; callers do not modify it.
	OpenAIModels() []controller.OpenAIModel
}

// MountOpenAI mounts the OpenAI-compatible routes on the gateway. A
// request is routed by its JSON model field to the deployment of that name
// or alias (only deployments whose manifest has an openai block), goes
// through the pipeline as protocol "openai", and is forwarded as it came to
// the same path on an instance; streamed answers (server-sent events) pass
// through as the instance writes them. The usage of answers is counted in
// tandem_openai_tokens_total, registered with reg (nil: not exported).
// Errors the gateway answers itself take OpenAI's shape. The gateway's
// Models must implement OpenAIModels; otherwise no model is found. Call it
// before the gateway serves.
func (g *Gateway) MountOpenAI(reg prometheus.Registerer) {
	o := &openAI{g: g, tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem_openai_tokens_total",
		Help: "Tokens of OpenAI-compatible answers, from their usage, by model (deployment), tenant and kind (prompt, completion).",
	}, []string{"model", "tenant", "kind"})}
	o.models, _ = g.models.(OpenAIModels)
	if o.models == nil {
		o.models = noOpenAIModels{}
	}
	if reg != nil {
		reg.MustRegister(o.tokens)
	}
	for _, p := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} {
		g.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { o.serve(w, r, p) })
	}
	g.mux.HandleFunc("/v1/models", o.list)
	g.mux.HandleFunc("/v1/models/{id...}", o.model)
}

// Viewer is an optional ability of a Stage: it says whether the caller who
// sent headers h may see model in a listing (GET /v1/models), without any
// side effect (no rate, quota or concurrency spent). nil means yes; a 401
// refuses the whole listing; any other refusal leaves the model out. A
// Stage without it lets every caller see every model. View is called
// concurrently on the request path and must not block.
type Viewer interface {
	View(h http.Header, model string) error
}

// view asks the stages that are Viewers whether h may see model.
func (g *Gateway) view(h http.Header, model string) error {
	for _, s := range g.stages {
		if v, ok := s.(Viewer); ok {
			if err := v.View(h, model); err != nil {
				return err
			}
		}
	}
	return nil
}

// visible returns the OpenAI names h may see, or the 401 that refuses them.
func (o *openAI) visible(h http.Header) ([]controller.OpenAIModel, error) {
	ms := o.models.OpenAIModels()
	if len(o.g.stages) == 0 {
		return ms, nil
	}
	out := make([]controller.OpenAIModel, 0, len(ms))
	for _, m := range ms {
		if err := o.g.view(h, m.Deployment.Manifest().Name); err != nil {
			if pe := problem.From(err); pe.Status == http.StatusUnauthorized {
				return nil, pe
			}
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

type noOpenAIModels struct{}

func (noOpenAIModels) LookupOpenAI(string) (*controller.Deployment, bool) { return nil, false }
func (noOpenAIModels) OpenAIModels() []controller.OpenAIModel             { return nil }

type openAI struct {
	g      *Gateway
	models OpenAIModels
	tokens *prometheus.CounterVec
	byKey  sync.Map // tokenKey -> *tokenCounters, resolved once per model and tenant
}

type tokenKey struct{ model, tenant string }

type tokenCounters struct{ prompt, completion prometheus.Counter }

// serve is the adapter of one inference route (path).
func (o *openAI) serve(w http.ResponseWriter, r *http.Request, path string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeOpenAIError(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s takes POST, not %s", path, r.Method)))
		return
	}
	body, err := readOpenAIBody(w, r)
	if err != nil {
		writeOpenAIError(w, err)
		return
	}
	var req struct {
		Model json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeOpenAIError(w, problem.New(http.StatusBadRequest, "invalid_json", "the request body is not a JSON object: "+err.Error()))
		return
	}
	var model string
	if len(req.Model) == 0 || json.Unmarshal(req.Model, &model) != nil || model == "" {
		writeOpenAIError(w, problem.New(http.StatusBadRequest, "model_required",
			"the request body must name a model: {\"model\": \"NAME\", ...}; GET /v1/models lists them").WithField("model"))
		return
	}
	d, ok := o.models.LookupOpenAI(model)
	if !ok {
		writeOpenAIError(w, problem.New(http.StatusNotFound, "model_not_found",
			fmt.Sprintf("The model `%s` does not exist: no deployment with an openai block is called so or has it among openai.models; GET /v1/models lists them", model)).WithField("model"))
		return
	}
	ex, err := o.g.Begin(r.Context(), ProtocolOpenAI, d.Manifest().Name, r.Header)
	if err != nil {
		w.Header().Set(HeaderColdStart, "false")
		writeOpenAIError(w, err)
		return
	}
	w, done := ex.cacheOpenAI(w, r, path, body)
	if done {
		return
	}
	uw := &usageWriter{ResponseWriter: w}
	lease, served, err := o.g.acquireWithin(r.Context(), ex.Deployment) // the pool bounds the wait itself
	if err != nil {
		w.Header().Set(HeaderColdStart, "false")
		writeOpenAIError(uw, err)
		ex.Finish(uw.code(), false, err)
		return
	}
	if served != ex.Deployment {
		w.Header().Set(HeaderFallback, served.Name)
	}
	defer lease.Release()
	// Deferred, so that they run when forward cuts a broken stream short
	// (http.ErrAbortHandler).
	defer func() {
		ex.Finish(uw.code(), lease.ColdStart, nil)
		if uw.scan.found {
			o.count(ex, uw.scan.last)
		}
	}()
	if lease.ColdStart {
		ex.Deployment.Metrics.ColdWait.Observe(lease.Waited.Seconds())
		w.Header().Set(HeaderColdStart, "true")
	} else {
		w.Header().Set(HeaderColdStart, "false")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	// An answer must arrive as it is, for usage to be read from it, and a
	// compressed event stream would not flush event by event.
	r.Header.Del("Accept-Encoding")
	rctx, cancel := context.WithTimeout(r.Context(), ex.Timeout())
	defer cancel()
	d = ex.Deployment
	o.g.forward(rctx, uw, r, Route{Lease: lease, Model: ex.Model, Path: path, Reacquire: served.Pool.AcquireExcept, Retried: d.Metrics.Retries.Inc,
		WriteError: writeOpenAIError})
}

// count adds an answer's usage to the token counters.
func (o *openAI) count(ex *Exchange, u usage) {
	k := tokenKey{ex.Model, ex.Tenant}
	c, ok := o.byKey.Load(k)
	if !ok {
		c, _ = o.byKey.LoadOrStore(k, &tokenCounters{
			prompt:     o.tokens.WithLabelValues(k.model, k.tenant, "prompt"),
			completion: o.tokens.WithLabelValues(k.model, k.tenant, "completion"),
		})
	}
	tc := c.(*tokenCounters)
	if u.PromptTokens > 0 {
		tc.prompt.Add(float64(u.PromptTokens))
	}
	if u.CompletionTokens > 0 {
		tc.completion.Add(float64(u.CompletionTokens))
	}
}

// readOpenAIBody reads a request's body whole, up to MaxOpenAIBody.
func readOpenAIBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBody(w, r, MaxOpenAIBody, openAIBodyTimeout, problem.New(http.StatusRequestEntityTooLarge, "request_too_large",
		fmt.Sprintf("the request body is larger than %d bytes", MaxOpenAIBody)))
}

// readBody reads a request's body whole, at most limit bytes (else
// tooLarge) and within timeout (else 408), for the doors that must see
// the body before they can route it. A body refused or cut ends the
// connection: net/http would otherwise read what is left of it before
// sending the answer.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration, tooLarge error) ([]byte, error) {
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, tooLarge
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(timeout))
	defer rc.SetReadDeadline(time.Time{})
	buf := bytes.NewBuffer(make([]byte, 0, max(r.ContentLength, 512)))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		w.Header().Set("Connection", "close")
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return buf.Bytes(), nil
	case errors.As(err, &mbe):
		return nil, tooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, problem.New(http.StatusRequestTimeout, "body_timeout",
			fmt.Sprintf("the request body did not arrive within %s", timeout))
	default:
		return nil, problem.New(http.StatusBadRequest, "read_error", "reading the request body: "+err.Error())
	}
}

// openAIModel is one entry of GET /v1/models.
type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func toOpenAIModel(m controller.OpenAIModel) openAIModel {
	return openAIModel{ID: m.ID, Object: "model", Created: m.Created.Unix(), OwnedBy: "tandem"}
}

// list answers GET /v1/models: every name a request may give, each
// deployment with an openai block by its own name and its aliases, less
// those the stages do not let the caller see (Viewer).
func (o *openAI) list(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeOpenAIError(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "/v1/models takes GET"))
		return
	}
	ms, err := o.visible(r.Header)
	if err != nil {
		writeOpenAIError(w, err)
		return
	}
	out := struct {
		Object string        `json:"object"`
		Data   []openAIModel `json:"data"`
	}{Object: "list", Data: make([]openAIModel, 0, len(ms))}
	for _, m := range ms {
		out.Data = append(out.Data, toOpenAIModel(m))
	}
	writeJSON(w, http.StatusOK, out)
}

// model answers GET /v1/models/{id}.
func (o *openAI) model(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeOpenAIError(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "/v1/models/{model} takes GET"))
		return
	}
	id := r.PathValue("id")
	ms, err := o.visible(r.Header)
	if err != nil {
		writeOpenAIError(w, err)
		return
	}
	for _, m := range ms {
		if m.ID == id {
			writeJSON(w, http.StatusOK, toOpenAIModel(m))
			return
		}
	}
	writeOpenAIError(w, problem.New(http.StatusNotFound, "model_not_found",
		fmt.Sprintf("The model `%s` does not exist", id)).WithField("model"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// openAIError is OpenAI's error shape: {"error": {...}}.
type openAIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// writeOpenAIError answers err in OpenAI's error shape: the message, a type
// by status as OpenAI's clients know them, the field as param, and
// tandem's code (unauthenticated, rate_limited, queue_full, ...). The
// status and Retry-After are those of problem.Write.
func writeOpenAIError(w http.ResponseWriter, err error) {
	e := problem.From(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	e.WriteHeader(h)
	oe := openAIError{Message: e.Message, Type: openAIErrorType(e), Code: &e.Code}
	if e.Field != "" {
		oe.Param = &e.Field
	}
	writeJSON(w, e.Status, struct {
		Error openAIError `json:"error"`
	}{oe})
}

func openAIErrorType(e *problem.Error) string {
	switch {
	case e.Status == http.StatusUnauthorized:
		return "authentication_error"
	case e.Status == http.StatusForbidden:
		return "permission_error"
	case e.Status == http.StatusTooManyRequests && (e.Code == "budget_exceeded" || e.Code == "quota_exceeded"):
		return "insufficient_quota"
	case e.Status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case e.Status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

// usageWriter passes an answer on to the client and reads the usage of a
// successful one as it goes by (usageScanner).
type usageWriter struct {
	http.ResponseWriter
	status int
	scan   usageScanner
}

func (u *usageWriter) WriteHeader(code int) {
	if u.status == 0 && code >= 200 {
		u.status = code
	}
	u.ResponseWriter.WriteHeader(code)
}

func (u *usageWriter) Write(b []byte) (int, error) {
	if u.status == 0 {
		u.status = http.StatusOK
	}
	if u.status < 300 {
		u.scan.Write(b)
	}
	return u.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (u *usageWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func (u *usageWriter) code() int {
	if u.status == 0 {
		return http.StatusOK
	}
	return u.status
}

// usage is the part of an OpenAI answer's usage object that is metered.
type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

// usageScanner finds the last non-null "usage" object of a JSON answer or
// of a stream of server-sent events as its bytes pass, in writes of any
// size: bytes.Index looks for the key, and only the object after it (at
// most maxUsageBytes) is copied and decoded. The key in a JSON string is
// escaped (\"usage\"), so it is only found as a key.
type usageScanner struct {
	state   uint8
	partial int // bytes of usageKey that ended the last write (scanKey)
	obj     []byte
	depth   int
	inStr   bool
	esc     bool
	last    usage
	found   bool
}

const (
	scanKey uint8 = iota
	scanColon
	scanValue
	scanObject
)

const (
	usageKey      = `"usage"`
	maxUsageBytes = 4 << 10
)

// usageTail is usageKey without its first quote: searching for it is
// three times as fast as for the key, as quotes are everywhere in JSON.
var usageTail = []byte(usageKey[1:])

// indexKey returns where usageKey first starts in p, or -1.
func indexKey(p []byte) int {
	for off := 1; off < len(p); {
		i := bytes.Index(p[off:], usageTail)
		if i < 0 {
			return -1
		}
		if i += off; p[i-1] == '"' {
			return i - 1
		}
		off = i + 1
	}
	return -1
}

// Write scans p, the next bytes of the answer.
func (s *usageScanner) Write(p []byte) {
	for len(p) > 0 {
		switch s.state {
		case scanKey:
			if s.partial > 0 {
				need := usageKey[s.partial:]
				n := min(len(need), len(p))
				if string(p[:n]) == need[:n] {
					if n < len(need) {
						s.partial += n
						return
					}
					s.partial = 0
					s.state = scanColon
					p = p[n:]
					continue
				}
				s.partial = 0
			}
			if i := indexKey(p); i >= 0 {
				s.state = scanColon
				p = p[i+len(usageKey):]
				continue
			}
			s.partial = keyPrefixAtEnd(p)
			return
		case scanColon, scanValue:
			c := p[0]
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				p = p[1:]
				continue
			}
			switch {
			case s.state == scanColon && c == ':':
				s.state = scanValue
				p = p[1:]
			case s.state == scanValue && c == '{':
				s.state, s.obj, s.depth, s.inStr, s.esc = scanObject, s.obj[:0], 0, false, false
			default: // not a key, or null
				s.state = scanKey
			}
		case scanObject:
			i, done := s.objectEnd(p)
			if len(s.obj)+i > maxUsageBytes {
				s.state = scanKey
				continue
			}
			s.obj = append(s.obj, p[:i]...)
			p = p[i:]
			if done {
				var u usage
				if json.Unmarshal(s.obj, &u) == nil {
					s.last, s.found = u, true
				}
				s.state = scanKey
			}
		}
	}
}

// objectEnd returns how many bytes of p belong to the object being read,
// and whether they end it.
func (s *usageScanner) objectEnd(p []byte) (int, bool) {
	for i, c := range p {
		switch {
		case s.esc:
			s.esc = false
		case s.inStr:
			switch c {
			case '\\':
				s.esc = true
			case '"':
				s.inStr = false
			}
		case c == '"':
			s.inStr = true
		case c == '{':
			s.depth++
		case c == '}':
			s.depth--
			if s.depth == 0 {
				return i + 1, true
			}
		}
	}
	return len(p), false
}

// keyPrefixAtEnd returns the length of the longest start of usageKey that
// p ends with. The key's only quote among its first six bytes is its
// first, so the start can only be at p's last quote.
func keyPrefixAtEnd(p []byte) int {
	from := max(0, len(p)-(len(usageKey)-1))
	i := bytes.LastIndexByte(p[from:], '"')
	if i < 0 {
		return 0
	}
	tail := p[from+i:]
	if string(tail) == usageKey[:len(tail)] {
		return len(tail)
	}
	return 0
}
