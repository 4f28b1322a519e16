package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"tandem/internal/problem"
)

// Mount adds the control API's job routes with handle: GET /v1/jobs
// (?status=failed&model=NAME&limit=N, newest first) and GET /v1/jobs/{id},
// for admins: every tenant's jobs.
func (m *Manager) Mount(handle func(pattern string, h http.Handler)) {
	handle("GET /v1/jobs", http.HandlerFunc(m.serveList))
	handle("GET /v1/jobs/{id}", http.HandlerFunc(m.serveGet))
}

func (m *Manager) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Status: Status(q.Get("status")), Model: q.Get("model"), Limit: 100}
	switch f.Status {
	case "", Queued, Running, Succeeded, Failed:
	default:
		problem.Write(w, problem.New(http.StatusBadRequest, "bad_status",
			fmt.Sprintf("status %q: use queued, running, succeeded or failed", f.Status)).WithField("status"))
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			problem.Write(w, problem.New(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit %q: give a number, 0 for all", s)).WithField("limit"))
			return
		}
		f.Limit = n
	}
	list, err := m.List(f)
	if err != nil {
		problem.Write(w, err)
		return
	}
	if list == nil {
		list = []*Job{}
	}
	writeJSON(w, list)
}

func (m *Manager) serveGet(w http.ResponseWriter, r *http.Request) {
	j, err := m.Get(r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		problem.Write(w, problem.New(http.StatusNotFound, "job_not_found", err.Error()))
	case err != nil:
		problem.Write(w, err)
	default:
		writeJSON(w, j.view())
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
