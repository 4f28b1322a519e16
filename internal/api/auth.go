package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"tandem/internal/problem"
)

// Access says how the control API tells who may use it. The control API
// starts programs on the machine tandem runs on, so whoever may write to it
// may run code as tandem's user; docs/security.md has the threat model.
type Access struct {
	// Token, when set, is the bearer token every route but /healthz
	// requires (Authorization: Bearer TOKEN). When empty, the control API
	// must listen on loopback only (server.Run refuses anything else) and
	// requests must name a loopback Host, which defeats DNS rebinding.
	Token string
	// Audit records every control-plane write, refused ones included; nil
	// records nothing.
	Audit *Audit
	// Logger receives failures to write the audit log; nil is slog.Default.
	Logger *slog.Logger
	// Quiet names write paths that Audit records only when refused or
	// failed: machine traffic that changes nothing an operator audits (the
	// stats the other tandem processes post, once a second each).
	Quiet []string
}

// Auth values of an audit record: who made the request.
const (
	AuthToken    = "token"    // the request carried the right token
	AuthLoopback = "loopback" // no token is configured; the request came through loopback
	AuthNone     = "none"     // a token is configured and the request had none
	AuthInvalid  = "invalid"  // a token is configured and the request had another
)

// Protect returns h behind the control API's checks, in this order:
//   - GET /healthz passes untouched (liveness probes carry no token);
//   - without a token, a Host that is not a loopback name or address: 403;
//   - an Origin that is not the control API's own, or a Sec-Fetch-Site
//     other than same-origin or none (a browser's cross-site request): 403,
//     with or without a token (defence in depth: tandem answers no CORS
//     preflight, and no browser page has a reason to reach it);
//   - with a token, a missing or wrong bearer token: 401 with
//     WWW-Authenticate: Bearer;
//   - a write (any method but GET, HEAD and OPTIONS) whose Content-Type is
//     not JSON or YAML, or that has a body without a Content-Type: 415.
//
// These are the requests a web page in the user's browser can send without
// a CORS preflight (text/plain, form posts) or with a rebound DNS name.
// Writes are recorded in a.Audit with their answer's status.
func Protect(h http.Handler, a Access) http.Handler {
	p := &protected{h: h, audit: a.Audit, log: a.Logger, quiet: a.Quiet}
	if p.log == nil {
		p.log = slog.Default()
	}
	if a.Token != "" {
		sum := sha256.Sum256([]byte(a.Token))
		p.tokenSum = &sum
	}
	return p
}

type protected struct {
	h http.Handler
	// tokenSum is the token's SHA-256, nil without a token. Comparing
	// digests keeps the comparison constant-time whatever the lengths.
	tokenSum *[sha256.Size]byte
	audit    *Audit
	log      *slog.Logger
	quiet    []string
}

func (p *protected) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		p.h.ServeHTTP(w, r)
		return
	}
	write := isWrite(r.Method)
	var rec *auditRecord
	if write && p.audit != nil {
		rec = &auditRecord{}
		r = r.WithContext(withAuditRecord(r.Context(), rec))
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		defer func() {
			if st := sw.status(); st >= 300 || !slices.Contains(p.quiet, r.URL.Path) {
				p.audit.record(r, rec, st, p.log)
			}
		}()
	}
	who, err := p.check(r, write)
	if rec != nil {
		rec.auth = who
	}
	if err != nil {
		if err.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
		}
		problem.Write(w, err)
		return
	}
	p.h.ServeHTTP(w, r)
}

// check returns who made r (an Auth value) and why it is refused, if it is.
func (p *protected) check(r *http.Request, write bool) (string, *problem.Error) {
	who := AuthLoopback
	if p.tokenSum == nil && !IsLoopbackHost(hostOnly(r.Host)) {
		return who, problem.New(http.StatusForbidden, "forbidden_host",
			"the control API has no token, so it only answers requests addressed to localhost, 127.0.0.1 or [::1], not to "+
				quote(r.Host)+" (set a token to reach it by another name: docs/security.md)")
	}
	if p.tokenSum != nil {
		who = p.authenticate(r)
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
		return who, problem.New(http.StatusForbidden, "cross_origin",
			"the control API refuses requests from web pages of another origin ("+quote(o)+")")
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return who, problem.New(http.StatusForbidden, "cross_origin",
			"the control API refuses requests from web pages of another origin (Sec-Fetch-Site: "+quote(s)+")")
	}
	switch who {
	case AuthNone:
		return who, problem.New(http.StatusUnauthorized, "unauthenticated",
			"the control API needs a bearer token (tandem --token or TANDEM_TOKEN)")
	case AuthInvalid:
		return who, problem.New(http.StatusUnauthorized, "unauthenticated", "the control API's bearer token is wrong")
	}
	if write && !acceptableBody(r) {
		return who, problem.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"control API writes take application/json or YAML (application/yaml), not "+quote(r.Header.Get("Content-Type")))
	}
	return who, nil
}

// authenticate compares r's bearer token with the configured one in
// constant time.
func (p *protected) authenticate(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if tok, ok := dashboardToken(r); ok && h == "" {
		h = "Bearer " + tok
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		if h == "" {
			return AuthNone
		}
		return AuthInvalid
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(sum[:], p.tokenSum[:]) == 1 {
		return AuthToken
	}
	return AuthInvalid
}

// dashboardToken returns the token a browser sends to the dashboard
// (internal/dashboard), which cannot set a header: a ?token= on a page's
// address, which the dashboard turns into the HttpOnly, SameSite=Strict
// cookie tandem_ui_token (Path=/ui). Only reads under /ui/ take it, so
// the cookie opens no door to the API that writes.
func dashboardToken(r *http.Request) (string, bool) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || (r.URL.Path != "/ui" && !strings.HasPrefix(r.URL.Path, "/ui/")) {
		return "", false
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok, true
	}
	if c, err := r.Cookie("tandem_ui_token"); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// acceptableBody reports whether a write's body is JSON, YAML, or absent.
// A body without a Content-Type is refused: a browser's no-cors fetch can
// send one.
func acceptableBody(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return r.ContentLength == 0
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || isYAML(mt)
}

func isYAML(mediaType string) bool {
	switch mediaType {
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return true
	}
	return false
}

// sameOrigin reports whether the Origin header names the host the request
// was sent to. The scheme is not compared: behind a proxy that terminates
// TLS, tandem cannot tell which one the browser used.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" (sandboxed frames, file: pages) among others
	}
	oh, op := splitHostPort(u.Host)
	hh, hp := splitHostPort(host)
	if op == "" {
		op = defaultPort(u.Scheme)
	}
	if hp == "" {
		hp = defaultPort(u.Scheme)
	}
	return strings.EqualFold(oh, hh) && op == hp
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// IsLoopbackHost reports whether host (without a port; IPv6 with or without
// brackets) is localhost or a loopback address: 127.0.0.0/8, ::1.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || strings.EqualFold(host, "localhost.") {
		return true
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i] // a zone: fe80::1%eth0
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips the port from a Host header value.
func hostOnly(hostport string) string {
	h, _ := splitHostPort(hostport)
	return h
}

func splitHostPort(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
}

// quote quotes an outside value for a message, bounded in length.
func quote(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return `"` + strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return '?'
		}
		return r
	}, s), "?") + `"`
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
