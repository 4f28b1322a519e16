package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tandem/internal/problem"
	"tandem/internal/tenant"
)

// TenantRequest is the body of POST /v1/tenants and PATCH
// /v1/tenants/{name}. A field left out of a PATCH keeps its value; an empty
// string clears a limit ("rate": "" is no rate limit).
type TenantRequest struct {
	Name   string    `json:"name,omitempty"`
	Models *[]string `json:"models,omitempty"`
	// Rate is "N/s", "N/m", "N/h" or "N/DURATION": a bucket of N requests
	// refilled at N per period (so N/s admits a burst of N).
	Rate        *string `json:"rate,omitempty"`
	Concurrency *int    `json:"concurrency,omitempty"`
	// Budget is USD per BudgetPeriod ("0.01", "$5"); a JSON number is
	// taken too.
	Budget *Amount `json:"budget,omitempty"`
	// BudgetPeriod is a duration that may count days ("30d", "12h");
	// empty is the tenant's lifetime.
	BudgetPeriod *string `json:"budget_period,omitempty"`
}

// Amount is a string that may arrive as a JSON string or number.
type Amount string

// UnmarshalJSON takes "0.01" or 0.01.
func (a *Amount) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Amount(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("budget: want a string or a number of USD")
	}
	*a = Amount(n)
	return nil
}

// TenantInfo is a tenant as the control API shows it: its status, with
// the rate and the budget period written as they are given.
type TenantInfo struct {
	tenant.Status
	// Rate is "5/s", or "" without a limit.
	Rate string `json:"rate"`
	// BudgetPeriod is "720h0m0s", or "" for the tenant's lifetime.
	BudgetPeriod string `json:"budget_period,omitempty"`
}

// UnmarshalJSON reads a TenantInfo, setting the tenant's Rate and
// BudgetPeriod from their text.
func (ti *TenantInfo) UnmarshalJSON(b []byte) error {
	type plain TenantInfo // without this method
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var err error
	if p.Tenant.Rate, err = tenant.ParseRate(p.Rate); err != nil {
		return err
	}
	if p.BudgetPeriod != "" {
		if p.Tenant.BudgetPeriod, err = time.ParseDuration(p.BudgetPeriod); err != nil {
			return fmt.Errorf("budget_period: %w", err)
		}
	}
	*ti = TenantInfo(p)
	return nil
}

func tenantInfo(st *tenant.Status) TenantInfo {
	ti := TenantInfo{Status: *st}
	if !st.Tenant.Rate.IsZero() {
		ti.Rate = st.Tenant.Rate.String()
	}
	if st.Tenant.BudgetPeriod > 0 {
		ti.BudgetPeriod = st.Tenant.BudgetPeriod.String()
	}
	return ti
}

// KeyRequest is the body of POST /v1/keys.
type KeyRequest struct {
	Tenant string `json:"tenant"`
	// Expires is how long the key is valid ("90d", "12h"); empty never
	// expires.
	Expires string `json:"expires,omitempty"`
}

// NewKey answers POST /v1/keys: the key's listing and, this once, the key.
type NewKey struct {
	tenant.KeyInfo
	Key string `json:"key"`
}

// maxTenantBody bounds a tenant or key request's body.
const maxTenantBody = 64 << 10

// MountTenants mounts the tenants and keys routes over reg.
func (s *Server) MountTenants(reg *tenant.Registry) {
	h := &tenantsAPI{reg: reg, s: s}
	s.mux.HandleFunc("GET /v1/tenants", h.list)
	s.mux.HandleFunc("POST /v1/tenants", h.create)
	s.mux.HandleFunc("GET /v1/tenants/{name}", h.get)
	s.mux.HandleFunc("PATCH /v1/tenants/{name}", h.update)
	s.mux.HandleFunc("DELETE /v1/tenants/{name}", h.delete)
	s.mux.HandleFunc("GET /v1/keys", h.keys)
	s.mux.HandleFunc("POST /v1/keys", h.createKey)
	s.mux.HandleFunc("DELETE /v1/keys/{id}", h.revokeKey)
}

type tenantsAPI struct {
	reg *tenant.Registry
	s   *Server
}

func (h *tenantsAPI) list(w http.ResponseWriter, r *http.Request) {
	list := h.reg.List()
	out := make([]TenantInfo, 0, len(list))
	for _, st := range list {
		out = append(out, tenantInfo(st))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *tenantsAPI) get(w http.ResponseWriter, r *http.Request) {
	st, err := h.reg.Get(r.PathValue("name"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantInfo(st))
}

func (h *tenantsAPI) create(w http.ResponseWriter, r *http.Request) {
	var req TenantRequest
	if perr := decodeStrict(w, r, &req); perr != nil {
		problem.Write(w, perr)
		return
	}
	AuditName(r, req.Name)
	if req.Name == "" {
		problem.Write(w, problem.New(http.StatusBadRequest, "invalid_tenant", "a tenant needs a name").WithField("name"))
		return
	}
	t := tenant.Tenant{Name: req.Name}
	if perr := req.apply(&t); perr != nil {
		problem.Write(w, perr)
		return
	}
	st, err := h.reg.Create(t)
	if err != nil {
		problem.Write(w, err)
		return
	}
	h.s.log.Info("tenant created", "tenant", st.Name)
	writeJSON(w, http.StatusCreated, tenantInfo(st))
}

func (h *tenantsAPI) update(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req TenantRequest
	if perr := decodeStrict(w, r, &req); perr != nil {
		problem.Write(w, perr)
		return
	}
	if req.Name != "" && req.Name != name {
		problem.Write(w, problem.New(http.StatusBadRequest, "invalid_tenant",
			fmt.Sprintf("a tenant cannot be renamed (%q in the body, %q in the path)", req.Name, name)).WithField("name"))
		return
	}
	// Parse before taking the registry's lock: set only copies values.
	var parsed tenant.Tenant
	if perr := req.apply(&parsed); perr != nil {
		problem.Write(w, perr)
		return
	}
	st, err := h.reg.Update(name, func(t *tenant.Tenant) {
		if req.Models != nil {
			t.Models = parsed.Models
		}
		if req.Rate != nil {
			t.Rate = parsed.Rate
		}
		if req.Concurrency != nil {
			t.Concurrency = parsed.Concurrency
		}
		if req.Budget != nil {
			t.Budget = parsed.Budget
		}
		if req.BudgetPeriod != nil {
			t.BudgetPeriod = parsed.BudgetPeriod
		}
	})
	if err != nil {
		problem.Write(w, err)
		return
	}
	h.s.log.Info("tenant updated", "tenant", name)
	writeJSON(w, http.StatusOK, tenantInfo(st))
}

// apply parses the request's given fields into t, naming the field of the
// first that does not parse.
func (req *TenantRequest) apply(t *tenant.Tenant) *problem.Error {
	bad := func(field string, err error) *problem.Error {
		return problem.New(http.StatusBadRequest, "invalid_tenant", err.Error()).WithField(field)
	}
	if req.Models != nil {
		t.Models = append([]string(nil), (*req.Models)...)
	}
	if req.Rate != nil {
		rt, err := tenant.ParseRate(*req.Rate)
		if err != nil {
			return bad("rate", err)
		}
		t.Rate = rt
	}
	if req.Concurrency != nil {
		if *req.Concurrency < 0 {
			return bad("concurrency", fmt.Errorf("concurrency %d must not be negative (0 is no limit)", *req.Concurrency))
		}
		t.Concurrency = *req.Concurrency
	}
	if req.Budget != nil {
		b, err := tenant.ParseBudget(string(*req.Budget))
		if err != nil {
			return bad("budget", err)
		}
		t.Budget = b
	}
	if req.BudgetPeriod != nil {
		t.BudgetPeriod = 0
		if *req.BudgetPeriod != "" {
			p, err := tenant.ParsePeriod(*req.BudgetPeriod)
			if err != nil {
				return bad("budget_period", err)
			}
			t.BudgetPeriod = p
		}
	}
	return nil
}

func (h *tenantsAPI) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.reg.Delete(name); err != nil {
		problem.Write(w, err)
		return
	}
	h.s.log.Info("tenant deleted", "tenant", name)
	w.WriteHeader(http.StatusNoContent)
}

func (h *tenantsAPI) keys(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("tenant")
	if name != "" {
		if _, err := h.reg.Get(name); err != nil {
			problem.Write(w, err)
			return
		}
	}
	out := h.reg.Keys(name)
	if out == nil {
		out = []tenant.KeyInfo{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *tenantsAPI) createKey(w http.ResponseWriter, r *http.Request) {
	var req KeyRequest
	if perr := decodeStrict(w, r, &req); perr != nil {
		problem.Write(w, perr)
		return
	}
	AuditName(r, req.Tenant)
	if req.Tenant == "" {
		problem.Write(w, problem.New(http.StatusBadRequest, "invalid_key", "a key needs a tenant").WithField("tenant"))
		return
	}
	var ttl time.Duration
	if req.Expires != "" {
		var err error
		if ttl, err = tenant.ParsePeriod(req.Expires); err != nil {
			problem.Write(w, problem.New(http.StatusBadRequest, "invalid_key", err.Error()).WithField("expires"))
			return
		}
	}
	ki, key, err := h.reg.CreateKey(req.Tenant, ttl)
	if err != nil {
		if errors.Is(err, tenant.ErrNotFound) {
			err = problem.Wrap(err, http.StatusNotFound, "not_found").WithField("tenant")
		}
		problem.Write(w, err)
		return
	}
	AuditName(r, ki.Tenant+"/"+ki.ID) // the id, never the key
	h.s.log.Info("API key created", "tenant", ki.Tenant, "key_id", ki.ID)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, NewKey{KeyInfo: ki, Key: key})
}

func (h *tenantsAPI) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	AuditName(r, id)
	if err := h.reg.RevokeKey(id); err != nil {
		problem.Write(w, err)
		return
	}
	h.s.log.Info("API key revoked", "key_id", id)
	w.WriteHeader(http.StatusNoContent)
}

// decodeStrict reads one JSON object of at most maxTenantBody bytes into
// v, refusing unknown fields and trailing data.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) *problem.Error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxTenantBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return problem.New(http.StatusRequestEntityTooLarge, "too_large", "request body over "+strconv.Itoa(maxTenantBody>>10)+" KiB")
	}
	pe := problem.New(http.StatusBadRequest, "malformed_json", "request body is not a valid JSON object: "+err.Error())
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) && ute.Field != "" {
		pe.Field = ute.Field
	} else if f, ok := unknownField(err); ok {
		pe.Code, pe.Field = "unknown_field", f
	}
	return pe
}

// unknownField reads the field name out of encoding/json's "json: unknown
// field \"x\"" error.
func unknownField(err error) (string, bool) {
	const prefix = `json: unknown field `
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return "", false
	}
	f, err2 := strconv.Unquote(msg[len(prefix):])
	return f, err2 == nil
}
