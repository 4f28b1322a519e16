package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"tandem/internal/problem"
)

// JobCaller marks a request that tandem's jobs runner replays in-process:
// the job's id and the tenant that submitted it. It travels only as a
// context value, which no client can send, so the admission stages may
// take the request as that tenant without a key.
type JobCaller struct {
	ID     string
	Tenant string
}

type jobKey struct{}

// WithJob returns ctx marked as an attempt of job c.
func WithJob(ctx context.Context, c JobCaller) context.Context {
	return context.WithValue(ctx, jobKey{}, c)
}

// JobFrom returns the job mark of ctx, if any.
func JobFrom(ctx context.Context) (JobCaller, bool) {
	c, ok := ctx.Value(jobKey{}).(JobCaller)
	return c, ok
}

// Identifier is an optional ability of a Stage: it names the tenant that
// sent headers h, and refuses a caller who may not call model ("" = any
// model: only the key is checked), without any side effect (no rate,
// quota or concurrency spent). The async doors call it before a job is
// stored; the stages run in full when the job runs.
type Identifier interface {
	Identify(h http.Header, model string) (tenant string, err error)
}

// Identify resolves model (404 when it is not deployed; "" skips it) and
// names the caller through the stages that are Identifiers. secured
// reports whether any stage checked the caller.
func (g *Gateway) Identify(ctx context.Context, model string, h http.Header) (tenant string, secured bool, err error) {
	if model != "" {
		if _, ok := g.models.Lookup(model); !ok {
			return "", false, errNotDeployed(model)
		}
	}
	for _, s := range g.stages {
		if id, ok := s.(Identifier); ok {
			secured = true
			if tenant, err = id.Identify(h, model); err != nil {
				return "", true, err
			}
		}
	}
	return tenant, secured, nil
}

// Jobs is what the async doors need of the jobs runner (jobs.Manager).
type Jobs interface {
	// Submit stores r, a request to model, as a job and returns its id
	// once it is durably stored. Its error is a *problem.Error (404, 401,
	// 403, 413 ...).
	Submit(ctx context.Context, model string, r *http.Request) (id string, err error)
	// Lookup returns a job's public record and the tenant that submitted
	// it; an unknown id is an error.
	Lookup(id string) (record any, tenant string, err error)
}

// MountJobs turns on the async doors: Prefer: respond-async on
// /models/{name}/..., POST /v1/async/{name}/... and GET /v1/jobs/{id}. It
// must be called before the gateway serves.
func (g *Gateway) MountJobs(j Jobs) {
	g.jobs = j
	g.mux.HandleFunc("POST /v1/async/{name}/{path...}", g.serveAsyncPath)
	g.mux.HandleFunc("POST /v1/async/{name}", g.serveAsyncPath)
	g.mux.HandleFunc("GET /v1/jobs/{id}", g.serveJob)
}

// wantsAsync reports whether r asks to be a job (Prefer: respond-async,
// RFC 7240), unless it is already a job's attempt.
func (g *Gateway) wantsAsync(r *http.Request) bool {
	if g.jobs == nil {
		return false
	}
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			tok, _, _ := strings.Cut(p, ";")
			if strings.EqualFold(strings.TrimSpace(tok), "respond-async") {
				_, replay := JobFrom(r.Context())
				return !replay
			}
		}
	}
	return false
}

// serveAsyncPath takes POST /v1/async/{name}/{path} as a job for
// /models/{name}/{path}.
func (g *Gateway) serveAsyncPath(w http.ResponseWriter, r *http.Request) {
	rest, _ := strings.CutPrefix(r.URL.EscapedPath(), "/v1/async/")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/models/" + strings.TrimPrefix(r.URL.Path, "/v1/async/")
	r2.URL.RawPath = "/models/" + rest
	g.serveAsync(w, r2, r.PathValue("name"))
}

// AsyncBodyTimeout bounds the upload of a job's body: a body that
// trickles gets 408 and frees the connection.
const AsyncBodyTimeout = time.Minute

// serveAsync stores r as a job and answers 202 with its id.
func (g *Gateway) serveAsync(w http.ResponseWriter, r *http.Request, model string) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(AsyncBodyTimeout))
	id, err := g.jobs.Submit(r.Context(), model, r)
	rc.SetReadDeadline(time.Time{})
	if err != nil {
		problem.Write(w, err)
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	statusURL := scheme + "://" + r.Host + "/v1/jobs/" + id
	h := w.Header()
	h.Set("X-Tandem-Job-Id", id)
	h.Set("Location", "/v1/jobs/"+id)
	if r.Header.Get("Prefer") != "" {
		h.Set("Preference-Applied", "respond-async") // RFC 7240
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(struct {
		ID        string `json:"id"`
		StatusURL string `json:"status_url"`
	}{id, statusURL})
}

// serveJob answers GET /v1/jobs/{id}: the job's status and result, to the
// tenant that submitted it only (another tenant gets the same 404 as for
// an unknown id).
func (g *Gateway) serveJob(w http.ResponseWriter, r *http.Request) {
	tenant, secured, err := g.Identify(r.Context(), "", r.Header)
	if err != nil {
		problem.Write(w, err)
		return
	}
	id := r.PathValue("id")
	rec, owner, err := g.jobs.Lookup(id)
	if err != nil || (secured && owner != tenant) {
		problem.Write(w, problem.New(http.StatusNotFound, "job_not_found", fmt.Sprintf("no job %q", id)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rec)
}

func errNotDeployed(model string) *problem.Error {
	return problem.New(http.StatusNotFound, "model_not_found", "model \""+model+"\" is not deployed").WithField("name")
}
