// Package tenant keeps the gateway's callers apart: tenants with the models
// they may call, a request rate, a concurrency quota and a budget, and the
// API keys that identify them. The Registry is the one owner of that state;
// the request path reads an immutable snapshot (no store call, no lock) and
// moves atomics; writes go to the store first, then swap the snapshot, so
// a revoked key is refused by the very next request.
//
// Across tandem replicas (catalog.go, cluster.go): with a shared Catalog
// writes go to it first and every replica follows it (SyncCatalog); the
// peer stats tell each replica how many there are (it enforces 1/N of
// each rate and concurrency quota) and what the others spent (its budget
// check adds it). docs/tenants.md states the error bounds.
package tenant

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"tandem/internal/cost"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// Tenant is one caller's account and its limits. Zero limits are none.
type Tenant struct {
	Name string `json:"name"`
	// Models the tenant may call; empty means every model.
	Models []string `json:"models,omitempty"`
	Rate   Rate     `json:"rate"`
	// Concurrency bounds the tenant's requests in flight at once.
	Concurrency int `json:"concurrency,omitempty"`
	// Budget (USD) bounds the tenant's metered spend per BudgetPeriod (or
	// over its lifetime when BudgetPeriod is 0).
	Budget       float64       `json:"budget_usd,omitempty"`
	BudgetPeriod time.Duration `json:"budget_period,omitempty"`
	CreatedAt    time.Time     `json:"created_at"`
}

// Key is an API key as stored: its id and the SHA-256 of its secret, never
// the secret itself.
type Key struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"created_at"`
	// Expires is zero for a key that never expires.
	Expires  time.Time `json:"expires,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Hash     []byte    `json:"hash"`
}

// KeyInfo is a key as listed: no secret, no hash.
type KeyInfo struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"created_at"`
	Expires   time.Time `json:"expires,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
}

// Usage is what a tenant used: requests that instances took, their busy
// time, and their cost priced as serverless (per request and per GB-second
// of the deployment's size while serving).
type Usage struct {
	Requests    int64   `json:"requests"`
	BusySeconds float64 `json:"busy_seconds"`
	Spend       float64 `json:"spend_usd"`
	// PeriodStart is when the current budget period began; PeriodSpend is
	// the spend since then, which the budget is checked against.
	PeriodStart time.Time `json:"period_start"`
	PeriodSpend float64   `json:"period_spend_usd"`
}

// Status is a tenant with its usage now.
type Status struct {
	Tenant
	Usage    Usage `json:"usage"`
	InFlight int64 `json:"in_flight"`
	Keys     int   `json:"keys"`
}

// Errors that the control API maps to 404 and 409.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

func init() {
	problem.Register(ErrNotFound, http.StatusNotFound, "not_found", 0)
	problem.Register(ErrExists, http.StatusConflict, "already_exists", 0)
}

const (
	bucketTenants = "tenants"
	bucketKeys    = "keys"
	bucketUsage   = "tenant_usage"
)

var validName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Registry owns tenants, keys and their usage. Safe for concurrent use.
type Registry struct {
	st     *store.Store
	prices *cost.Prices
	log    *slog.Logger
	// Now is the clock (tests step it).
	Now func() time.Time

	mu   sync.Mutex // serialises writes
	snap atomic.Pointer[snapshot]

	// replicas is how many tandem processes share the tenants' limits
	// (1 alone; set by Cluster from the peer stats). Each enforces its
	// share of every rate and concurrency quota.
	replicas atomic.Int64
	// cat, when set, is the shared tenant catalog (Share); writes is
	// bumped by every write under mu, so that a catalog listing that a
	// write overtook is not applied.
	cat    Catalog
	writes atomic.Uint64
}

// snapshot is what the request path reads; replaced whole on each write.
type snapshot struct {
	tenants map[string]*state
	keys    map[string]*keyState
}

// state is one tenant's live state; it survives updates of its settings.
type state struct {
	t       atomic.Pointer[Tenant]
	limiter atomic.Pointer[rate.Limiter] // nil: no rate limit
	flight  atomic.Int64

	// Usage, in atomics: nanodollars and nanoseconds.
	requests    atomic.Int64
	busyNanos   atomic.Int64
	spendNano   atomic.Int64
	periodNano  atomic.Int64
	periodStart atomic.Int64 // unix nanos
	rollMu      sync.Mutex
	// others is what the other tandem processes spent (peer stats).
	others atomic.Pointer[otherSpend]
}

// otherSpend is the spend of the other processes over the period that
// began at period (unix nanos).
type otherSpend struct {
	period int64
	nano   int64
}

type keyState struct {
	k        Key
	t        *state
	lastUsed atomic.Int64 // unix nanos
}

// Open loads tenants, keys and usage from st. prices price the spend.
func Open(st *store.Store, prices *cost.Prices, log *slog.Logger) (*Registry, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{st: st, prices: prices, log: log.With("component", "tenant"), Now: time.Now}
	r.replicas.Store(1)
	snap := &snapshot{tenants: map[string]*state{}, keys: map[string]*keyState{}}
	err := st.ForEachJSON(bucketTenants, func() any { return new(Tenant) }, func(_ string, v any) error {
		t := v.(*Tenant)
		snap.tenants[t.Name] = newState(t, 1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading tenants: %w", err)
	}
	err = st.ForEachJSON(bucketUsage, func() any { return new(Usage) }, func(name string, v any) error {
		if s := snap.tenants[name]; s != nil {
			s.restore(v.(*Usage))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading tenant usage: %w", err)
	}
	err = st.ForEachJSON(bucketKeys, func() any { return new(Key) }, func(_ string, v any) error {
		k := v.(*Key)
		if s := snap.tenants[k.Tenant]; s != nil {
			ks := &keyState{k: *k, t: s}
			ks.lastUsed.Store(unixNano(k.LastUsed))
			snap.keys[k.ID] = ks
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading API keys: %w", err)
	}
	r.snap.Store(snap)
	return r, nil
}

func newState(t *Tenant, replicas int64) *state {
	s := &state{}
	s.t.Store(t)
	if !t.Rate.IsZero() {
		lim, burst := rateShare(t.Rate, replicas)
		s.limiter.Store(rate.NewLimiter(lim, burst))
	}
	s.periodStart.Store(t.CreatedAt.UnixNano())
	return s
}

// setRate applies t's rate, split replicas ways, to s's bucket at now
// (the registry's clock, which the limiter's reservations use); the
// bucket and its tokens survive a change.
func (s *state) setRate(r Rate, replicas int64, now time.Time) {
	switch l := s.limiter.Load(); {
	case r.IsZero():
		s.limiter.Store(nil)
	case l == nil:
		lim, burst := rateShare(r, replicas)
		s.limiter.Store(rate.NewLimiter(lim, burst))
	default:
		lim, burst := rateShare(r, replicas)
		l.SetLimitAt(now, lim)
		l.SetBurstAt(now, burst)
	}
}

func (s *state) restore(u *Usage) {
	s.requests.Store(u.Requests)
	s.busyNanos.Store(int64(u.BusySeconds * 1e9))
	s.spendNano.Store(int64(u.Spend * 1e9))
	s.periodNano.Store(int64(u.PeriodSpend * 1e9))
	if !u.PeriodStart.IsZero() {
		s.periodStart.Store(u.PeriodStart.UnixNano())
	}
}

func (s *state) usage(now time.Time) Usage {
	s.roll(now)
	return Usage{
		Requests:    s.requests.Load(),
		BusySeconds: float64(s.busyNanos.Load()) / 1e9,
		Spend:       float64(s.spendNano.Load()) / 1e9,
		PeriodStart: time.Unix(0, s.periodStart.Load()).UTC(),
		PeriodSpend: float64(s.periodNano.Load()) / 1e9,
	}
}

// roll starts a new budget period when the current one is over.
func (s *state) roll(now time.Time) {
	p := s.t.Load().BudgetPeriod
	if p <= 0 {
		return
	}
	start := s.periodStart.Load()
	if now.UnixNano()-start < int64(p) {
		return
	}
	s.rollMu.Lock()
	defer s.rollMu.Unlock()
	start = s.periodStart.Load()
	if elapsed := now.UnixNano() - start; elapsed >= int64(p) {
		s.periodStart.Store(start + elapsed/int64(p)*int64(p))
		s.periodNano.Store(0)
	}
}

// periodEnd is when the current budget period ends (zero: never).
func (s *state) periodEnd() time.Time {
	p := s.t.Load().BudgetPeriod
	if p <= 0 {
		return time.Time{}
	}
	return time.Unix(0, s.periodStart.Load()+int64(p))
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// clone copies the snapshot's maps for a write.
func (sn *snapshot) clone() *snapshot {
	out := &snapshot{tenants: make(map[string]*state, len(sn.tenants)), keys: make(map[string]*keyState, len(sn.keys))}
	for k, v := range sn.tenants {
		out.tenants[k] = v
	}
	for k, v := range sn.keys {
		out.keys[k] = v
	}
	return out
}

// Validate checks a tenant's settings and names every problem.
func (t *Tenant) Validate() error {
	var errs []error
	if !validName.MatchString(t.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be lower-case letters, digits and dashes, at most 63", t.Name))
	}
	for _, m := range t.Models {
		if !validName.MatchString(m) {
			errs = append(errs, fmt.Errorf("models: %q is not a model name", m))
		}
	}
	if t.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency: %d must not be negative", t.Concurrency))
	}
	if t.Budget < 0 {
		errs = append(errs, fmt.Errorf("budget: %v must not be negative", t.Budget))
	}
	if t.BudgetPeriod < 0 {
		errs = append(errs, fmt.Errorf("budget_period: %v must not be negative", t.BudgetPeriod))
	}
	if t.Rate.N < 0 || (t.Rate.N > 0 && t.Rate.Per <= 0) {
		errs = append(errs, fmt.Errorf("rate: %v is not a rate", t.Rate))
	}
	if len(errs) > 0 {
		pe := problem.Wrap(errors.Join(errs...), http.StatusBadRequest, "invalid_tenant")
		pe.Field, _, _ = strings.Cut(errs[0].Error(), ":")
		return pe
	}
	return nil
}

// Create adds a tenant.
func (r *Registry) Create(t Tenant) (*Status, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sn := r.snap.Load()
	if _, ok := sn.tenants[t.Name]; ok {
		return nil, fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
	}
	t.CreatedAt = r.Now().UTC()
	slices.Sort(t.Models)
	if r.cat != nil {
		if _, err := r.change(t.Name, func(cur *Record) (*Record, error) {
			if cur != nil {
				return nil, fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
			}
			return &Record{Tenant: t}, nil
		}); err != nil {
			return nil, err
		}
		sn := r.snap.Load()
		return r.status(sn, sn.tenants[t.Name]), nil
	}
	if err := r.st.PutJSON(bucketTenants, t.Name, &t); err != nil {
		return nil, err
	}
	next := sn.clone()
	s := newState(&t, r.replicas.Load())
	next.tenants[t.Name] = s
	r.snap.Store(next)
	return r.status(next, s), nil
}

// Update replaces a tenant's settings (its usage, keys and in-flight count
// stay). set changes a copy of the current settings.
func (r *Registry) Update(name string, set func(*Tenant)) (*Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cat != nil {
		return r.sharedUpdate(name, set)
	}
	sn := r.snap.Load()
	s, ok := sn.tenants[name]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	}
	t := *s.t.Load()
	t.Models = slices.Clone(t.Models)
	set(&t)
	t.Name, t.CreatedAt = name, s.t.Load().CreatedAt
	if err := t.Validate(); err != nil {
		return nil, err
	}
	slices.Sort(t.Models)
	if err := r.st.PutJSON(bucketTenants, name, &t); err != nil {
		return nil, err
	}
	s.setRate(t.Rate, r.replicas.Load(), r.Now())
	s.t.Store(&t)
	return r.status(sn, s), nil
}

// Delete removes a tenant and every key of it.
func (r *Registry) Delete(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cat != nil {
		_, err := r.change(name, func(cur *Record) (*Record, error) {
			if cur == nil {
				return nil, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
			}
			return nil, nil
		})
		return err
	}
	sn := r.snap.Load()
	if _, ok := sn.tenants[name]; !ok {
		return fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	}
	return r.removeLocked(sn, name)
}

// removeLocked deletes tenant name, its keys and its usage from the store,
// then publishes a snapshot without them. r.mu is held.
func (r *Registry) removeLocked(sn *snapshot, name string) error {
	next := sn.clone()
	for id, k := range sn.keys {
		if k.k.Tenant == name {
			if err := r.st.DeleteJSON(bucketKeys, id); err != nil {
				return err
			}
			delete(next.keys, id)
		}
	}
	if err := r.st.DeleteJSON(bucketTenants, name); err != nil {
		return err
	}
	if err := r.st.DeleteJSON(bucketUsage, name); err != nil {
		return err
	}
	delete(next.tenants, name)
	r.snap.Store(next)
	return nil
}

// Get returns one tenant's status.
func (r *Registry) Get(name string) (*Status, error) {
	sn := r.snap.Load()
	s, ok := sn.tenants[name]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	}
	return r.status(sn, s), nil
}

// List returns every tenant's status, by name.
func (r *Registry) List() []*Status {
	sn := r.snap.Load()
	out := make([]*Status, 0, len(sn.tenants))
	for _, s := range sn.tenants {
		out = append(out, r.status(sn, s))
	}
	slices.SortFunc(out, func(a, b *Status) int { return compare(a.Name, b.Name) })
	return out
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (r *Registry) status(sn *snapshot, s *state) *Status {
	t := s.t.Load()
	st := &Status{Tenant: *t, Usage: s.usage(r.Now()), InFlight: s.flight.Load()}
	for _, k := range sn.keys {
		if k.t == s {
			st.Keys++
		}
	}
	return st
}

// CreateKey makes a key for tenant, valid for ttl (0: no expiry). The key
// text is returned once and never stored.
func (r *Registry) CreateKey(tenant string, ttl time.Duration) (KeyInfo, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sn := r.snap.Load()
	s, ok := sn.tenants[tenant]
	if !ok {
		return KeyInfo{}, "", fmt.Errorf("tenant %q: %w", tenant, ErrNotFound)
	}
	if ttl < 0 {
		return KeyInfo{}, "", problem.New(http.StatusBadRequest, "invalid_key", "expires: must not be negative").WithField("expires")
	}
	id, secret, text := newKey()
	h := sha256.Sum256(secret)
	now := r.Now().UTC()
	k := Key{ID: id, Tenant: tenant, CreatedAt: now, Hash: h[:]}
	if ttl > 0 {
		k.Expires = now.Add(ttl)
	}
	if r.cat != nil {
		if _, err := r.change(tenant, func(cur *Record) (*Record, error) {
			if cur == nil || !cur.Tenant.CreatedAt.Equal(s.t.Load().CreatedAt) {
				return nil, fmt.Errorf("tenant %q: %w", tenant, ErrNotFound)
			}
			cur.Keys = append(cur.Keys, k)
			return cur, nil
		}); err != nil {
			return KeyInfo{}, "", err
		}
		return info(r.snap.Load().keys[id]), text, nil
	}
	if err := r.st.PutJSON(bucketKeys, id, &k); err != nil {
		return KeyInfo{}, "", err
	}
	next := sn.clone()
	next.keys[id] = &keyState{k: k, t: s}
	r.snap.Store(next)
	return info(next.keys[id]), text, nil
}

// RevokeKey deletes a key; the next request that carries it is refused.
func (r *Registry) RevokeKey(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sn := r.snap.Load()
	ks, ok := sn.keys[id]
	if !ok {
		return fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if r.cat != nil {
		_, err := r.change(ks.k.Tenant, func(cur *Record) (*Record, error) {
			i := -1
			if cur != nil {
				i = slices.IndexFunc(cur.Keys, func(k Key) bool { return k.ID == id })
			}
			if i < 0 {
				return nil, fmt.Errorf("key %q: %w", id, ErrNotFound)
			}
			cur.Keys = slices.Delete(cur.Keys, i, i+1)
			return cur, nil
		})
		return err
	}
	if err := r.st.DeleteJSON(bucketKeys, id); err != nil {
		return err
	}
	next := sn.clone()
	delete(next.keys, id)
	r.snap.Store(next)
	return nil
}

// Keys lists keys (of one tenant, when tenant is not ""), by tenant and
// creation.
func (r *Registry) Keys(tenant string) []KeyInfo {
	var out []KeyInfo
	for _, k := range r.snap.Load().keys {
		if tenant == "" || k.k.Tenant == tenant {
			out = append(out, info(k))
		}
	}
	slices.SortFunc(out, func(a, b KeyInfo) int {
		if c := compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return a.CreatedAt.Compare(b.CreatedAt)
	})
	return out
}

func info(k *keyState) KeyInfo {
	ki := KeyInfo{ID: k.k.ID, Tenant: k.k.Tenant, CreatedAt: k.k.CreatedAt, Expires: k.k.Expires}
	if n := k.lastUsed.Load(); n > 0 {
		ki.LastUsed = time.Unix(0, n).UTC()
	}
	return ki
}

// Persist writes usage and keys' last use to the store; Run calls it
// periodically and Close once more.
func (r *Registry) Persist() error {
	r.mu.Lock() // a key revoked meanwhile must not be written back
	defer r.mu.Unlock()
	sn := r.snap.Load()
	now := r.Now()
	var errs []error
	for name, s := range sn.tenants {
		u := s.usage(now)
		errs = append(errs, r.st.PutJSON(bucketUsage, name, &u))
	}
	for id, k := range sn.keys {
		n := k.lastUsed.Load()
		if n == 0 || n == unixNano(k.k.LastUsed) {
			continue
		}
		kk := k.k
		kk.LastUsed = time.Unix(0, n).UTC()
		errs = append(errs, r.st.PutJSON(bucketKeys, id, &kk))
	}
	return errors.Join(errs...)
}

// Run persists usage every interval until ctx is done, then once more.
func (r *Registry) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Persist(); err != nil {
				r.log.Error("saving tenant usage", "err", err)
			}
			return
		case <-t.C:
			if err := r.Persist(); err != nil {
				r.log.Error("saving tenant usage", "err", err)
			}
		}
	}
}
