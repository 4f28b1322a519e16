package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"tandem/internal/backend"
	"tandem/internal/pool"
	"tandem/internal/store"
)

// Replica mode: for a backend.ReplicaBackend the platform runs the
// replicas. The loop applies the platform objects, sets the replica count
// from the autoscaler's decision (when this process leads), and mirrors the
// platform's ready endpoints, which arrive by watch, into the pool.

func (d *Deployment) runReplicas() {
	defer close(d.ended)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.scaled = -1
	d.applyReplicas(ctx)
	eps, err := d.rb.Watch(ctx, d.Name)
	if err != nil {
		d.fail(time.Now(), fmt.Errorf("watching endpoints: %w", err))
	}
	d.evaluate(time.Now())
	d.publishStatus()
	tick := time.NewTicker(d.c.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			if !d.applied {
				d.applyReplicas(ctx)
			}
			d.evaluate(now)
		case <-d.poke:
			d.evaluate(time.Now())
		case set, ok := <-eps:
			if !ok {
				eps = nil
				d.fail(time.Now(), fmt.Errorf("endpoint watch ended"))
				continue
			}
			d.syncEndpoints(set)
			d.evaluate(time.Now())
		case r := <-d.updates:
			d.setManifest(r.Manifest)
			d.Pool.SetConfig(d.poolConfig(r.Manifest))
			d.applyReplicas(ctx)
			d.evaluate(time.Now())
		case done := <-d.stop:
			d.stopping = true
			d.Pool.Close()
			for id, in := range d.instances {
				d.Pool.Remove(id)
				d.c.cfg.Meter.InstanceGone(d.Name, id, time.Now())
				in.pi.MarkExited(backend.Exit{Code: -1, Err: fmt.Errorf("deployment stopped"), At: time.Now()})
			}
			close(done)
			return
		}
		d.publishStatus()
	}
}

// AnnotationRecord carries a deployment's record (manifest and metadata)
// on the platform's objects, for other tandem processes to follow.
const AnnotationRecord = "tandem.record"

func (d *Deployment) applyReplicas(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d.follow.Load() {
		// Another tandem applied these objects: adopt, never rewrite.
		n, err := d.rb.Replicas(actx, d.Name)
		if err != nil || n < 0 {
			d.applied = false
			return
		}
		d.applied, d.scaled = true, n
		d.seenAt.CompareAndSwap(0, time.Now().UnixNano())
		return
	}
	spec := backend.Spec{Deployment: d.Name, Revision: d.rev, Manifest: d.man}
	if _, ok := d.rb.(backend.Catalog); ok {
		if raw, err := json.Marshal(d.rec.Load()); err == nil {
			spec.Annotations = map[string]string{AnnotationRecord: string(raw)}
		}
	}
	if err := d.c.prepare(d.rb.Name(), &spec); err != nil {
		d.applied = false
		d.fail(time.Now(), err)
		return
	}
	if err := d.rb.Apply(actx, spec); err != nil {
		d.applied = false
		d.fail(time.Now(), fmt.Errorf("applying %s objects: %w", d.rb.Name(), err))
		return
	}
	d.applied = true
	d.seenAt.CompareAndSwap(0, time.Now().UnixNano())
	if n, err := d.rb.Replicas(actx, d.Name); err == nil {
		d.scaled = n // adopt what the platform runs: never scale twice
	}
}

// syncEndpoints makes the pool's ready set equal the platform's.
func (d *Deployment) syncEndpoints(set []backend.Instance) {
	now := time.Now()
	seen := make(map[string]bool, len(set))
	for _, e := range set {
		seen[e.ID] = true
		in, ok := d.instances[e.ID]
		if ok && in.addr == e.Addr {
			continue
		}
		if ok {
			d.Pool.Remove(e.ID)
		}
		in = &inst{id: e.ID, rev: d.rev, state: stateReady, addr: e.Addr, started: e.StartedAt, readyAt: now}
		in.pi = pool.NewInstance(e.ID, e.Addr)
		d.instances[e.ID] = in
		d.c.cfg.Meter.InstanceReady(d.Name, e.ID, in.pi, now)
		d.Pool.Add(in.pi)
	}
	for id, in := range d.instances {
		if !seen[id] {
			d.forget(id, now)
			d.Pool.Remove(id)
			in.pi.MarkExited(backend.Exit{Code: -1, Err: fmt.Errorf("endpoint %s left the ready set", in.addr), At: now})
		}
	}
}

// reconcileReplicas sets the platform's replica count to the decision.
func (d *Deployment) reconcileReplicas(now time.Time) {
	if d.stopping || !d.applied || d.desired == d.scaled {
		return
	}
	if l, ok := d.rb.(backend.Leader); ok && !l.IsLeader() {
		// Only the leader decides; any process may wake a deployment from
		// zero for a request waiting here.
		if !(d.scaled <= 0 && d.desired > 0 && d.Pool.Queued() > 0) {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.rb.Scale(ctx, d.Name, d.desired); err != nil {
		d.fail(now, fmt.Errorf("scaling to %d: %w", d.desired, err))
		return
	}
	d.log.Debug("scaled", "from", d.scaled, "to", d.desired)
	d.scaled = d.desired
}

// fail records a platform error; waiting requests get it when nothing is ready.
func (d *Deployment) fail(now time.Time, err error) {
	d.log.Warn("platform error", "err", err)
	d.noteError(now, err, "platform_error", len(d.instances) == 0)
}

// syncCatalog follows the deployments other tandem processes keep on a
// shared platform: new ones are adopted, newer revisions followed, and ones
// deleted there forgotten here.
func (c *Controller) syncCatalog(rb backend.ReplicaBackend, cat backend.Catalog) {
	t := time.NewTicker(c.cfg.CatalogInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		listed := time.Now()
		recs, err := cat.Annotation(ctx, AnnotationRecord)
		cancel()
		if err != nil {
			c.log.Debug("reading the shared catalog", "backend", rb.Name(), "err", err)
		} else {
			c.mergeCatalog(rb, recs, listed)
		}
		select {
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

// mergeCatalog applies a listing of the platform taken at listed.
func (c *Controller) mergeCatalog(rb backend.ReplicaBackend, recs map[string]string, listed time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	for name, raw := range recs {
		var rec store.Record
		if raw == "" || json.Unmarshal([]byte(raw), &rec) != nil || rec.Manifest == nil || rec.Manifest.Name != name {
			continue
		}
		if rec.Manifest.Validate() != nil {
			continue
		}
		if at, ok := c.deletedAt[name]; ok && !at.Before(listed) {
			continue // deleted here after the listing began
		}
		d, ok := c.deps[name]
		switch {
		case !ok:
			if err := c.cfg.Store.Put(&rec); err != nil {
				c.log.Warn("saving a followed deployment", "model", name, "err", err)
				continue
			}
			d = c.newDeployment(&rec, nil, rb)
			d.follow.Store(true)
			c.deps[name] = d
			c.publish()
			c.log.Info("following a deployment from the shared platform", "model", name, "revision", rec.Manifest.Hash())
			go d.runReplicas()
		case d.rb == rb && d.Manifest().Hash() != rec.Manifest.Hash() && rec.UpdatedAt.After(d.record().UpdatedAt):
			if err := c.cfg.Store.Put(&rec); err != nil {
				continue
			}
			d.follow.Store(true)
			d.update(&rec)
			c.publish()
		}
	}
	for name, d := range c.deps {
		// Gone only if the platform had the objects before the listing
		// began: a deployment applied meanwhile is not in it yet.
		seen := d.seenAt.Load()
		if _, ok := recs[name]; ok || d.rb != rb || seen == 0 || seen >= listed.UnixNano() {
			continue
		}
		c.log.Info("deployment deleted on the shared platform", "model", name)
		c.cfg.Store.Delete(name)
		delete(c.deps, name)
		c.publish()
		d.Cache.Purge()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			d.shutdown(ctx)
			c.cfg.Metrics.Forget(name)
		}()
	}
}
