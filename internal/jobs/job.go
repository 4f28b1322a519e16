package jobs

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is where a job stands.
type Status string

// The states of a job. Queued and Running are pending (run again after a
// restart); Succeeded and Failed are final. Failed jobs are the
// dead-letter list.
const (
	Queued    Status = "queued"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
)

// Final reports whether s is an end state.
func (s Status) Final() bool { return s == Succeeded || s == Failed }

// HeaderJobID carries a job's id: on the 202 that accepts it, and on every
// attempt sent to the function (for de-duplication).
const HeaderJobID = "X-Tandem-Job-Id"

// Job is one asynchronous invocation, as stored and as shown.
type Job struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	// Tenant is the name of the tenant that submitted it ("" with --auth
	// none). Never its key.
	Tenant    string    `json:"tenant,omitempty"`
	Status    Status    `json:"status"`
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// NextAt is when a queued job's next attempt is due.
	NextAt time.Time `json:"next_at,omitzero"`
	// Reason says why a job failed (or why its last attempt did).
	Reason  string   `json:"reason,omitempty"`
	Request *Request `json:"request,omitempty"`
	Result  *Result  `json:"result,omitempty"`
	// Destination is how the POST to on_success or on_failure went.
	Destination string `json:"destination,omitempty"`
}

// Request is the stored HTTP request, replayed on each attempt.
type Request struct {
	Method string `json:"method"`
	// Path is the escaped path as received (/models/NAME/...).
	Path   string      `json:"path"`
	Query  string      `json:"query,omitempty"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	// RemoteAddr and Host are the caller's address and the Host it
	// asked for, for X-Forwarded-For and X-Forwarded-Host.
	RemoteAddr string `json:"remote_addr,omitempty"`
	Host       string `json:"host,omitempty"`
}

// Result is the answer of a job's last attempt.
type Result struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	// Body is the answer's body: text as is, anything else in base64
	// (IsBase64), at most Config.MaxResult bytes of it (Truncated).
	Body      string `json:"body,omitempty"`
	IsBase64  bool   `json:"is_base64,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

func newResult(status int, h http.Header, body []byte, truncated bool) *Result {
	r := &Result{Status: status, Header: h, Truncated: truncated}
	if utf8.Valid(body) {
		r.Body = string(body)
	} else {
		r.Body, r.IsBase64 = b64(body), true
	}
	return r
}

// view is the job as shown to callers: without the stored request's
// headers and body (which may be large and are the caller's own).
func (j *Job) view() *Job {
	v := *j
	if j.Request != nil {
		v.Request = &Request{Method: j.Request.Method, Path: j.Request.Path, Query: j.Request.Query}
	}
	return &v
}

func sortByID(list []*Job) {
	slices.SortFunc(list, func(a, b *Job) int { return strings.Compare(a.ID, b.ID) })
}
