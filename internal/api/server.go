// Package api is tandem's control API (the admin listener) and the client
// the command line uses to reach it.
package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/problem"
)

// DeployRequest is the body of POST /v1/deployments. The manifest travels
// as the user wrote it; BaseDir is the folder relative paths resolve
// against (the manifest file's folder, on the client's machine).
type DeployRequest struct {
	Manifest string `json:"manifest"`
	BaseDir  string `json:"base_dir"`
}

// DeployResponse answers a deploy.
type DeployResponse struct {
	Result controller.Result  `json:"result"`
	Status *controller.Status `json:"status"`
}

// Info describes the server.
type Info struct {
	Gateway string `json:"gateway"`
	GRPC    string `json:"grpc,omitempty"`
	// TLS says the gateway (and the gRPC endpoint) serve TLS.
	TLS     bool   `json:"tls,omitempty"`
	Version string `json:"version"`
}

// maxManifest bounds a deploy request's body.
const maxManifest = 1 << 20

// Server serves the control API.
type Server struct {
	c    *controller.Controller
	info Info
	log  *slog.Logger
	mux  *http.ServeMux
	// followers holds a token per open log stream (logs?follow=1).
	followers chan struct{}
}

// NewServer returns the admin handler.
func NewServer(c *controller.Controller, m *metrics.Metrics, info Info, log *slog.Logger) *Server {
	s := &Server{c: c, info: info, log: log.With("component", "api"), mux: http.NewServeMux(),
		followers: make(chan struct{}, maxFollowers)}
	s.mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.info) })
	s.mux.HandleFunc("GET /v1/deployments", s.list)
	s.mux.HandleFunc("POST /v1/deployments", s.deploy)
	s.mux.HandleFunc("GET /v1/deployments/{name}", s.status)
	s.mux.HandleFunc("DELETE /v1/deployments/{name}", s.delete)
	s.mux.HandleFunc("GET /v1/deployments/{name}/logs", s.logs)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not_found", "no such API route: "+r.Method+" "+r.URL.Path))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.c.List())
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	req, perr := decodeDeploy(w, r)
	if perr != nil {
		problem.Write(w, perr)
		return
	}
	m, err := manifest.Parse([]byte(req.Manifest), req.BaseDir)
	if err != nil {
		writeManifestError(w, err)
		return
	}
	AuditName(r, m.Name)
	res, err := s.c.Apply(r.Context(), m)
	if err != nil {
		problem.Write(w, err)
		return
	}
	st, err := s.c.Status(m.Name)
	if err != nil {
		problem.Write(w, err)
		return
	}
	code := http.StatusOK
	if res == controller.Created {
		code = http.StatusCreated
	}
	s.log.Info("deploy", "model", m.Name, "result", res, "revision", st.Revision)
	writeJSON(w, code, DeployResponse{Result: res, Status: st})
}

// writeManifestError answers every problem of a manifest at once.
func writeManifestError(w http.ResponseWriter, err error) {
	var me *manifest.Error
	if !errors.As(err, &me) {
		problem.Write(w, err)
		return
	}
	pe := problem.New(http.StatusBadRequest, "invalid_manifest", me.Error())
	if len(me.Problems) > 0 {
		pe.Field = me.Problems[0].Field
	}
	pe.Details = me.Problems
	problem.Write(w, pe)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.c.Status(r.PathValue("name"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.c.Delete(r.Context(), name); err != nil {
		problem.Write(w, err)
		return
	}
	s.log.Info("delete", "model", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	tail := 200
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			problem.Write(w, problem.New(http.StatusBadRequest, "invalid_query", "tail must be an integer").WithField("tail"))
			return
		}
		tail = n
	}
	follow := false
	if v := r.URL.Query().Get("follow"); v != "" {
		var err error
		if follow, err = strconv.ParseBool(v); err != nil {
			problem.Write(w, problem.New(http.StatusBadRequest, "invalid_query", "follow must be true or false").WithField("follow"))
			return
		}
	}
	name := r.PathValue("name")
	if _, ok := s.c.Lookup(name); !ok {
		problem.Write(w, problem.New(http.StatusNotFound, "model_not_found", "model "+strconv.Quote(name)+" is not deployed"))
		return
	}
	if follow {
		s.followLogs(w, r, name, tail)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.c.Logs(r.Context(), name, tail, w); err != nil {
		s.log.Warn("logs", "model", name, "err", err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Handle mounts an extra route on the control API (for example /v1/cost).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }
