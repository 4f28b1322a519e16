package tenant

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"tandem/internal/gateway"
	"tandem/internal/problem"
)

var (
	_ gateway.Viewer     = (*Stage)(nil)
	_ gateway.Identifier = (*Stage)(nil)
)

// View says whether the caller who sent h may see model in a listing
// (the OpenAI door's GET /v1/models): its key must be valid and unexpired
// (401 otherwise), and the model one of its tenant's (403). Unlike Admit it
// spends no rate, quota or concurrency and marks no key used.
func (st *Stage) View(h http.Header, model string) error {
	key := credential(h)
	if key == "" {
		return unauthenticated("an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY")
	}
	ks, err := st.r.authenticate(key)
	if err != nil {
		return err
	}
	if exp := ks.k.Expires; !exp.IsZero() && !st.r.Now().Before(exp) {
		return unauthenticated(fmt.Sprintf("API key %s expired at %s", ks.k.ID, exp.Format(time.RFC3339)))
	}
	if t := ks.t.t.Load(); len(t.Models) > 0 && !slices.Contains(t.Models, model) {
		return problem.New(http.StatusForbidden, CodeForbidden, fmt.Sprintf("tenant %q may not call model %q", t.Name, model))
	}
	return nil
}

// Identify names the tenant whose key h carries, for a job to be stored
// (the async doors): the key must be valid and unexpired (401) and, when
// model is not "", the model one of its tenant's (403). Like View it
// spends no rate, quota or concurrency; those apply when the job runs.
func (st *Stage) Identify(h http.Header, model string) (string, error) {
	key := credential(h)
	if key == "" {
		return "", unauthenticated("an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY")
	}
	ks, err := st.r.authenticate(key)
	if err != nil {
		return "", err
	}
	if exp := ks.k.Expires; !exp.IsZero() && !st.r.Now().Before(exp) {
		return "", unauthenticated(fmt.Sprintf("API key %s expired at %s", ks.k.ID, exp.Format(time.RFC3339)))
	}
	t := ks.t.t.Load()
	if model != "" && len(t.Models) > 0 && !slices.Contains(t.Models, model) {
		return "", problem.New(http.StatusForbidden, CodeForbidden, fmt.Sprintf("tenant %q may not call model %q", t.Name, model))
	}
	return t.Name, nil
}
