// Package inferencetest has hand-written stand-ins for the gateway's side of
// package inference: a fixed set of Models and Upstreams that record their
// calls, one answering from an http.Handler and one sending to a real
// server (a runtime process) over loopback.
package inferencetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"

	"tandem/internal/inference"
)

// Models is a fixed set of models.
type Models map[string]inference.Model

// Model returns the model called name.
func (m Models) Model(name string) (inference.Model, bool) {
	x, ok := m[name]
	return x, ok
}

// Names lists the models, sorted.
func (m Models) Names() []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Upstream answers from Handler and records each request's method and
// path. ColdStart is reported for every call.
type Upstream struct {
	Handler   http.Handler
	ColdStart bool
	mu        sync.Mutex
	calls     []string
}

// Do serves req with u.Handler.
func (u *Upstream) Do(ctx context.Context, req *http.Request) (*http.Response, bool, error) {
	u.mu.Lock()
	u.calls = append(u.calls, req.Method+" "+req.URL.RequestURI())
	u.mu.Unlock()
	rec := httptest.NewRecorder()
	u.Handler.ServeHTTP(rec, req.WithContext(ctx))
	return rec.Result(), u.ColdStart, nil
}

// Calls returns the requests so far, as "METHOD /path?query".
func (u *Upstream) Calls() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.calls...)
}

// HTTPUpstream sends requests to a real server at BaseURL (such as
// http://127.0.0.1:40123) and counts them. Its first call reports a cold
// start, as the activator would for a model woken from zero.
type HTTPUpstream struct {
	BaseURL string
	Client  *http.Client // nil: a client with a keep-alive pool for 128 connections
	calls   atomic.Int64
	once    sync.Once
}

// Do sends req to u.BaseURL.
func (u *HTTPUpstream) Do(ctx context.Context, req *http.Request) (*http.Response, bool, error) {
	u.once.Do(func() {
		if u.Client == nil {
			u.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxIdleConns: 128}}
		}
	})
	cold := u.calls.Add(1) == 1
	base, err := url.Parse(u.BaseURL)
	if err != nil {
		return nil, cold, err
	}
	out := req.Clone(ctx)
	out.URL.Scheme, out.URL.Host = base.Scheme, base.Host
	out.Host, out.RequestURI = "", ""
	resp, err := u.Client.Do(out)
	return resp, cold, err
}

// Calls returns the number of requests sent.
func (u *HTTPUpstream) Calls() int64 { return u.calls.Load() }
