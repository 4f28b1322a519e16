package controller

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"tandem/internal/backend"
	"tandem/internal/pool"
	"tandem/internal/problem"
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
				in.pi.MarkExited(backend.Exit{Code: -1, Err: fmt.Errorf("deployment stopped"), At: time.Now()})
			}
			close(done)
			return
		}
		d.publishStatus()
	}
}

func (d *Deployment) applyReplicas(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	spec := backend.Spec{Deployment: d.Name, Revision: d.rev, Manifest: d.man}
	if d.c.cfg.PrepareSpec != nil {
		if err := d.c.cfg.PrepareSpec(d.rb.Name(), &spec); err != nil {
			d.applied = false
			d.fail(time.Now(), err)
			return
		}
	}
	if err := d.rb.Apply(actx, spec); err != nil {
		d.applied = false
		d.fail(time.Now(), fmt.Errorf("applying %s objects: %w", d.rb.Name(), err))
		return
	}
	d.applied = true
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
		d.Pool.Add(in.pi)
	}
	for id, in := range d.instances {
		if !seen[id] {
			delete(d.instances, id)
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
	d.lastErr = err.Error()
	d.lastErrAt = now
	d.log.Warn("platform error", "err", err)
	if len(d.instances) == 0 && d.Pool.Queued() > 0 {
		d.Pool.Fail(problem.New(http.StatusBadGateway, "platform_error", fmt.Sprintf("model %q: %v", d.Name, err)))
	}
}
