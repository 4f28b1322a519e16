package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A quiet path's accepted writes stay out of the audit log; refused ones,
// and every other write, are recorded.
func TestAudit_Quiet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /internal/v1/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("bad") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /v1/deployments/{name}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	h := Protect(mux, Access{Token: testToken, Audit: a, Quiet: []string{"/internal/v1/stats"}})
	auth := map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}
	for _, q := range []req{
		{method: "POST", path: "/internal/v1/stats", body: "{}", header: auth},       // quiet
		{method: "POST", path: "/internal/v1/stats", body: "{}", header: jsonCT},     // 401: recorded
		{method: "POST", path: "/internal/v1/stats?bad=1", body: "{}", header: auth}, // 400: recorded
		{method: "DELETE", path: "/v1/deployments/gone", header: auth},               // another write: recorded
		{method: "POST", path: "/internal/v1/stats", body: "{}", header: auth},       // quiet
	} {
		h.ServeHTTP(httptest.NewRecorder(), q.build())
	}
	a.Close()
	raw, _ := os.ReadFile(path)
	var got []string
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		var e AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Method+" "+e.Path+" "+http.StatusText(e.Status))
	}
	want := []string{
		"POST /internal/v1/stats Unauthorized",
		"POST /internal/v1/stats Bad Request",
		"DELETE /v1/deployments/gone No Content",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
