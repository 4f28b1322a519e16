package tenant

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"tandem/internal/problem"
)

// memCatalog is a hand-written Catalog: a map under a mutex, as the
// Secret is under the API server's resourceVersion check.
type memCatalog struct {
	mu     sync.Mutex
	recs   map[string][]byte // nil: no catalog yet
	fail   error
	writes int
}

func (c *memCatalog) TenantRecords(context.Context) (map[string][]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, false, c.fail
	}
	if c.recs == nil {
		return nil, false, nil
	}
	return maps.Clone(c.recs), true, nil
}

func (c *memCatalog) ChangeTenantRecord(_ context.Context, name string, change func([]byte) ([]byte, error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	next, err := change(c.recs[name])
	if err != nil {
		return err
	}
	if c.recs == nil {
		c.recs = map[string][]byte{}
	}
	if next == nil {
		delete(c.recs, name)
	} else {
		c.recs[name] = next
	}
	c.writes++
	return nil
}

// pair is two tandem replicas' registries (each with its own store and
// gateway) on one clock, sharing cat.
func pair(t *testing.T, cat *memCatalog) (a, b *rig) {
	t.Helper()
	a, b = newRig(t), newRig(t)
	b.clock = a.clock
	b.reg.Now = a.clock.Now
	if cat != nil {
		a.reg.Share(cat)
		b.reg.Share(cat)
	}
	return a, b
}

func sync1(t *testing.T, r *rig) {
	t.Helper()
	if err := r.reg.syncOnce(context.Background(), true); err != nil {
		t.Fatal(err)
	}
}

// A tenant and key made through one replica work at the other after one
// catalog round; updates, revocations and deletions follow the same way.
func TestCatalog_SharesTenantsAndKeys(t *testing.T) {
	cat := &memCatalog{}
	a, b := pair(t, cat)
	keyA := a.tenant(Tenant{Name: "acme", Models: []string{"a"}})
	id, _, _ := ParseKey(keyA)

	wantCode(t, "at b before a catalog round", b.serve("a", keyA), 401, CodeUnauthenticated)
	sync1(t, b)
	if pe := b.serve("a", keyA); pe != nil {
		t.Fatalf("a key made at a, at b after a round: %v", pe)
	}
	wantCode(t, "another model at b", b.serve("b", keyA), 403, CodeForbidden)
	// Nothing changed: a round changes nothing here (no store write, no
	// new snapshot), whatever order the catalog lists keys in.
	for range 3 {
		if _, _, err := a.reg.CreateKey("acme", 0); err != nil {
			t.Fatal(err)
		}
	}
	sync1(t, b)
	if n := len(b.reg.Keys("acme")); n != 4 {
		t.Fatalf("b has %d keys of acme, want 4", n)
	}
	before := b.reg.snap.Load()
	sync1(t, b)
	if b.reg.snap.Load() != before {
		t.Fatal("a catalog round with nothing changed replaced the snapshot")
	}
	if raw := cat.recs["acme"]; len(raw) == 0 || containsBytes(raw, []byte(secretText(keyA))) {
		t.Fatalf("the catalog's record %q holds the key's secret (or nothing)", raw)
	}

	// An update at b reaches a.
	if _, err := b.reg.Update("acme", func(t *Tenant) { t.Models = nil; t.Rate = Rate{N: 1, Per: time.Hour} }); err != nil {
		t.Fatal(err)
	}
	sync1(t, a)
	if st, _ := a.reg.Get("acme"); st.Rate != (Rate{N: 1, Per: time.Hour}) || len(st.Models) != 0 {
		t.Fatalf("a after b's update: %+v", st.Tenant)
	}
	if pe := a.serve("b", keyA); pe != nil {
		t.Fatalf("model b at a after b's update: %v", pe)
	}
	wantCode(t, "second at a at 1/h", a.serve("b", keyA), 429, CodeRateLimited)

	// Made at the same time at both: the catalog decides, one wins.
	if _, err := b.reg.Create(Tenant{Name: "acme"}); !errors.Is(err, ErrExists) {
		t.Fatalf("creating acme at b again: %v, want ErrExists", err)
	}

	// A revocation at a: immediate at a, at b after its next round.
	if err := a.reg.RevokeKey(id); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "revoked, at a", a.serve("a", keyA), 401, CodeUnauthenticated)
	a.clock.Step(time.Hour) // b's bucket has a token again
	if pe := b.serve("a", keyA); pe != nil {
		t.Fatalf("revoked at a, at b before its round (the stated delay): %v", pe)
	}
	sync1(t, b)
	wantCode(t, "revoked at a, at b after a round", b.serve("a", keyA), 401, CodeUnauthenticated)

	// A deletion at b reaches a.
	keyB := b.tenant(Tenant{Name: "other"})
	sync1(t, a)
	if pe := a.serve("a", keyB); pe != nil {
		t.Fatalf("b's new tenant at a: %v", pe)
	}
	if err := b.reg.Delete("other"); err != nil {
		t.Fatal(err)
	}
	sync1(t, a)
	if _, err := a.reg.Get("other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a still has tenant other deleted at b: %v", err)
	}
	wantCode(t, "deleted tenant's key at a", a.serve("a", keyB), 401, CodeUnauthenticated)
	// And a restart of a reads what it merged from its own store.
	a.reg.Persist()
	again, err := Open(a.st, a.prices, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Get("other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted tenant back after a restart: %v", err)
	}
	if _, err := again.Get("acme"); err != nil {
		t.Fatalf("acme after a restart: %v", err)
	}
}

func containsBytes(b, sub []byte) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return true
		}
	}
	return false
}

// A write that the catalog refuses is made nowhere; a listing that a write
// overtook is not applied (it would undo the write).
func TestCatalog_FailuresAndRaces(t *testing.T) {
	cat := &memCatalog{}
	a, _ := pair(t, cat)
	cat.fail = errors.New("apiserver down")
	_, err := a.reg.Create(Tenant{Name: "acme"})
	if !errors.Is(err, ErrCatalog) {
		t.Fatalf("create with the catalog down: %v, want ErrCatalog", err)
	}
	if pe := problem.From(err); pe.Status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", pe.Status)
	}
	if _, err := a.reg.Get("acme"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a tenant the catalog refused exists here: %v", err)
	}
	cat.fail = nil

	before := a.reg.writes.Load()
	stale, _, _ := cat.TenantRecords(context.Background()) // listed before the create
	if _, err := a.reg.Create(Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	a.reg.merge(stale, before)
	if _, err := a.reg.Get("acme"); err != nil {
		t.Fatalf("a listing taken before the create deleted it: %v", err)
	}
	// A malformed record is ignored, the rest applied.
	cat.recs["bad"] = []byte(`{"tenant":{"name":"other"}}`)
	sync1(t, a)
	if _, err := a.reg.Get("bad"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a malformed record was applied: %v", err)
	}
}

// The first replica to share seeds a catalog that does not exist yet with
// its tenants; an existing catalog wins over what a replica had.
func TestCatalog_Seed(t *testing.T) {
	a, b := pair(t, nil)
	key := a.tenant(Tenant{Name: "acme"})
	b.tenant(Tenant{Name: "stale"})
	cat := &memCatalog{}
	a.reg.Share(cat)
	b.reg.Share(cat)
	sync1(t, a)
	if _, ok := cat.recs["acme"]; !ok {
		t.Fatalf("the catalog was not seeded: %v", cat.recs)
	}
	sync1(t, b)
	if pe := b.serve("a", key); pe != nil {
		t.Fatalf("a's key at b after seeding: %v", pe)
	}
	if _, err := b.reg.Get("stale"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b kept a tenant the existing catalog does not have: %v", err)
	}
}

// Two replicas at 10/s (burst 10), each told there are 2: each runs a
// bucket of 5/s with a burst of 5. Requests alternating between them every
// 10 ms for 10 s: the cluster admits the burst plus 10/s, 110, not the
// 220 of two whole buckets; all of them at one replica: 55.
func TestCluster_RateSplit(t *testing.T) {
	a, b := pair(t, &memCatalog{})
	key := a.tenant(Tenant{Name: "acme", Rate: Rate{N: 10, Per: time.Second}})
	sync1(t, b)
	a.reg.Cluster(2, nil)
	b.reg.Cluster(2, nil)
	admitted := func(rigs ...*rig) int {
		n := 0
		for i := range 1000 {
			if rigs[i%len(rigs)].serve("a", key) == nil {
				n++
			}
			a.clock.Step(10 * time.Millisecond)
		}
		return n
	}
	if n := admitted(a, b); n < 100 || n > 111 {
		t.Fatalf("two replicas at 10/s split 2 ways admitted %d in 10 s, want 110 (burst 10 + 10/s), at most 111", n)
	}
	a.clock.Step(time.Minute)
	if n := admitted(a); n < 50 || n > 56 {
		t.Fatalf("one replica of two admitted %d in 10 s, want 55 (its share: 5 + 5/s)", n)
	}
	// Alone again: the whole rate, with the bucket kept (it holds the 5
	// tokens of its share, and fills to 10 from there).
	a.clock.Step(time.Minute)
	a.reg.Cluster(1, nil)
	if n := admitted(a); n < 100 || n > 111 {
		t.Fatalf("one replica alone admitted %d in 10 s, want 105 (5 held + 10/s)", n)
	}
	// A burst of 1 split 3 ways is still 1 at each.
	if lim, burst := rateShare(Rate{N: 1, Per: time.Second}, 3); burst != 1 || float64(lim) < 0.33 || float64(lim) > 0.34 {
		t.Fatalf("rateShare(1/s, 3) = %v, %d", lim, burst)
	}
}

// A concurrency quota of 3 over 2 replicas: 2 at each (rounded up), so 4
// at most across them.
func TestCluster_ConcurrencySplit(t *testing.T) {
	a, b := pair(t, &memCatalog{})
	key := a.tenant(Tenant{Name: "acme", Concurrency: 3})
	sync1(t, b)
	a.reg.Cluster(2, nil)
	b.reg.Cluster(2, nil)
	var held []func()
	for _, r := range []*rig{a, b} {
		for i := range 2 {
			ex, pe := r.begin("a", key)
			if pe != nil {
				t.Fatalf("request %d in flight: %v", i+1, pe)
			}
			held = append(held, func() { ex.Finish(200, false, nil) })
		}
		wantCode(t, "third in flight at one replica", r.serve("a", key), 429, CodeQuotaExceeded)
	}
	for _, f := range held {
		f()
	}
	if got := concurrencyShare(8, 3); got != 3 {
		t.Fatalf("concurrencyShare(8, 3) = %d, want 3", got)
	}
	if got := concurrencyShare(1, 4); got != 1 {
		t.Fatalf("concurrencyShare(1, 4) = %d, want 1", got)
	}
}

// A budget of $0.0002 ($0.00005 a request): three requests at a, reported
// as a's spend to b, leave b one request.
func TestCluster_BudgetAcrossReplicas(t *testing.T) {
	a, b := pair(t, &memCatalog{})
	key := a.tenant(Tenant{Name: "acme", Budget: 0.0002, BudgetPeriod: time.Hour})
	sync1(t, b)
	for i := range 3 {
		if pe := a.serve("a", key); pe != nil {
			t.Fatalf("request %d at a: %v", i+1, pe)
		}
	}
	spend := a.reg.Spend(a.clock.Now())
	if len(spend) != 1 || spend[0].Tenant != "acme" || spend[0].USD < 0.00015-1e-8 || spend[0].USD > 0.00015+1e-8 ||
		!spend[0].Until.Equal(spend[0].Period.Add(time.Hour)) {
		t.Fatalf("a's spend %+v, want acme $0.00015 over an hour", spend)
	}
	// A lower figure for the same period (a new leader that has not
	// heard from a yet) does not reopen the budget.
	b.reg.Cluster(2, spend)
	b.reg.Cluster(2, []PeriodSpend{{Tenant: "acme", Period: spend[0].Period, USD: 0}})
	if pe := b.serve("a", key); pe != nil {
		t.Fatalf("fourth request, at b: %v", pe)
	}
	pe := b.serve("a", key)
	wantCode(t, "fifth, at b", pe, 429, CodeBudgetExceeded)
	if pe.RetryAfter != time.Hour {
		t.Fatalf("Retry-After %v, want the hour left of the period", pe.RetryAfter)
	}
	// Without the others' spend, b alone would have admitted it.
	if st, _ := b.reg.Get("acme"); st.Usage.PeriodSpend > 0.00005+1e-8 {
		t.Fatalf("b's own period spend %v, want one request's", st.Usage.PeriodSpend)
	}
	// The next period starts at zero everywhere: the old figure no
	// longer counts.
	a.clock.Step(time.Hour)
	if pe := b.serve("a", key); pe != nil {
		t.Fatalf("next period at b: %v", pe)
	}
}
