package tenant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"tandem/internal/problem"
)

// Catalog keeps tenant records on a platform that several tandem processes
// share (the kubernetes backend: one Secret). A record is a tenant's
// settings and its keys' hashes, never a key. It is implemented by the
// platform's backend; the registry declares it.
type Catalog interface {
	// TenantRecords returns every tenant's record, by name; exists is
	// false when the platform holds no catalog yet.
	TenantRecords(ctx context.Context) (recs map[string][]byte, exists bool, err error)
	// ChangeTenantRecord applies change to one tenant's record atomically
	// with respect to the other processes' changes: change gets the
	// current record (nil: none) and returns the next one (nil: delete)
	// or an error, which is returned as it is, with nothing written.
	ChangeTenantRecord(ctx context.Context, name string, change func(cur []byte) ([]byte, error)) error
}

// Record is one tenant as the catalog holds it.
type Record struct {
	Tenant Tenant `json:"tenant"`
	// Keys are the tenant's keys, their secrets' SHA-256 only; a key's
	// last use is kept by each process, not shared.
	Keys []Key `json:"keys,omitempty"`
}

// catalogTimeout bounds one platform call of a write.
const catalogTimeout = 10 * time.Second

// ErrCatalog wraps a failure to reach the shared catalog: the write was
// not made anywhere (503).
var ErrCatalog = errors.New("the shared tenant catalog is unavailable")

func init() {
	problem.Register(ErrCatalog, http.StatusServiceUnavailable, "tenant_catalog_unavailable", 5*time.Second)
}

// Share makes cat the registry's source of truth: from now on every write
// goes to the catalog first (and fails, changing nothing, when it cannot
// be made there), then here; SyncCatalog brings the other processes'
// writes in. Call it before serving.
func (r *Registry) Share(cat Catalog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cat = cat
}

// SyncCatalog follows the shared catalog every interval until ctx is
// done: tenants and keys created, changed, revoked or deleted through
// another tandem process are applied here. The first round seeds a catalog
// that does not exist yet with this process's tenants.
func (r *Registry) SyncCatalog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	seeded, failing := false, false
	for {
		err := r.syncOnce(ctx, !seeded)
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil && !failing:
			failing = true
			r.log.Warn("the shared tenant catalog cannot be read; tenant and key changes made through other tandem replicas do not reach this one until it can",
				"err", err)
		case err != nil:
			r.log.Debug("reading the shared tenant catalog", "err", err)
		case failing:
			failing = false
			r.log.Info("the shared tenant catalog can be read again")
		}
		if err == nil {
			seeded = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncOnce reads the catalog and merges it; seed, when the catalog does
// not exist yet, writes this process's tenants there first.
func (r *Registry) syncOnce(ctx context.Context, seed bool) error {
	lctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	before := r.writes.Load()
	recs, exists, err := r.cat.TenantRecords(lctx)
	if err != nil {
		return err
	}
	if !exists && seed {
		for _, name := range r.names() {
			rec, ok := r.record(name)
			if !ok {
				continue
			}
			raw, _ := json.Marshal(rec)
			err := r.cat.ChangeTenantRecord(lctx, name, func(cur []byte) ([]byte, error) {
				if cur != nil {
					return cur, nil
				}
				return raw, nil
			})
			if err != nil {
				return err
			}
		}
		if n := len(r.names()); n > 0 {
			r.log.Info("shared tenant catalog created with this process's tenants", "tenants", n)
			return nil // the next round reads it back
		}
	}
	r.merge(recs, before)
	return nil
}

func (r *Registry) names() []string {
	var out []string
	for name := range r.snap.Load().tenants {
		out = append(out, name)
	}
	return out
}

// record returns a tenant as the catalog holds it.
func (r *Registry) record(name string) (*Record, bool) {
	sn := r.snap.Load()
	s, ok := sn.tenants[name]
	if !ok {
		return nil, false
	}
	rec := &Record{Tenant: *s.t.Load()}
	for _, k := range sn.keys {
		if k.t == s {
			kk := k.k
			kk.LastUsed = time.Time{}
			rec.Keys = append(rec.Keys, kk)
		}
	}
	slices.SortFunc(rec.Keys, func(a, b Key) int { return compare(a.ID, b.ID) })
	return rec, true
}

// decodeRecord reads and checks a record of the tenant name.
func decodeRecord(name string, raw []byte) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	if rec.Tenant.Name != name {
		return nil, fmt.Errorf("the record of %q names tenant %q", name, rec.Tenant.Name)
	}
	if err := rec.Tenant.Validate(); err != nil {
		return nil, err
	}
	for _, k := range rec.Keys {
		if k.Tenant != name || k.ID == "" || len(k.Hash) != 32 {
			return nil, fmt.Errorf("tenant %q: key %q is malformed", name, k.ID)
		}
	}
	// As record lists them, so that an unchanged tenant compares equal.
	slices.SortFunc(rec.Keys, func(a, b Key) int { return compare(a.ID, b.ID) })
	return &rec, nil
}

// merge makes the local tenants and keys those of recs, a listing of the
// catalog begun when the write counter read before. A local write since
// then postpones the merge to the next listing (which sees that write).
func (r *Registry) merge(recs map[string][]byte, before uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.writes.Load() != before {
		return
	}
	for name, raw := range recs {
		rec, err := decodeRecord(name, raw)
		if err != nil {
			r.log.Warn("ignoring a malformed record in the shared tenant catalog", "tenant", name, "err", err)
			continue
		}
		if cur, ok := r.record(name); ok && sameRecord(cur, rec) {
			continue
		}
		if err := r.applyLocked(name, rec); err != nil {
			r.log.Warn("applying a tenant from the shared catalog", "tenant", name, "err", err)
			continue
		}
		r.log.Info("tenant changed through another tandem replica", "tenant", name, "keys", len(rec.Keys))
	}
	for _, name := range r.names() {
		if _, ok := recs[name]; ok {
			continue
		}
		if err := r.applyLocked(name, nil); err != nil {
			r.log.Warn("deleting a tenant deleted through another tandem replica", "tenant", name, "err", err)
			continue
		}
		r.log.Info("tenant deleted through another tandem replica", "tenant", name)
	}
}

func sameRecord(a, b *Record) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// applyLocked makes tenant name what rec says (nil: deleted), with its
// keys, here: in the store, then in a new snapshot. Usage, in-flight
// counts, buckets and keys' last use survive. r.mu is held.
func (r *Registry) applyLocked(name string, rec *Record) error {
	sn := r.snap.Load()
	next := sn.clone()
	s := sn.tenants[name]
	if rec == nil {
		if s == nil {
			return nil
		}
		return r.removeLocked(sn, name)
	}
	t := rec.Tenant
	if err := r.st.PutJSON(bucketTenants, name, &t); err != nil {
		return err
	}
	switch {
	case s == nil:
		s = newState(&t, r.replicas.Load())
		next.tenants[name] = s
	case s.t.Load().CreatedAt.Equal(t.CreatedAt):
		s.setRate(t.Rate, r.replicas.Load(), r.Now())
		s.t.Store(&t)
	default: // deleted and created again elsewhere: a new tenant
		for id, k := range sn.keys {
			if k.t == s {
				if err := r.st.DeleteJSON(bucketKeys, id); err != nil {
					return err
				}
				delete(next.keys, id)
			}
		}
		if err := r.st.DeleteJSON(bucketUsage, name); err != nil {
			return err
		}
		s = newState(&t, r.replicas.Load())
		next.tenants[name] = s
	}
	want := make(map[string]bool, len(rec.Keys))
	for _, k := range rec.Keys {
		want[k.ID] = true
		if cur, ok := next.keys[k.ID]; ok && cur.t == s {
			continue
		}
		if err := r.st.PutJSON(bucketKeys, k.ID, &k); err != nil {
			return err
		}
		next.keys[k.ID] = &keyState{k: k, t: s}
	}
	for id, k := range next.keys {
		if k.t == s && !want[id] {
			if err := r.st.DeleteJSON(bucketKeys, id); err != nil {
				return err
			}
			delete(next.keys, id)
		}
	}
	r.snap.Store(next)
	return nil
}

// change writes tenant name's record through the catalog: edit gets the
// catalog's current record (nil: none) and returns the next (nil:
// delete); what was written is then applied here. r.mu is held.
func (r *Registry) change(name string, edit func(cur *Record) (*Record, error)) (*Record, error) {
	r.writes.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	var next *Record
	err := r.cat.ChangeTenantRecord(ctx, name, func(raw []byte) ([]byte, error) {
		var cur *Record
		if raw != nil {
			var err error
			if cur, err = decodeRecord(name, raw); err != nil {
				return nil, fmt.Errorf("tenant %q in the shared catalog: %w", name, err)
			}
		}
		n, err := edit(cur)
		if err != nil {
			return nil, err
		}
		next = n
		if n == nil {
			return nil, nil
		}
		return json.Marshal(n)
	})
	if err != nil {
		var pe *problem.Error
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.As(err, &pe) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrCatalog, err)
	}
	if err := r.applyLocked(name, next); err != nil {
		return nil, err
	}
	return next, nil
}

// sharedUpdate is Update through the catalog: set changes a copy of the
// catalog's settings, the latest any process wrote. r.mu is held.
func (r *Registry) sharedUpdate(name string, set func(*Tenant)) (*Status, error) {
	_, err := r.change(name, func(cur *Record) (*Record, error) {
		if cur == nil {
			return nil, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
		}
		t := cur.Tenant
		t.Models = slices.Clone(t.Models)
		set(&t)
		t.Name, t.CreatedAt = name, cur.Tenant.CreatedAt
		if err := t.Validate(); err != nil {
			return nil, err
		}
		slices.Sort(t.Models)
		cur.Tenant = t
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	sn := r.snap.Load()
	return r.status(sn, sn.tenants[name]), nil
}
