package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
	"tandem/internal/pool"
	"tandem/internal/reconciler"
)

// actuator applies the reconciler's backend effects to one kind of
// backend: instances (process, Docker) or replicas (Kubernetes). It is
// the one place that tells the two apart; the deployment's loop applies
// every other effect alike.
type actuator interface {
	kind() reconciler.Kind
	name() string
	// backend is the backend itself, for optional interfaces (logs).
	backend() any
	// start starts an instance and reports evStarted to the loop.
	start(d *Deployment, e reconciler.StartInstance, ctx context.Context)
	// watch follows a started instance: evExited, then evReady.
	watch(d *Deployment, id, addr string) context.CancelFunc
	// retire drains pi (when set) then stops the instance, in the
	// background.
	retire(d *Deployment, id string, pi *pool.Instance)
	// kill stops an instance at once, in the background.
	kill(d *Deployment, id string)
	// endpoints follows a replica platform's ready set (nil otherwise).
	endpoints(ctx context.Context, d *Deployment) (<-chan []backend.Instance, error)
	// apply creates or updates the platform's objects (replicas).
	apply(ctx context.Context, d *Deployment, m *manifest.Manifest) reconciler.Applied
	// scale sets the platform's replica count (replicas).
	scale(ctx context.Context, d *Deployment, n int) reconciler.Scaled
	// leader reports whether this process may change sizes.
	leader() bool
	// remove deletes what the platform keeps for a deleted deployment.
	remove(ctx context.Context, name string) error
	// forget drops what the actuator kept of an instance that is gone.
	forget(id string)
}

func newActuator(be backend.Backend, rb backend.ReplicaBackend, backends map[string]backend.Backend) actuator {
	if rb != nil {
		return replicaActuator{rb}
	}
	return instanceActuator{be: be, backends: backends, on: map[string]backend.Backend{}}
}

// instanceActuator drives a backend.Backend, one instance at a time. A
// hybrid deployment's burst instances may run on another backend
// (manifest.Burst): on remembers which, for the instances not on be. Its
// methods run on the deployment's loop.
type instanceActuator struct {
	be       backend.Backend
	backends map[string]backend.Backend // the server's, by name
	on       map[string]backend.Backend
}

// of is the backend instance id runs on.
func (a instanceActuator) of(id string) backend.Backend {
	if be := a.on[id]; be != nil {
		return be
	}
	return a.be
}

func (a instanceActuator) forget(id string) { delete(a.on, id) }

func (a instanceActuator) kind() reconciler.Kind { return reconciler.Instances }
func (a instanceActuator) name() string          { return a.be.Name() }
func (a instanceActuator) backend() any          { return a.be }
func (a instanceActuator) leader() bool          { return true }

func (a instanceActuator) start(d *Deployment, e reconciler.StartInstance, ctx context.Context) {
	be, m := a.be, e.Manifest
	if m.Mode == manifest.Hybrid && !e.Floor && m.Burst != nil {
		if be = a.backends[m.Burst.Backend]; be == nil {
			go d.send(evStarted{id: e.ID, err: fmt.Errorf("burst.backend %q is not enabled on this server", m.Burst.Backend)})
			return
		}
		m = m.BurstManifest()
		a.on[e.ID] = be
	}
	spec := backend.Spec{ID: e.ID, Deployment: d.Name, Revision: e.Rev, Manifest: m}
	if err := d.c.prepare(be.Name(), &spec); err != nil {
		go d.send(evStarted{id: e.ID, err: err})
		return
	}
	go func() {
		bi, err := be.Start(ctx, spec)
		d.send(evStarted{id: e.ID, bi: bi, err: err})
	}()
}

func (a instanceActuator) watch(d *Deployment, id, addr string) context.CancelFunc {
	be := a.of(id)
	exitCh, err := be.Wait(id)
	if err != nil {
		go d.send(evExited{id: id, exit: backend.Exit{Code: -1, Err: err, At: time.Now()}})
		return func() {}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.man.Timeouts.Startup.D())
	go func() {
		e, ok := <-exitCh
		if !ok {
			e = backend.Exit{Code: -1, Err: fmt.Errorf("backend stopped tracking it"), At: time.Now()}
		}
		cancel()
		d.send(evExited{id: id, exit: e})
	}()
	m := d.man
	if be != a.be {
		m = m.BurstManifest()
	}
	health := d.c.healthPath(be.Name(), m)
	go func() {
		err := probe(ctx, addr, health)
		d.send(evReady{id: id, err: err})
	}()
	return cancel
}

func (a instanceActuator) retire(d *Deployment, id string, pi *pool.Instance) {
	be := a.of(id)
	grace := d.man.Timeouts.Grace.D()
	drainFor := d.man.Timeouts.Request.D()
	go func() {
		if pi != nil {
			ctx, cancel := context.WithTimeout(context.Background(), drainFor)
			pi.Drain(ctx)
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace+10*time.Second)
		defer cancel()
		if err := be.Stop(ctx, id, grace); err != nil {
			d.log.Warn("stop instance", "instance", id, "err", err)
		}
	}()
}

func (a instanceActuator) kill(d *Deployment, id string) {
	go a.of(id).Stop(context.Background(), id, 0)
}

func (a instanceActuator) endpoints(context.Context, *Deployment) (<-chan []backend.Instance, error) {
	return nil, nil
}

func (a instanceActuator) apply(context.Context, *Deployment, *manifest.Manifest) reconciler.Applied {
	return reconciler.Applied{Replicas: -1, Err: fmt.Errorf("backend %s runs no replicas", a.name())}
}

func (a instanceActuator) scale(_ context.Context, _ *Deployment, n int) reconciler.Scaled {
	return reconciler.Scaled{N: n, Err: fmt.Errorf("backend %s runs no replicas", a.name())}
}

func (a instanceActuator) remove(context.Context, string) error { return nil }

// replicaActuator drives a backend.ReplicaBackend: the platform runs the
// replicas, tandem sets their count (when this process leads) and mirrors
// the platform's ready endpoints, which arrive by watch, into the pool.
type replicaActuator struct{ rb backend.ReplicaBackend }

func (a replicaActuator) kind() reconciler.Kind { return reconciler.Replicas }
func (a replicaActuator) name() string          { return a.rb.Name() }
func (a replicaActuator) backend() any          { return a.rb }

func (a replicaActuator) leader() bool {
	l, ok := a.rb.(backend.Leader)
	return !ok || l.IsLeader()
}

// The platform starts and stops replicas itself: the core never asks a
// replica actuator for these.
func (replicaActuator) start(d *Deployment, e reconciler.StartInstance, _ context.Context) {
	go d.send(evStarted{id: e.ID, err: fmt.Errorf("the platform starts replicas itself")})
}
func (replicaActuator) watch(*Deployment, string, string) context.CancelFunc { return func() {} }
func (replicaActuator) retire(*Deployment, string, *pool.Instance)           {}
func (replicaActuator) kill(*Deployment, string)                             {}
func (replicaActuator) forget(string)                                        {}

func (a replicaActuator) endpoints(ctx context.Context, d *Deployment) (<-chan []backend.Instance, error) {
	return a.rb.Watch(ctx, d.unit)
}

// AnnotationRecord carries a deployment's record (manifest and metadata)
// on the platform's objects, for other tandem processes to follow.
const AnnotationRecord = "tandem.record"

func (a replicaActuator) apply(ctx context.Context, d *Deployment, m *manifest.Manifest) reconciler.Applied {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d.follow.Load() {
		// Another tandem applied these objects: adopt, never rewrite.
		n, err := a.rb.Replicas(actx, d.unit)
		if err == nil && n < 0 {
			err = fmt.Errorf("the platform has no objects for %s yet", d.unit)
		}
		if err != nil {
			return reconciler.Applied{Replicas: -1, Err: err}
		}
		d.seenAt.CompareAndSwap(0, time.Now().UnixNano())
		return reconciler.Applied{Replicas: n}
	}
	spec := backend.Spec{Deployment: d.unit, Revision: m.Hash(), Manifest: m}
	// Only the model's main unit is in the shared catalog: other tandem
	// processes follow the model, not its canaries (traffic.go).
	if _, ok := a.rb.(backend.Catalog); ok && d.isMain.Load() {
		if raw, err := json.Marshal(d.rec.Load()); err == nil {
			spec.Annotations = map[string]string{AnnotationRecord: string(raw)}
		}
	}
	if err := d.c.prepare(a.name(), &spec); err != nil {
		return reconciler.Applied{Replicas: -1, Err: err}
	}
	if err := a.rb.Apply(actx, spec); err != nil {
		return reconciler.Applied{Replicas: -1, Err: err}
	}
	d.seenAt.CompareAndSwap(0, time.Now().UnixNano())
	n, err := a.rb.Replicas(actx, d.unit)
	if err != nil {
		n = -1
	}
	return reconciler.Applied{Replicas: n}
}

// announce writes a unit's record on its objects again, now that it is
// its model's main unit (a promote), so that other tandem processes follow
// it. It runs in the background.
func (a replicaActuator) announce(d *Deployment) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if res := a.apply(ctx, d, d.Manifest()); res.Err != nil {
			d.log.Warn("promoted unit not announced on the shared platform", "err", res.Err)
		}
	}()
}

func (a replicaActuator) scale(ctx context.Context, d *Deployment, n int) reconciler.Scaled {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return reconciler.Scaled{N: n, Err: a.rb.Scale(ctx, d.unit, n)}
}

func (a replicaActuator) remove(ctx context.Context, name string) error {
	return a.rb.Delete(ctx, name)
}
