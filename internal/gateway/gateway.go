// Package gateway is tandem's front door: it routes /models/{name}/... to a
// ready instance of that model (waking it through the activator when it is
// scaled to zero), streaming both ways, and answers every error in one JSON
// shape. The routing table is a snapshot read without locks.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"tandem/internal/controller"
	"tandem/internal/problem"
	"tandem/internal/shadow"
)

// HeaderColdStart is set on every model response: true when the request
// waited for an instance to start.
const HeaderColdStart = "X-Tandem-Cold-Start"

// Models resolves a model name to its deployment. Lookup must not block.
type Models interface {
	Lookup(name string) (*controller.Deployment, bool)
	// Route picks the revision that serves a request for name (which may
	// be NAME@TAG) with headers h, and the revision it is mirrored to, if
	// any. It must not block.
	Route(name string, h http.Header) (d, shadow *controller.Deployment, err error)
	// Names lists the deployed models.
	Names() []string
}

// Gateway is an http.Handler.
type Gateway struct {
	models Models
	log    *slog.Logger
	bufs   *bufferPool
	mux    *http.ServeMux
	stages []Stage
	jobs   Jobs           // the async doors (async.go); nil = off
	mirror *shadow.Mirror // shadow traffic (shadow.go); nil = off
}

// New returns a gateway over models. Extra handlers (the v2 protocol) are
// mounted with Handle.
func New(models Models, log *slog.Logger) *Gateway {
	if log == nil {
		log = slog.Default()
	}
	g := &Gateway{models: models, log: log.With("component", "gateway"), mux: http.NewServeMux()}
	g.bufs = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
	g.mux.HandleFunc("/models/{name}/{path...}", g.serveModel)
	g.mux.HandleFunc("/models/{name}", g.serveModel)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not_found",
			fmt.Sprintf("no route for %s %s: models are served at /models/{name}/{path}", r.Method, r.URL.Path)))
	})
	return g
}

// Handle mounts an extra handler on the gateway's mux.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mux.ServeHTTP(w, withDeadline(w, r))
}

func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	if g.wantsAsync(r) {
		g.serveAsync(w, r, r.PathValue("name"))
		return
	}
	ex, err := g.Begin(r.Context(), ProtocolHTTP, r.PathValue("name"), r.Header)
	if err != nil {
		w.Header().Set(HeaderColdStart, "false")
		problem.Write(w, err)
		return
	}
	d := ex.Deployment
	w, done := ex.cachePassThrough(w, r)
	if done {
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	if ex.Shadow != nil {
		pair, dig, answered := g.mirrorPassThrough(w, r, ex)
		if answered {
			return
		}
		if pair != nil {
			sw.tee = dig
			defer func() {
				if sw.status != 0 && !sw.failed {
					pair.Primary(sw.code(), dig.Sum())
				} else {
					pair.Abandon()
				}
			}()
		}
	}
	lease, served, err := g.acquireWithin(r.Context(), d) // the pool bounds the wait itself
	if err != nil {
		sw.failed = true
		sw.Header().Set(HeaderColdStart, "false")
		problem.Write(sw, err)
		ex.Finish(sw.code(), false, err)
		return
	}
	if served != d {
		sw.Header().Set(HeaderFallback, served.Name)
	}
	defer lease.Release()
	defer func() { ex.Finish(sw.code(), lease.ColdStart, nil) }()
	if lease.ColdStart {
		d.Metrics.ColdWait.Observe(lease.Waited.Seconds())
		sw.Header().Set(HeaderColdStart, "true")
	} else {
		sw.Header().Set(HeaderColdStart, "false")
	}
	// The request's own budget starts once it has an instance.
	rctx, rcancel := context.WithTimeout(r.Context(), ex.Timeout())
	defer rcancel()
	g.forward(rctx, sw, r, Route{Lease: lease, Model: ex.Model, Reacquire: served.Pool.AcquireExcept, Retried: d.Metrics.Retries.Inc})
}

type bufferPool struct{ p sync.Pool }

// statusWriter remembers the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	tee    io.Writer // the shadow's digest of the answer, when mirrored
	failed bool      // the gateway answered an error, not an instance
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.tee != nil {
		s.tee.Write(b)
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush forwards to the real writer (ReverseProxy flushes streamed bodies).
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}
