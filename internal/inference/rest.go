package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"tandem/internal/pool"
	"tandem/internal/problem"
)

// Handler returns the REST handler for the v2 routes:
//
//	GET  /v2                                        server metadata
//	GET  /v2/health/live, /v2/health/ready          server health
//	GET  /v2/models/{name}[/versions/{v}]           model metadata
//	GET  /v2/models/{name}[/versions/{v}]/ready     model readiness
//	POST /v2/models/{name}[/versions/{v}]/infer     inference
//
// Only infer ever wakes a model (and metadata, for a model without cached
// Metadata).
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := strings.CutPrefix(r.URL.Path, "/v2")
	if !ok || (p != "" && p[0] != '/') {
		notFound(w, r)
		return
	}
	switch p {
	case "", "/":
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, s.serverMetadata())
		}
		return
	case "/health/live":
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, map[string]bool{"live": true})
		}
		return
	case "/health/ready":
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/models/")
	if !ok {
		notFound(w, r)
		return
	}
	parts := strings.Split(rest, "/")
	name, parts := parts[0], parts[1:]
	var version string
	if len(parts) >= 2 && parts[0] == "versions" {
		version, parts = parts[1], parts[2:]
		if version == "" {
			notFound(w, r)
			return
		}
	}
	action := ""
	switch {
	case len(parts) == 1 && (parts[0] == "ready" || parts[0] == "infer"):
		action = parts[0]
	case len(parts) == 1 && parts[0] == "", len(parts) == 0:
	default:
		notFound(w, r)
		return
	}
	if name == "" {
		notFound(w, r)
		return
	}
	switch action {
	case "":
		if allow(w, r, http.MethodGet) {
			s.inPipeline(w, r, name, func(w http.ResponseWriter, r *http.Request) { s.modelMetadata(w, r, name, version) })
		}
	case "ready":
		if allow(w, r, http.MethodGet) {
			s.inPipeline(w, r, name, func(w http.ResponseWriter, r *http.Request) { s.modelReady(w, name, version) })
		}
	case "infer":
		if allow(w, r, http.MethodPost) {
			s.inPipeline(w, r, name, func(w http.ResponseWriter, r *http.Request) { s.inferHTTP(w, r, name, version) })
		}
	}
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	if method == http.MethodGet {
		w.Header().Set("Allow", "GET, HEAD")
	} else {
		w.Header().Set("Allow", method)
	}
	WriteError(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed",
		fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method)))
	return false
}

func notFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, problem.New(http.StatusNotFound, "not_found",
		fmt.Sprintf("no v2 endpoint at %s (see GET /v2/models/{name}, POST /v2/models/{name}/infer)", r.URL.Path)))
}

func (s *Service) modelMetadata(w http.ResponseWriter, r *http.Request, name, version string) {
	m, err := s.lookup(name, version)
	if err != nil {
		WriteError(w, err)
		return
	}
	if m.Metadata == nil { // not the built-in runtime: ask an instance
		s.forward(w, r, m, r.URL.Path, nil)
		return
	}
	writeJSON(w, http.StatusOK, metadataOf(m))
}

// modelReady answers 200 {"name", "ready"} whether or not an instance is
// ready now: the protocol's answer is the body (as gRPC's ModelReady is OK
// with ready false), and its non-2xx answers must carry {"error"} instead.
// A model scaled to zero is not ready, yet an infer request wakes it.
func (s *Service) modelReady(w http.ResponseWriter, name, version string) {
	m, err := s.lookup(name, version)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, modelReadyResponse{Name: name, Ready: m.Ready != nil && m.Ready()})
}

// modelReadyResponse is the protocol's $ready_model_response.
type modelReadyResponse struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

func (s *Service) inferHTTP(w http.ResponseWriter, r *http.Request, name, version string) {
	m, err := s.lookup(name, version)
	if err != nil {
		WriteError(w, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		WriteError(w, err)
		return
	}
	w, done := cached(w, r, body)
	if done {
		return
	}
	if m.Metadata == nil { // a v2 server of the user's: pass it through
		if len(body) == 0 {
			WriteError(w, problem.New(http.StatusBadRequest, CodeEmptyBody, "the request body is empty; send a v2 inference request"))
			return
		}
		s.forward(w, r, m, r.URL.Path, body)
		return
	}
	hl, err := ParseBinaryLength(r.Header.Get(HeaderBinaryLength))
	if err != nil {
		WriteError(w, err)
		return
	}
	req, err := prepare(m, body, hl)
	if err != nil {
		WriteError(w, err)
		return
	}
	// Batched or not, the decoded tensors go on in the binary data
	// extension: the runtime need not parse the JSON numbers again.
	resp, cold, err := s.infer(r.Context(), m, req)
	w.Header().Set(HeaderColdStart, strconv.FormatBool(cold))
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			err = problem.New(499, "client_closed", "the client closed the request")
		}
		WriteError(w, err)
		return
	}
	WriteInferResponse(w, resp, BinaryOutputs(req))
}

// readBody reads a request body up to the limit: 413 beyond it.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, s.errBodyTooLarge(limit)
	}
	rd := http.MaxBytesReader(w, r.Body, limit)
	n := 512
	if r.ContentLength > 0 {
		n = int(r.ContentLength) + 1
	}
	buf := make([]byte, 0, n)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		k, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, s.errBodyTooLarge(limit)
			}
			var pe *problem.Error
			if errors.As(err, &pe) {
				return nil, pe // the body's deadline (408)
			}
			return nil, problem.New(http.StatusBadRequest, "read_error", "reading the request body: "+err.Error())
		}
	}
}

// forward sends r (with body, when not nil) to an instance of m at path and
// copies the answer back.
func (s *Service) forward(w http.ResponseWriter, r *http.Request, m Model, path string, body []byte) {
	resp, cold, err := s.sendFrom(r, m, path, body)
	w.Header().Set(HeaderColdStart, strconv.FormatBool(cold))
	if err != nil {
		WriteError(w, err)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	conn := resp.Header["Connection"]
	for k, vs := range resp.Header {
		if !pool.IsHop(k, conn) { // the one hop-by-hop list
			h[k] = vs
		}
	}
	h.Set(HeaderColdStart, strconv.FormatBool(cold))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (s *Service) sendFrom(r *http.Request, m Model, path string, body []byte) (*http.Response, bool, error) {
	u := &url.URL{Path: path, RawQuery: r.URL.RawQuery}
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), rd)
	if err != nil {
		return nil, false, err
	}
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if !pool.IsHop(k, conn) {
			req.Header[k] = vs
		}
	}
	req.Header.Del("Content-Length")
	req.Header.Del("Expect") // the body is already here
	if m.Upstream == nil {
		return nil, false, problem.New(http.StatusServiceUnavailable, "no_upstream", fmt.Sprintf("model %q has no instances to send to", m.Name))
	}
	return m.Upstream.Do(r.Context(), req)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// WriteInferResponse answers resp, with the outputs for which binary is
// true in the binary data extension (nil: all JSON).
func WriteInferResponse(w http.ResponseWriter, resp *InferResponse, binary func(string) bool) {
	bp := bufPool.Get().(*[]byte)
	b, n := resp.AppendWith((*bp)[:0], binary)
	h := w.Header()
	if n >= 0 {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(HeaderBinaryLength, strconv.Itoa(n))
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	if cap(b) <= 1<<20 {
		*bp = b
		bufPool.Put(bp)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, err)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
