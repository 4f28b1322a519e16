package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/metrics"
	"tandem/internal/store"
	"tandem/internal/tenant"
)

func newTenantServer(t *testing.T) (*httptest.Server, *tenant.Registry) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := tenant.Open(st, cost.DefaultPrices(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil, metrics.New(), Info{}, slog.New(slog.DiscardHandler))
	s.MountTenants(reg)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs, reg
}

type answer struct {
	code int
	body string
	hdr  http.Header
}

func send(t *testing.T, hs *httptest.Server, method, path, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, hs.URL+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

// problemOf decodes an error answer's code and field.
func problemOf(t *testing.T, a answer) (code, field string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Field string }
	}
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e.Error.Code, e.Error.Field
}

func TestTenantsAPI_CreateGetListUpdateDelete(t *testing.T) {
	hs, _ := newTenantServer(t)
	a := send(t, hs, "POST", "/v1/tenants",
		`{"name":"acme","models":["b","a"],"rate":"5/s","concurrency":3,"budget":"0.01","budget_period":"30d"}`)
	if a.code != http.StatusCreated {
		t.Fatalf("create: %d %s", a.code, a.body)
	}
	var ti TenantInfo
	if err := json.Unmarshal([]byte(a.body), &ti); err != nil {
		t.Fatal(err)
	}
	if ti.Name != "acme" || strings.Join(ti.Models, ",") != "a,b" || ti.Rate != "5/s" || ti.Concurrency != 3 ||
		ti.Budget != 0.01 || ti.BudgetPeriod != (30*24*time.Hour).String() || ti.CreatedAt.IsZero() {
		t.Fatalf("created %+v", ti)
	}

	if a := send(t, hs, "POST", "/v1/tenants", `{"name":"acme"}`); a.code != http.StatusConflict {
		t.Errorf("duplicate: %d %s, want 409", a.code, a.body)
	}
	if a := send(t, hs, "GET", "/v1/tenants/nobody", ""); a.code != http.StatusNotFound {
		t.Errorf("get unknown: %d %s, want 404", a.code, a.body)
	}

	// PATCH changes only what it names; "" clears a limit.
	a = send(t, hs, "PATCH", "/v1/tenants/acme", `{"rate":"","budget":2}`)
	if a.code != http.StatusOK {
		t.Fatalf("patch: %d %s", a.code, a.body)
	}
	a = send(t, hs, "GET", "/v1/tenants/acme", "")
	ti = TenantInfo{}
	json.Unmarshal([]byte(a.body), &ti)
	if ti.Rate != "" || !ti.Tenant.Rate.IsZero() || ti.Budget != 2 || ti.Concurrency != 3 ||
		strings.Join(ti.Models, ",") != "a,b" || ti.BudgetPeriod == "" {
		t.Fatalf("after patch: %+v", ti)
	}
	if a := send(t, hs, "PATCH", "/v1/tenants/acme", `{"name":"other"}`); a.code != 400 {
		t.Errorf("rename: %d %s, want 400", a.code, a.body)
	}
	if a := send(t, hs, "PATCH", "/v1/tenants/nobody", `{"rate":"1/s"}`); a.code != 404 {
		t.Errorf("patch unknown: %d %s, want 404", a.code, a.body)
	}

	send(t, hs, "POST", "/v1/tenants", `{"name":"beta"}`)
	a = send(t, hs, "GET", "/v1/tenants", "")
	var list []TenantInfo
	if err := json.Unmarshal([]byte(a.body), &list); err != nil || len(list) != 2 || list[0].Name != "acme" || list[1].Name != "beta" {
		t.Fatalf("list: %s (%v)", a.body, err)
	}

	if a := send(t, hs, "DELETE", "/v1/tenants/beta", ""); a.code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", a.code, a.body)
	}
	if a := send(t, hs, "DELETE", "/v1/tenants/beta", ""); a.code != http.StatusNotFound {
		t.Fatalf("delete again: %d %s, want 404", a.code, a.body)
	}
}

func TestTenantsAPI_BadRequestsNameTheField(t *testing.T) {
	hs, _ := newTenantServer(t)
	send(t, hs, "POST", "/v1/tenants", `{"name":"acme"}`)
	for _, c := range []struct {
		method, path, body string
		status             int
		code, field        string
	}{
		{"POST", "/v1/tenants", `{"models":["a"]}`, 400, "invalid_tenant", "name"},
		{"POST", "/v1/tenants", `{"name":"Bad Name"}`, 400, "invalid_tenant", "name"},
		{"POST", "/v1/tenants", `{"name":"x","models":["a b"]}`, 400, "invalid_tenant", "models"},
		{"POST", "/v1/tenants", `{"name":"x","rate":"fast"}`, 400, "invalid_tenant", "rate"},
		{"POST", "/v1/tenants", `{"name":"x","budget":"lots"}`, 400, "invalid_tenant", "budget"},
		{"POST", "/v1/tenants", `{"name":"x","budget":true}`, 400, "malformed_json", ""},
		{"POST", "/v1/tenants", `{"name":"x","budget_period":"soon"}`, 400, "invalid_tenant", "budget_period"},
		{"POST", "/v1/tenants", `{"name":"x","concurrency":-1}`, 400, "invalid_tenant", "concurrency"},
		{"POST", "/v1/tenants", `{"name":"x","concurrency":"3"}`, 400, "malformed_json", "concurrency"},
		{"POST", "/v1/tenants", `{"name":"x","rpm":5}`, 400, "unknown_field", "rpm"},
		{"POST", "/v1/tenants", `{"name":"x"} {"name":"y"}`, 400, "malformed_json", ""},
		{"POST", "/v1/tenants", `not json`, 400, "malformed_json", ""},
		{"POST", "/v1/tenants", `{"name":"x","models":["` + strings.Repeat("a", 70<<10) + `"]}`, 413, "too_large", ""},
		{"PATCH", "/v1/tenants/acme", `{"rate":"5/parsec"}`, 400, "invalid_tenant", "rate"},
		{"PATCH", "/v1/tenants/acme", `{"budget":"-1"}`, 400, "invalid_tenant", "budget"},
		{"POST", "/v1/keys", `{}`, 400, "invalid_key", "tenant"},
		{"POST", "/v1/keys", `{"tenant":"nobody"}`, 404, "not_found", "tenant"},
		{"POST", "/v1/keys", `{"tenant":"acme","expires":"forever"}`, 400, "invalid_key", "expires"},
		{"POST", "/v1/keys", `{"tenant":"acme","key":"tdm_x"}`, 400, "unknown_field", "key"},
		{"GET", "/v1/keys?tenant=nobody", "", 404, "not_found", ""},
		{"DELETE", "/v1/keys/0123456789abcdef", "", 404, "not_found", ""},
	} {
		a := send(t, hs, c.method, c.path, c.body)
		name := c.method + " " + c.path + " " + c.body
		if len(name) > 80 {
			name = name[:80]
		}
		if a.code != c.status {
			t.Errorf("%s: %d %s, want %d", name, a.code, a.body, c.status)
			continue
		}
		if code, field := problemOf(t, a); code != c.code || field != c.field {
			t.Errorf("%s: code %q field %q, want %q %q (%s)", name, code, field, c.code, c.field, a.body)
		}
	}
	// Nothing was created by a refused request.
	if a := send(t, hs, "GET", "/v1/tenants", ""); strings.Count(a.body, `"name"`) != 1 {
		t.Errorf("tenants after refused creates: %s", a.body)
	}
}

func TestKeysAPI_CreateListRevoke(t *testing.T) {
	hs, reg := newTenantServer(t)
	send(t, hs, "POST", "/v1/tenants", `{"name":"acme"}`)
	send(t, hs, "POST", "/v1/tenants", `{"name":"beta"}`)
	a := send(t, hs, "POST", "/v1/keys", `{"tenant":"acme","expires":"90d"}`)
	if a.code != http.StatusCreated {
		t.Fatalf("create key: %d %s", a.code, a.body)
	}
	if a.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("key answer Cache-Control %q, want no-store", a.hdr.Get("Cache-Control"))
	}
	var nk NewKey
	if err := json.Unmarshal([]byte(a.body), &nk); err != nil {
		t.Fatal(err)
	}
	id, _, err := tenant.ParseKey(nk.Key)
	if err != nil || id != nk.ID || nk.Tenant != "acme" || nk.CreatedAt.IsZero() ||
		nk.Expires.Sub(nk.CreatedAt) != 90*24*time.Hour {
		t.Fatalf("new key %+v (parse: %v)", nk, err)
	}
	if a := send(t, hs, "POST", "/v1/keys", `{"tenant":"beta"}`); a.code != 201 || strings.Contains(a.body, `"expires"`) {
		t.Fatalf("key without expiry: %d %s", a.code, a.body)
	}

	for _, path := range []string{"/v1/keys", "/v1/keys?tenant=acme", "/v1/tenants", "/v1/tenants/acme"} {
		a := send(t, hs, "GET", path, "")
		if a.code != 200 || strings.Contains(a.body, nk.Key) || strings.Contains(a.body, `"hash"`) || strings.Contains(a.body, `"key"`) {
			t.Errorf("GET %s shows a key or its hash: %s", path, a.body)
		}
	}
	var keys []tenant.KeyInfo
	json.Unmarshal([]byte(send(t, hs, "GET", "/v1/keys?tenant=acme", "").body), &keys)
	if len(keys) != 1 || keys[0].ID != nk.ID {
		t.Fatalf("acme's keys: %+v", keys)
	}
	json.Unmarshal([]byte(send(t, hs, "GET", "/v1/keys", "").body), &keys)
	if len(keys) != 2 {
		t.Fatalf("all keys: %+v", keys)
	}

	if a := send(t, hs, "DELETE", "/v1/keys/"+nk.ID, ""); a.code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", a.code, a.body)
	}
	if ks := reg.Keys("acme"); len(ks) != 0 {
		t.Fatalf("revoked key still listed: %+v", ks)
	}
	if a := send(t, hs, "DELETE", "/v1/keys/"+nk.ID, ""); a.code != http.StatusNotFound {
		t.Fatalf("revoke again: %d %s", a.code, a.body)
	}
	// Deleting a tenant takes its keys.
	send(t, hs, "DELETE", "/v1/tenants/beta", "")
	if a := send(t, hs, "GET", "/v1/keys", ""); strings.TrimSpace(a.body) != "[]" {
		t.Fatalf("keys after deleting their tenants: %s", a.body)
	}
}

// The client speaks the same routes.
func TestClient_Tenants(t *testing.T) {
	hs, _ := newTenantServer(t)
	c := NewClient(hs.URL)
	ctx := context.Background()
	rate, budget := "100/m", Amount("$5")
	ti, err := c.CreateTenant(ctx, TenantRequest{Name: "acme", Rate: &rate, Budget: &budget})
	if err != nil || ti.Rate != "100/m" || ti.Budget != 5 {
		t.Fatalf("CreateTenant: %+v %v", ti, err)
	}
	conc := 2
	if ti, err = c.UpdateTenant(ctx, "acme", TenantRequest{Concurrency: &conc}); err != nil || ti.Concurrency != 2 || ti.Rate != "100/m" {
		t.Fatalf("UpdateTenant: %+v %v", ti, err)
	}
	nk, err := c.CreateKey(ctx, KeyRequest{Tenant: "acme"})
	if err != nil || nk.Key == "" {
		t.Fatalf("CreateKey: %+v %v", nk, err)
	}
	if keys, err := c.Keys(ctx, "acme"); err != nil || len(keys) != 1 || keys[0].ID != nk.ID {
		t.Fatalf("Keys: %+v %v", keys, err)
	}
	if list, err := c.Tenants(ctx); err != nil || len(list) != 1 {
		t.Fatalf("Tenants: %+v %v", list, err)
	}
	if err := c.RevokeKey(ctx, nk.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Tenant(ctx, "acme")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("Tenant after delete: %v", err)
	}
}

// The audit log names the tenant or key a write acted on, never a key.
func TestTenantsAPI_Audit(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := tenant.Open(st, cost.DefaultPrices(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	audit, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	defer audit.Close()
	s := NewServer(nil, metrics.New(), Info{}, slog.New(slog.DiscardHandler))
	s.MountTenants(reg)
	hs := httptest.NewServer(Protect(s, Access{Audit: audit, Logger: slog.New(slog.DiscardHandler)}))
	defer hs.Close()
	send(t, hs, "POST", "/v1/tenants", `{"name":"acme"}`)
	var nk NewKey
	json.Unmarshal([]byte(send(t, hs, "POST", "/v1/keys", `{"tenant":"acme"}`).body), &nk)
	send(t, hs, "DELETE", "/v1/keys/"+nk.ID, "")
	send(t, hs, "DELETE", "/v1/tenants/acme", "")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e AuditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name)
	}
	want := []string{"acme", "acme/" + nk.ID, nk.ID, "acme"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("audit names %q, want %q", names, want)
	}
	if nk.Key == "" || strings.Contains(string(b), nk.Key) || strings.Contains(string(b), nk.Key[len(nk.Key)-43:]) {
		t.Errorf("the audit log holds the key (or there is none: %q):\n%s", nk.Key, b)
	}
}
