package api

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testToken = "s3cret-token-0123456789abcdef"

// routes stands in for the control API: it records what reached it.
func routes(reached *[]string) http.Handler {
	mux := http.NewServeMux()
	ok := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			*reached = append(*reached, r.Method+" "+r.URL.Path)
			w.WriteHeader(code)
		}
	}
	mux.HandleFunc("GET /v1/deployments", ok(200))
	mux.HandleFunc("POST /v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		AuditName(r, "from-manifest")
		ok(201)(w, r)
	})
	mux.HandleFunc("DELETE /v1/deployments/{name}", ok(204))
	mux.HandleFunc("GET /metrics", ok(200))
	mux.HandleFunc("GET /healthz", ok(200))
	return mux
}

type req struct {
	method, path, host, body string
	header                   map[string]string
}

func (q req) build() *http.Request {
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r := httptest.NewRequest(q.method, q.path, body)
	r.Host = q.host
	if r.Host == "" {
		r.Host = "127.0.0.1:8081"
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	return r
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

func TestProtect_NoToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  req
		code int
		// errCode is the problem's code when refused.
		errCode string
	}{
		{"list on 127.0.0.1", req{method: "GET", path: "/v1/deployments"}, 200, ""},
		{"list on localhost", req{method: "GET", path: "/v1/deployments", host: "localhost:8081"}, 200, ""},
		{"list on [::1]", req{method: "GET", path: "/v1/deployments", host: "[::1]:8081"}, 200, ""},
		{"list on 127.1.2.3 without port", req{method: "GET", path: "/v1/deployments", host: "127.1.2.3"}, 200, ""},
		{"deploy JSON", req{method: "POST", path: "/v1/deployments", body: "{}", header: jsonCT}, 201, ""},
		{"deploy JSON with charset", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, 201, ""},
		{"deploy YAML", req{method: "POST", path: "/v1/deployments", body: "name: a",
			header: map[string]string{"Content-Type": "application/yaml"}}, 201, ""},
		{"deploy text/yaml", req{method: "POST", path: "/v1/deployments", body: "name: a",
			header: map[string]string{"Content-Type": "text/yaml"}}, 201, ""},
		{"deploy from own origin", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:8081"}}, 201, ""},
		{"delete without body", req{method: "DELETE", path: "/v1/deployments/a"}, 204, ""},
		{"healthz from anywhere", req{method: "GET", path: "/healthz", host: "evil.example"}, 200, ""},

		{"foreign host (DNS rebinding)", req{method: "POST", path: "/v1/deployments", body: "{}", host: "evil.example:8081", header: jsonCT}, 403, "forbidden_host"},
		{"foreign host read", req{method: "GET", path: "/v1/deployments", host: "evil.example:8081"}, 403, "forbidden_host"},
		{"loopback-looking name", req{method: "GET", path: "/v1/deployments", host: "127.0.0.1.evil.example"}, 403, "forbidden_host"},
		{"LAN address", req{method: "GET", path: "/v1/deployments", host: "192.168.1.5:8081"}, 403, "forbidden_host"},
		{"empty host", req{method: "GET", path: "/metrics", host: "-"}, 403, "forbidden_host"},
		{"cross origin", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}}, 403, "cross_origin"},
		{"other port's origin", req{method: "DELETE", path: "/v1/deployments/a",
			header: map[string]string{"Origin": "http://127.0.0.1:3000"}}, 403, "cross_origin"},
		{"null origin", req{method: "DELETE", path: "/v1/deployments/a", header: map[string]string{"Origin": "null"}}, 403, "cross_origin"},
		{"cross-site fetch without origin", req{method: "GET", path: "/v1/deployments",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403, "cross_origin"},
		{"same-site fetch", req{method: "GET", path: "/v1/deployments",
			header: map[string]string{"Sec-Fetch-Site": "same-site"}}, 403, "cross_origin"},
		{"text/plain", req{method: "POST", path: "/v1/deployments", body: `{"manifest":"x"}`,
			header: map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type"},
		{"form", req{method: "POST", path: "/v1/deployments", body: "a=b",
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"},
		{"multipart", req{method: "POST", path: "/v1/deployments", body: "--x--",
			header: map[string]string{"Content-Type": "multipart/form-data; boundary=x"}}, 415, "unsupported_media_type"},
		{"body without content type", req{method: "POST", path: "/v1/deployments", body: "{}"}, 415, "unsupported_media_type"},
		{"malformed content type", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Content-Type": "application/json; ="}}, 415, "unsupported_media_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reached []string
			h := Protect(routes(&reached), Access{})
			r := tc.req.build()
			if tc.req.host == "-" {
				r.Host = ""
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.errCode == "" {
				if len(reached) != 1 {
					t.Errorf("handler reached %v, want once", reached)
				}
				return
			}
			if len(reached) != 0 {
				t.Errorf("refused request reached the handler: %v", reached)
			}
			if got := problemCode(t, w); got != tc.errCode {
				t.Errorf("code %q, want %q", got, tc.errCode)
			}
		})
	}
}

func TestProtect_Token(t *testing.T) {
	bearer := func(tok string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
	}
	for _, tc := range []struct {
		name    string
		req     req
		code    int
		errCode string
	}{
		{"list with token", req{method: "GET", path: "/v1/deployments", header: bearer(testToken)}, 200, ""},
		{"deploy with token", req{method: "POST", path: "/v1/deployments", body: "{}", header: bearer(testToken)}, 201, ""},
		{"lower-case scheme", req{method: "GET", path: "/v1/deployments",
			header: map[string]string{"Authorization": "bearer " + testToken}}, 200, ""},
		{"any host with token", req{method: "GET", path: "/v1/deployments", host: "tandem-admin.tandem-system:8081", header: bearer(testToken)}, 200, ""},
		{"metrics with token", req{method: "GET", path: "/metrics", header: bearer(testToken)}, 200, ""},
		{"healthz without token", req{method: "GET", path: "/healthz", host: "10.0.0.7:8081"}, 200, ""},

		{"list without token", req{method: "GET", path: "/v1/deployments"}, 401, "unauthenticated"},
		{"deploy without token", req{method: "POST", path: "/v1/deployments", body: "{}", header: jsonCT}, 401, "unauthenticated"},
		{"metrics without token", req{method: "GET", path: "/metrics"}, 401, "unauthenticated"},
		{"wrong token", req{method: "GET", path: "/v1/deployments", header: bearer(testToken + "x")}, 401, "unauthenticated"},
		{"token prefix", req{method: "GET", path: "/v1/deployments", header: bearer(testToken[:10])}, 401, "unauthenticated"},
		{"basic auth", req{method: "GET", path: "/v1/deployments",
			header: map[string]string{"Authorization": "Basic " + testToken}}, 401, "unauthenticated"},
		{"empty bearer", req{method: "GET", path: "/v1/deployments", header: map[string]string{"Authorization": "Bearer "}}, 401, "unauthenticated"},
		{"cross origin with token", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json", "Origin": "https://evil.example"}}, 403, "cross_origin"},
		{"text/plain with token", req{method: "POST", path: "/v1/deployments", body: "{}",
			header: map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "text/plain"}}, 415, "unsupported_media_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reached []string
			h := Protect(routes(&reached), Access{Token: testToken})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tc.req.build())
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.errCode == "" {
				if len(reached) != 1 {
					t.Errorf("handler reached %v, want once", reached)
				}
				return
			}
			if len(reached) != 0 {
				t.Errorf("refused request reached the handler: %v", reached)
			}
			if got := problemCode(t, w); got != tc.errCode {
				t.Errorf("code %q, want %q", got, tc.errCode)
			}
			if tc.code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q, want Bearer", w.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(w.Body.String(), testToken[:10]) {
				t.Errorf("the answer shows the token: %s", w.Body)
			}
		})
	}
}

func problemCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body struct {
		Error struct{ Code, Message, Source string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Message == "" {
		t.Fatalf("not tandem's problem shape: %s (%v)", w.Body, err)
	}
	return body.Error.Code
}

func TestAudit_RecordsWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	var reached []string
	h := Protect(routes(&reached), Access{Token: testToken, Audit: a})
	auth := map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}
	for _, q := range []req{
		{method: "GET", path: "/v1/deployments", header: auth}, // a read: not recorded
		{method: "POST", path: "/v1/deployments", body: `{"manifest":"env: {SECRET: hunter2}"}`, header: auth},
		{method: "DELETE", path: "/v1/deployments/gone", header: auth},
		{method: "DELETE", path: "/v1/deployments/x", header: map[string]string{"Authorization": "Bearer wrong-one"}},
		{method: "POST", path: "/v1/deployments", body: "{}", header: jsonCT},
	} {
		h.ServeHTTP(httptest.NewRecorder(), q.build())
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	for _, secret := range []string{testToken, "wrong-one", "hunter2"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the audit log holds %q:\n%s", secret, raw)
		}
	}
	var got []AuditEntry
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		var e AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Time.IsZero() || e.Remote == "" {
			t.Errorf("entry without time or remote: %q", sc.Text())
		}
		got = append(got, e)
	}
	want := []AuditEntry{
		{Auth: AuthToken, Method: "POST", Path: "/v1/deployments", Route: "POST /v1/deployments", Name: "from-manifest", Status: 201},
		{Auth: AuthToken, Method: "DELETE", Path: "/v1/deployments/gone", Route: "DELETE /v1/deployments/{name}", Name: "gone", Status: 204},
		{Auth: AuthInvalid, Method: "DELETE", Path: "/v1/deployments/x", Status: 401},
		{Auth: AuthNone, Method: "POST", Path: "/v1/deployments", Status: 401},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d:\n%s", len(got), len(want), raw)
	}
	for i, w := range want {
		g := got[i]
		g.Time, g.Remote = w.Time, w.Remote
		if g != w {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestDecodeDeploy(t *testing.T) {
	for _, tc := range []struct {
		name, ct, path, body string
		want                 DeployRequest
		code                 int
	}{
		{"json", "application/json", "/v1/deployments", `{"manifest":"name: a","base_dir":"/m"}`, DeployRequest{Manifest: "name: a", BaseDir: "/m"}, 0},
		{"yaml", "application/yaml", "/v1/deployments?base_dir=/m", "name: a\n", DeployRequest{Manifest: "name: a\n", BaseDir: "/m"}, 0},
		{"x-yaml", "application/x-yaml; charset=utf-8", "/v1/deployments", "name: a\n", DeployRequest{Manifest: "name: a\n"}, 0},
		{"bad json", "application/json", "/v1/deployments", `{`, DeployRequest{}, 400},
		{"too large yaml", "text/yaml", "/v1/deployments", strings.Repeat("a", maxManifest+1), DeployRequest{}, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.ct)
			got, perr := decodeDeploy(httptest.NewRecorder(), r)
			if tc.code != 0 {
				if perr == nil || perr.Status != tc.code {
					t.Fatalf("error %v, want status %d", perr, tc.code)
				}
				return
			}
			if perr != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, perr, tc.want)
			}
		})
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.255.0.9": true, "::1": true, "[::1]": true,
		"::ffff:127.0.0.1": true, "0.0.0.0": false, "::": false, "": false, "10.0.0.1": false, "evil.example": false,
		"localhost.evil.example": false, "127.0.0.1.nip.io": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// BenchmarkProtect measures what the checks add to a control request.
func BenchmarkProtect(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, bc := range []struct {
		name string
		a    Access
		hdr  map[string]string
	}{
		{"loopback", Access{}, nil},
		{"token", Access{Token: testToken}, map[string]string{"Authorization": "Bearer " + testToken}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := Protect(ok, bc.a)
			r := req{method: "GET", path: "/v1/deployments", header: bc.hdr}.build()
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}

// FuzzProtect holds the checks' promises for any Host, Origin,
// Content-Type and Authorization: no panic; a request that passes without
// a token named a loopback host, and one that passes with a token carried
// it; a write that passes is JSON, YAML or bodiless.
func FuzzProtect(f *testing.F) {
	f.Add("127.0.0.1:8081", "", "application/json", "", "POST", true)
	f.Add("evil.example:8081", "http://evil.example:8081", "text/plain", "Bearer x", "DELETE", false)
	f.Add("[::1]", "null", "application/yaml; charset=utf-8", "bearer "+testToken, "GET", true)
	f.Add("localhost", "http://localhost", "", "Bearer  "+testToken, "PUT", false)
	f.Fuzz(func(t *testing.T, host, origin, ct, authz, method string, withToken bool) {
		if !validMethod(method) {
			return
		}
		var reached int
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })
		a := Access{}
		if withToken {
			a.Token = testToken
		}
		r := httptest.NewRequest("GET", "/v1/deployments", strings.NewReader("{}"))
		r.Method, r.Host = method, host
		for k, v := range map[string]string{"Origin": origin, "Content-Type": ct, "Authorization": authz} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		Protect(h, a).ServeHTTP(w, r)
		if reached == 0 {
			if w.Code < 400 {
				t.Fatalf("refused with %d", w.Code)
			}
			return
		}
		if !withToken && !IsLoopbackHost(hostOnly(host)) {
			t.Fatalf("no token, host %q passed", host)
		}
		if withToken && !strings.Contains(authz, testToken) {
			t.Fatalf("token mode, Authorization %q passed", authz)
		}
		if isWrite(method) && !acceptableBody(r) {
			t.Fatalf("write with Content-Type %q passed", ct)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}
