package tenant

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// clock is a stepped clock for Registry.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Step(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// rig is a registry on a stepped clock, and a gateway whose pipeline has
// the stage, over a controller (fake backend) with models a and b.
type rig struct {
	t      *testing.T
	dir    string
	st     *store.Store
	reg    *Registry
	clock  *clock
	gw     *gateway.Gateway
	prices *cost.Prices
	fb     *fake.Backend
}

func newRig(t *testing.T) *rig {
	t.Helper()
	p := cost.DefaultPrices()
	p.Serverless.PerMillionRequests = 50 // $0.00005 a request
	r := &rig{t: t, dir: t.TempDir(), clock: &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}, prices: p}
	r.open()
	r.fb = fake.New(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	c := controller.New(controller.Config{Store: r.st, Backends: map[string]backend.Backend{"process": r.fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	for _, name := range []string{"a", "b"} {
		m, err := manifest.Parse([]byte("name: "+name+"\nruntime: {command: [x]}\n"), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Apply(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	r.gw = gateway.New(c, slog.New(slog.DiscardHandler))
	r.gw.Use(NewStage(r.reg, prometheus.NewRegistry()))
	return r
}

// open (re)opens the store and the registry over r.dir.
func (r *rig) open() {
	r.t.Helper()
	st, err := store.Open(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { st.Close() })
	reg, err := Open(st, r.prices, slog.New(slog.DiscardHandler))
	if err != nil {
		r.t.Fatal(err)
	}
	reg.Now = r.clock.Now
	r.st, r.reg = st, reg
}

// begin runs the pipeline's admission for a request carrying key (as a
// bearer token; "" sends none).
func (r *rig) begin(model, key string) (*gateway.Exchange, *problem.Error) {
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	return r.beginWith(model, h)
}

func (r *rig) beginWith(model string, h http.Header) (*gateway.Exchange, *problem.Error) {
	ex, err := r.gw.Begin(context.Background(), gateway.ProtocolHTTP, model, h)
	if err != nil {
		return nil, problem.From(err)
	}
	return ex, nil
}

// serve admits and finishes one request as served; it returns the refusal.
func (r *rig) serve(model, key string) *problem.Error {
	ex, pe := r.begin(model, key)
	if pe != nil {
		return pe
	}
	ex.Finish(200, false, nil)
	return nil
}

func (r *rig) tenant(t Tenant) string {
	r.t.Helper()
	if _, err := r.reg.Create(t); err != nil {
		r.t.Fatal(err)
	}
	_, key, err := r.reg.CreateKey(t.Name, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return key
}

func wantCode(t *testing.T, what string, pe *problem.Error, status int, code string) {
	t.Helper()
	if pe == nil {
		t.Fatalf("%s: admitted, want %d %s", what, status, code)
	}
	if pe.Status != status || pe.Code != code {
		t.Fatalf("%s: %d %s (%s), want %d %s", what, pe.Status, pe.Code, pe.Message, status, code)
	}
}

func TestStage_Credentials(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Models: []string{"a"}})
	id, secret, _ := ParseKey(key)
	other := "tdm_" + id + "_" + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{secret[0] ^ 1}, secretBytes))
	_, _, unknown := newKey()
	for _, c := range []struct {
		what   string
		h      http.Header
		model  string
		status int
		code   string
	}{
		{"no key", http.Header{}, "a", 401, CodeUnauthenticated},
		{"malformed", http.Header{"Authorization": {"Bearer nope"}}, "a", 401, CodeUnauthenticated},
		{"basic scheme", http.Header{"Authorization": {"Basic " + key}}, "a", 401, CodeUnauthenticated},
		{"unknown id", http.Header{"Authorization": {"Bearer " + unknown}}, "a", 401, CodeUnauthenticated},
		{"right id, wrong secret", http.Header{"Authorization": {"Bearer " + other}}, "a", 401, CodeUnauthenticated},
		{"another tenant's model", http.Header{"Authorization": {"Bearer " + key}}, "b", 403, CodeForbidden},
		{"unknown model", http.Header{"Authorization": {"Bearer " + key}}, "zz", 404, "model_not_found"},
		{"bearer", http.Header{"Authorization": {"Bearer " + key}}, "a", 200, ""},
		{"bearer, any case", http.Header{"Authorization": {"bEaReR " + key}}, "a", 200, ""},
		{"X-API-Key", http.Header{"X-Api-Key": {key}}, "a", 200, ""},
	} {
		ex, pe := r.beginWith(c.model, c.h)
		if c.status == 200 {
			if pe != nil {
				t.Errorf("%s: refused %v", c.what, pe)
				continue
			}
			if ex.Tenant != "acme" {
				t.Errorf("%s: exchange's tenant %q", c.what, ex.Tenant)
			}
			if c.h.Get("Authorization") != "" || c.h.Get("X-Api-Key") != "" {
				t.Errorf("%s: the key stays in the headers the instance gets: %v", c.what, c.h)
			}
			ex.Finish(200, false, nil)
			continue
		}
		if pe == nil || pe.Status != c.status || pe.Code != c.code {
			t.Errorf("%s: %v, want %d %s", c.what, pe, c.status, c.code)
		}
		if pe != nil && bytes.Contains([]byte(pe.Message), []byte(secretText(key))) {
			t.Errorf("%s: the refusal repeats the key: %s", c.what, pe.Message)
		}
	}
	// Refusals woke nothing.
	if calls := r.fb.Calls(); len(calls) != 0 {
		t.Errorf("admission refusals started instances: %v", calls)
	}
}

func secretText(key string) string { return key[len(keyPrefix)+idLen+1:] }

func TestStage_ExpiredKey(t *testing.T) {
	r := newRig(t)
	r.tenant(Tenant{Name: "acme"})
	_, key, err := r.reg.CreateKey("acme", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if pe := r.serve("a", key); pe != nil {
		t.Fatal(pe)
	}
	r.clock.Step(time.Hour)
	wantCode(t, "at expiry", r.serve("a", key), 401, CodeUnauthenticated)
}

func TestStage_RateIsExact(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Rate: Rate{N: 5, Per: time.Second}})
	for i := range 5 {
		if pe := r.serve("a", key); pe != nil {
			t.Fatalf("request %d of the burst: %v", i+1, pe)
		}
	}
	pe := r.serve("a", key)
	wantCode(t, "6th at once", pe, 429, CodeRateLimited)
	if pe.RetryAfter != 200*time.Millisecond {
		t.Fatalf("Retry-After %v, want 200ms (one token at 5/s)", pe.RetryAfter)
	}
	r.clock.Step(199 * time.Millisecond)
	wantCode(t, "after 199ms", r.serve("a", key), 429, CodeRateLimited)
	r.clock.Step(time.Millisecond)
	if pe := r.serve("a", key); pe != nil {
		t.Fatalf("after 200ms: %v", pe)
	}
	wantCode(t, "again at once", r.serve("a", key), 429, CodeRateLimited)
	// A second refills 5, never more than the burst.
	r.clock.Step(10 * time.Second)
	for i := range 5 {
		if pe := r.serve("a", key); pe != nil {
			t.Fatalf("request %d after 10s idle: %v", i+1, pe)
		}
	}
	wantCode(t, "6th after 10s idle", r.serve("a", key), 429, CodeRateLimited)
}

func TestStage_ConcurrencyQuota(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Concurrency: 2})
	ex1, pe := r.begin("a", key)
	if pe != nil {
		t.Fatal(pe)
	}
	ex2, pe := r.begin("a", key)
	if pe != nil {
		t.Fatal(pe)
	}
	wantCode(t, "third in flight", r.serve("a", key), 429, CodeQuotaExceeded)
	if st, _ := r.reg.Get("acme"); st.InFlight != 2 {
		t.Fatalf("in flight %d, want 2 (a refusal holds no slot)", st.InFlight)
	}
	ex1.Finish(200, false, nil)
	if pe := r.serve("a", key); pe != nil {
		t.Fatalf("after one finished: %v", pe)
	}
	ex2.Finish(500, false, errors.New("boom"))
	if st, _ := r.reg.Get("acme"); st.InFlight != 0 {
		t.Fatalf("in flight %d after all finished", st.InFlight)
	}
}

// A budget of $0.0001 at $0.00005 a request: two requests spend it, the
// third is refused until the period ends, and a new period starts at zero.
func TestStage_BudgetAndRollover(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Budget: 0.0001, BudgetPeriod: time.Hour})
	for i := range 2 {
		if pe := r.serve("a", key); pe != nil {
			t.Fatalf("request %d: %v", i+1, pe)
		}
	}
	r.clock.Step(10 * time.Minute)
	pe := r.serve("a", key)
	wantCode(t, "over budget", pe, 429, CodeBudgetExceeded)
	if pe.RetryAfter != 50*time.Minute {
		t.Fatalf("Retry-After %v, want the 50m left of the period", pe.RetryAfter)
	}
	st, _ := r.reg.Get("acme")
	if st.Usage.Requests != 2 || st.Usage.PeriodSpend < 0.0001 || st.Usage.Spend != st.Usage.PeriodSpend {
		t.Fatalf("usage %+v", st.Usage)
	}
	r.clock.Step(50 * time.Minute)
	if pe := r.serve("a", key); pe != nil {
		t.Fatalf("in the next period: %v", pe)
	}
	st, _ = r.reg.Get("acme")
	if st.Usage.Requests != 3 || st.Usage.PeriodSpend >= 0.0001 || st.Usage.Spend < 0.00015 ||
		!st.Usage.PeriodStart.Equal(r.clock.Now()) {
		t.Fatalf("usage after rollover %+v", st.Usage)
	}
	// A refused request is not metered.
	if _, pe := r.begin("b", "tdm_nope"); pe == nil {
		t.Fatal("bad key admitted")
	}
	if st2, _ := r.reg.Get("acme"); st2.Usage.Requests != 3 {
		t.Fatalf("refusals metered: %+v", st2.Usage)
	}
}

func TestRegistry_RevocationIsImmediate(t *testing.T) {
	r := newRig(t)
	r.tenant(Tenant{Name: "acme"})
	ki, key, err := r.reg.CreateKey("acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pe := r.serve("a", key); pe != nil {
		t.Fatal(pe)
	}
	if err := r.reg.RevokeKey(ki.ID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "revoked", r.serve("a", key), 401, CodeUnauthenticated)
	if err := r.reg.RevokeKey(ki.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	// Deleting a tenant revokes its keys.
	_, key2, _ := r.reg.CreateKey("acme", 0)
	if err := r.reg.Delete("acme"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "key of a deleted tenant", r.serve("a", key2), 401, CodeUnauthenticated)
}

func TestRegistry_UpdateKeepsUsage(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Rate: Rate{N: 2, Per: time.Second}, Concurrency: 5})
	r.serve("a", key)
	r.serve("a", key)
	wantCode(t, "3rd at 2/s", r.serve("a", key), 429, CodeRateLimited)
	held, pe := r.begin("b", "") // no key: refused, holds nothing
	if pe == nil {
		held.Finish(200, false, nil)
		t.Fatal("admitted without a key")
	}
	st, err := r.reg.Update("acme", func(t *Tenant) { t.Rate = Rate{N: 3, Per: time.Second}; t.Models = []string{"a"} })
	if err != nil {
		t.Fatal(err)
	}
	if st.Usage.Requests != 2 || st.Keys != 1 || st.Concurrency != 5 || st.CreatedAt.IsZero() {
		t.Fatalf("after update: %+v", st)
	}
	// The bucket kept its state: empty, now refilling at 3/s.
	wantCode(t, "at once after update", r.serve("a", key), 429, CodeRateLimited)
	r.clock.Step(time.Second)
	for i := range 3 {
		if pe := r.serve("a", key); pe != nil {
			t.Fatalf("request %d at 3/s: %v", i+1, pe)
		}
	}
	wantCode(t, "model no longer listed", r.serve("b", key), 403, CodeForbidden)
	if _, err := r.reg.Update("acme", func(t *Tenant) { t.Concurrency = -1 }); err == nil {
		t.Fatal("invalid update accepted")
	}
	if _, err := r.reg.Update("nobody", func(*Tenant) {}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
}

func TestRegistry_PersistsAcrossOpen(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme", Budget: 1, BudgetPeriod: 24 * time.Hour})
	for range 3 {
		if pe := r.serve("a", key); pe != nil {
			t.Fatal(pe)
		}
	}
	before, _ := r.reg.Get("acme")
	if err := r.reg.Persist(); err != nil {
		t.Fatal(err)
	}
	reg2, err := Open(r.st, r.prices, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg2.Now = r.clock.Now
	after, err := reg2.Get("acme")
	if err != nil {
		t.Fatal(err)
	}
	if after.Usage != before.Usage || after.Keys != 1 || after.Budget != 1 || after.BudgetPeriod != 24*time.Hour {
		t.Fatalf("reopened: %+v\nbefore:   %+v", after, before)
	}
	keys := reg2.Keys("acme")
	if len(keys) != 1 || !keys[0].LastUsed.Equal(r.clock.Now()) {
		t.Fatalf("reopened keys: %+v", keys)
	}
	if ks, err := reg2.authenticate(key); err != nil || ks.k.Tenant != "acme" {
		t.Fatalf("key after reopen: %v", err)
	}
}

// The key's text and its secret are never written: only the secret's
// SHA-256 is.
func TestRegistry_KeyNeverStored(t *testing.T) {
	r := newRig(t)
	key := r.tenant(Tenant{Name: "acme"})
	_, key2, err := r.reg.CreateKey("acme", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r.serve("a", key)
	if err := r.reg.Persist(); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Close(); err != nil {
		t.Fatal(err)
	}
	var files int
	err = filepath.WalkDir(r.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, k := range []string{key, key2} {
			_, secret, _ := ParseKey(k)
			for what, needle := range map[string][]byte{"key": []byte(k), "secret text": []byte(secretText(k)), "secret bytes": secret} {
				if bytes.Contains(b, needle) {
					t.Errorf("%s holds a key's %s", path, what)
				}
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walked %d files: %v", files, err)
	}
}

func TestTenant_Validate(t *testing.T) {
	for _, c := range []struct {
		t     Tenant
		field string
	}{
		{Tenant{Name: "acme"}, ""},
		{Tenant{Name: "Acme"}, "name"},
		{Tenant{Name: "acme", Models: []string{"a", "B"}}, "models"},
		{Tenant{Name: "acme", Concurrency: -1}, "concurrency"},
		{Tenant{Name: "acme", Budget: -1}, "budget"},
		{Tenant{Name: "acme", Rate: Rate{N: 1}}, "rate"},
	} {
		err := c.t.Validate()
		if c.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.t, err)
			}
			continue
		}
		if pe := problem.From(err); err == nil || pe.Status != 400 || pe.Field != c.field {
			t.Errorf("%+v: %v (field %q), want a 400 naming %s", c.t, err, problem.From(err).Field, c.field)
		}
	}
}
