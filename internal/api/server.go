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
	// Traffic says how the new revision shares traffic with the current
	// one (tandem deploy --canary, --tag, --route, --shadow); absent is a
	// plain deploy.
	Traffic *controller.DeployOptions `json:"traffic,omitempty"`
}

// PromoteRequest is the body of POST /v1/deployments/{name}/promote.
type PromoteRequest struct {
	// Revision is a revision, a unique prefix of one, or a tag; empty
	// promotes the rollout's revision or the canary.
	Revision string `json:"revision,omitempty"`
}

// DeployResponse answers a deploy.
type DeployResponse struct {
	Result controller.Result `json:"result"`
	// Revision is the deployed manifest's revision; Status.Revision is the
	// model's main one, which differs when the new revision runs beside it
	// (a canary, a tag, a shadow or a progressive rollout).
	Revision string             `json:"revision"`
	Status   *controller.Status `json:"status"`
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
	// shadowStats returns a model's shadow counters (the gateway's
	// mirror); nil when there is none.
	shadowStats func(model string) any
}

// SetShadowStats gives the traffic status the shadow counters.
func (s *Server) SetShadowStats(f func(model string) any) { s.shadowStats = f }

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
	s.mux.HandleFunc("GET /v1/deployments/{name}/revisions", s.revisions)
	s.mux.HandleFunc("GET /v1/deployments/{name}/traffic", s.traffic)
	s.mux.HandleFunc("POST /v1/deployments/{name}/traffic", s.changeTraffic)
	s.mux.HandleFunc("POST /v1/deployments/{name}/promote", s.promote)
	s.mux.HandleFunc("POST /v1/deployments/{name}/rollback", s.rollback)
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
	var opts controller.DeployOptions
	if req.Traffic != nil {
		opts = *req.Traffic
	}
	res, err := s.c.Deploy(r.Context(), m, opts)
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
	writeJSON(w, code, DeployResponse{Result: res, Revision: m.Hash(), Status: st})
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

func (s *Server) revisions(w http.ResponseWriter, r *http.Request) {
	revs, err := s.c.Revisions(r.PathValue("name"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, http.StatusOK, revs)
}

func (s *Server) traffic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ts, err := s.c.Traffic(name)
	if err != nil {
		problem.Write(w, err)
		return
	}
	if s.shadowStats != nil {
		ts.ShadowStats = s.shadowStats(name)
	}
	writeJSON(w, http.StatusOK, ts)
}

// decodeJSON reads a small JSON body into v (an empty body leaves v as is).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		problem.Write(w, problem.New(http.StatusBadRequest, "malformed_json", "request body is not valid JSON for this route: "+err.Error()))
		return false
	}
	return true
}

func (s *Server) changeTraffic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	AuditName(r, name)
	var ch controller.TrafficChange
	if !decodeJSON(w, r, &ch) {
		return
	}
	if err := s.c.ChangeTraffic(r.Context(), name, ch); err != nil {
		problem.Write(w, err)
		return
	}
	s.log.Info("traffic changed", "model", name)
	s.traffic(w, r)
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	AuditName(r, name)
	var req PromoteRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	rev, err := s.c.Promote(r.Context(), name, req.Revision)
	if err != nil {
		problem.Write(w, err)
		return
	}
	s.log.Info("promoted", "model", name, "revision", rev)
	s.traffic(w, r)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	AuditName(r, name)
	if err := s.c.Rollback(r.Context(), name); err != nil {
		problem.Write(w, err)
		return
	}
	s.log.Info("rolled back", "model", name)
	s.traffic(w, r)
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
