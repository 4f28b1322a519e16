package tenant

import (
	"context"
	"net/http"
	"testing"

	"tandem/internal/gateway"
	"tandem/internal/problem"
)

// TestStage_JobAttempt: an attempt of an async job (marked by
// gateway.WithJob, a context value) is admitted as the tenant that
// submitted it, without a key, under its limits; a key in its headers
// counts for nothing, and a tenant deleted since is refused.
func TestStage_JobAttempt(t *testing.T) {
	r := newRig(t)
	r.tenant(Tenant{Name: "acme", Models: []string{"a"}, Concurrency: 1})
	other := r.tenant(Tenant{Name: "other"})
	job := func(tenant, model string, h http.Header) (*gateway.Exchange, *problem.Error) {
		ctx := gateway.WithJob(context.Background(), gateway.JobCaller{ID: "j1", Tenant: tenant})
		ex, err := r.gw.Begin(ctx, gateway.ProtocolHTTP, model, h)
		if err != nil {
			return nil, problem.From(err)
		}
		return ex, nil
	}
	ex, pe := job("acme", "a", http.Header{})
	if pe != nil || ex.Tenant != "acme" {
		t.Fatalf("acme's job: %v, tenant %v", pe, ex)
	}
	// Its limits apply: the one slot of concurrency is taken.
	_, pe = job("acme", "a", http.Header{})
	wantCode(t, "a second job of acme in flight", pe, 429, CodeQuotaExceeded)
	ex.Finish(200, false, nil)
	if st, _ := r.reg.Get("acme"); st.Usage.Requests != 1 {
		t.Errorf("acme was metered %d requests, want 1", st.Usage.Requests)
	}
	_, pe = job("acme", "b", http.Header{})
	wantCode(t, "a job for a model acme may not call", pe, 403, CodeForbidden)
	// The stored tenant wins over a key in the headers.
	ex, pe = job("acme", "a", http.Header{"Authorization": {"Bearer " + other}})
	if pe != nil || ex.Tenant != "acme" {
		t.Fatalf("acme's job with other's key: %v, %v", pe, ex)
	}
	ex.Finish(200, false, nil)
	_, pe = job("gone", "a", http.Header{})
	wantCode(t, "a job of a deleted tenant", pe, 403, CodeForbidden)
	// Without the mark, no key is no admission.
	_, pe = r.begin("a", "")
	wantCode(t, "a request without key or mark", pe, 401, CodeUnauthenticated)
}

func TestStage_Identify(t *testing.T) {
	r := newRig(t)
	acme := r.tenant(Tenant{Name: "acme", Models: []string{"a"}, Rate: Rate{N: 1, Per: 3600e9}})
	st := r.gw
	for _, c := range []struct {
		what, model, key string
		status           int
	}{
		{"own model", "a", acme, 0},
		{"own model again: no rate spent", "a", acme, 0},
		{"no model: the key only", "", acme, 0},
		{"another model", "b", acme, 403},
		{"unknown model", "zz", acme, 404},
		{"no key", "a", "", 401},
	} {
		h := http.Header{}
		if c.key != "" {
			h.Set("Authorization", "Bearer "+c.key)
		}
		tenant, secured, err := st.Identify(context.Background(), c.model, h)
		switch {
		case c.status == 0 && (err != nil || tenant != "acme" || !secured):
			t.Errorf("%s: %q %v %v", c.what, tenant, secured, err)
		case c.status != 0 && problem.From(err).Status != c.status:
			t.Errorf("%s: %v, want %d", c.what, err, c.status)
		}
	}
}
