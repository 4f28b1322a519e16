package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"tandem/internal/backend"
	"tandem/internal/cache"
	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/pool"
	"tandem/internal/problem"
	"tandem/internal/reconciler"
	"tandem/internal/rollout"
	"tandem/internal/store"
)

// Deployment is one deployment at run time. Its exported fields and
// methods are safe for concurrent use; everything else belongs to its loop.
//
// The loop turns what happens (ticks, queued requests, instances starting,
// becoming ready and exiting, updates, the platform's endpoints) into
// reconciler events, steps the deployment's reconciler.Core, and applies
// the effects it returns: the backend-specific ones through the actuator,
// the rest (pool, cost meter, metrics, waiting requests) here, alike for
// every backend.
type Deployment struct {
	Name    string
	Pool    *pool.Pool
	Metrics *metrics.Model
	// Usage counts answered requests for the cost meter (atomics; nil
	// when metering is off).
	Usage *cost.RequestCounter
	// Cache is the gateway's response cache of this deployment, set from
	// the manifest on every update (off without a cache block).
	Cache *cache.Cache

	// Stats counts this revision's answered requests for rollout analysis
	// (atomics; the gateway feeds it).
	Stats *rollout.Stats

	// unit names this deployment's objects on a replica platform and
	// meter is its account in the cost meter: the model's name for the
	// unit the model was created with, the name with its revision for a
	// unit started for a canary, a tag or a shadow (traffic.go).
	unit, meter string

	c     *Controller
	act   actuator
	log   *slog.Logger
	rec   atomic.Pointer[store.Record]
	meta  atomic.Pointer[decodedMeta]
	revOf atomic.Pointer[revisionOf] // Revision's cache
	// Replica mode with a shared catalog: follow means the current record
	// came from the platform (another tandem applied it), so this process
	// must not apply objects; seenAt (unix ns, 0 = never) is when the
	// platform was first known to have the objects.
	follow atomic.Bool
	seenAt atomic.Int64
	// isMain is set while this unit is its model's main unit (the one in
	// c.deps): only that one carries the record in a shared catalog.
	isMain atomic.Bool

	poke    chan struct{}
	events  chan any
	updates chan *store.Record
	stop    chan chan struct{}
	ended   chan struct{} // closed when the loop has returned
	status  atomic.Pointer[Status]
	pw      prewarmState // prewarm.go

	// Loop-owned state.
	man  *manifest.Manifest
	core *reconciler.Core
	// What the loop keeps per instance besides the core's view: its pool
	// entry once ready, the cancel of its start or probe, and what the
	// backend reported.
	pis     map[string]*pool.Instance
	cancels map[string]context.CancelFunc
	started map[string]backend.Instance
	pending []reconciler.Effect // New's effects, applied when the loop starts
}

// Messages sent to the loop by the goroutines the actuator starts.
type (
	evStarted struct {
		id  string
		bi  backend.Instance
		err error
	}
	evReady struct {
		id  string
		err error
	}
	evExited struct {
		id   string
		exit backend.Exit
	}
)

func (c *Controller) newDeployment(r *store.Record, be backend.Backend, rb backend.ReplicaBackend, adopted []backend.Instance) *Deployment {
	d := c.newUnit(r, be, rb, adopted, r.Unit, r.Meter)
	d.isMain.Store(true)
	return d
}

// newUnit returns the deployment of one revision: unit and meter are its
// platform and meter keys ("" for the model's name).
func (c *Controller) newUnit(r *store.Record, be backend.Backend, rb backend.ReplicaBackend, adopted []backend.Instance, unit, meter string) *Deployment {
	if unit == "" {
		unit = r.Manifest.Name
	}
	if meter == "" {
		meter = r.Manifest.Name
	}
	d := &Deployment{
		Name:    r.Manifest.Name,
		Metrics: c.cfg.Metrics.ForModel(r.Manifest.Name),
		Usage:   c.cfg.Meter.Requests(meter),
		Stats:   rollout.NewStats(),
		unit:    unit,
		meter:   meter,
		c:       c,
		Cache:   cache.New(),
		act:     newActuator(be, rb, c.cfg.Backends),
		log:     c.log.With("model", r.Manifest.Name),
		poke:    make(chan struct{}, 1),
		events:  make(chan any, 64),
		updates: make(chan *store.Record, 4),
		stop:    make(chan chan struct{}),
		ended:   make(chan struct{}),
		man:     r.Manifest,
		pis:     map[string]*pool.Instance{},
		cancels: map[string]context.CancelFunc{},
		started: map[string]backend.Instance{},
	}
	d.rec.Store(r)
	d.Pool = pool.New(d.poolConfig(r.Manifest))
	d.configureCache(r.Manifest)
	d.loadHistory()
	now := time.Now()
	c.cfg.Meter.Deployment(d.metered(r.Manifest), now)
	for _, bi := range adopted {
		d.started[bi.ID] = bi
		c.cfg.Meter.InstanceStarting(d.meter, bi.ID, now)
		d.log.Info("adopted instance", "instance", bi.ID, "addr", bi.Addr)
	}
	d.core, d.pending = reconciler.New(reconciler.Config{
		Name: d.Name, Kind: d.act.kind(), Backend: d.act.name(), NewID: func() string { return newID(d.Name) },
	}, r.Manifest, adopted, now)
	d.publishStatus()
	return d
}

func (d *Deployment) poolConfig(m *manifest.Manifest) pool.Config {
	return pool.Config{
		Name:                 m.Name,
		MaxQueue:             m.Scaling.MaxQueue,
		ContainerConcurrency: m.Scaling.ContainerConcurrency,
		StartupTimeout:       m.Timeouts.Startup.D(),
		BusyTimeout:          m.Timeouts.Request.D(),
		FloorTarget:          floorTarget(m, d.act.kind()),
		OnDemand: func() {
			select {
			case d.poke <- struct{}{}:
			default:
			}
		},
	}
}

func (d *Deployment) backendName() string { return d.act.name() }

// metered returns m as the cost meter keys this deployment: under its
// meter name.
func (d *Deployment) metered(m *manifest.Manifest) *manifest.Manifest {
	if d.meter == m.Name {
		return m
	}
	c := *m
	c.Name = d.meter
	return &c
}

// Revision is the revision this deployment runs (its manifest's hash),
// computed once per record: the request path asks for it (batch keys,
// shadow labels).
func (d *Deployment) Revision() string {
	rec := d.rec.Load()
	if c := d.revOf.Load(); c != nil && c.rec == rec {
		return c.rev
	}
	rev := rec.Manifest.Hash()
	d.revOf.Store(&revisionOf{rec: rec, rev: rev})
	return rev
}

type revisionOf struct {
	rec *store.Record
	rev string
}

// Manifest returns the deployment's current manifest. Read only.
func (d *Deployment) Manifest() *manifest.Manifest { return d.rec.Load().Manifest }

// Metadata returns what the runtime reported about the model at deploy time.
func (d *Deployment) Metadata() json.RawMessage { return d.rec.Load().Metadata }

func (d *Deployment) record() *store.Record { return d.rec.Load() }

type decodedMeta struct {
	rec *store.Record
	v   any
}

// DecodedMetadata returns decode(Metadata()), computed once per revision
// and cached, so the request path does not decode JSON per request.
func (d *Deployment) DecodedMetadata(decode func(json.RawMessage) any) any {
	rec := d.rec.Load()
	if c := d.meta.Load(); c != nil && c.rec == rec {
		return c.v
	}
	v := decode(rec.Metadata)
	d.meta.Store(&decodedMeta{rec: rec, v: v})
	return v
}

func (d *Deployment) update(r *store.Record) {
	d.rec.Store(r)
	d.updates <- r
	d.configureCache(r.Manifest)
}

// shutdown stops the loop and every instance, blocking until done or ctx ends.
func (d *Deployment) shutdown(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case d.stop <- done:
	case <-d.ended:
		return nil // already stopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("model %q: instances still stopping: %w", d.Name, ctx.Err())
	}
}

// run is the deployment's loop.
func (d *Deployment) run() {
	defer close(d.ended)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.apply(ctx, time.Now(), d.pending)
	d.pending = nil
	eps, err := d.act.endpoints(ctx, d)
	if err != nil {
		d.step(ctx, time.Now(), reconciler.PlatformError{Err: fmt.Errorf("watching endpoints: %w", err)})
	}
	d.tick(ctx, time.Now())
	d.publishStatus()
	tick := time.NewTicker(d.c.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			d.tick(ctx, now)
		case <-d.poke:
			d.tick(ctx, time.Now())
		case ev := <-d.events:
			d.handle(ctx, ev)
		case set, ok := <-eps:
			now := time.Now()
			if !ok {
				eps = nil
				d.step(ctx, now, reconciler.PlatformError{Err: fmt.Errorf("endpoint watch ended")})
				continue
			}
			d.step(ctx, now, reconciler.Endpoints{Set: set})
			d.tick(ctx, now)
		case r := <-d.updates:
			d.log.Info("manifest updated", "revision", r.Manifest.Hash())
			d.man = r.Manifest
			d.Pool.SetConfig(d.poolConfig(r.Manifest))
			now := time.Now()
			d.step(ctx, now, reconciler.Update{Manifest: r.Manifest})
			d.tick(ctx, now)
		case done := <-d.stop:
			d.stopAll(ctx)
			close(done)
			return
		}
		d.publishStatus()
	}
}

// tick samples the pool and steps the core with it.
func (d *Deployment) tick(ctx context.Context, now time.Time) {
	avg, dt, lastActive := d.Pool.Sample(now)
	t := reconciler.Tick{Avg: avg, Dt: dt, LastActive: lastActive,
		Queued: d.Pool.Queued(), InFlight: d.Pool.InFlight(), Leader: d.act.leader()}
	t.Floor = d.prewarmFloor(now, avg > 0 || t.Queued > 0)
	if len(d.pis) > 0 {
		t.Busy = make(map[string]int, len(d.pis))
		for id, pi := range d.pis {
			t.Busy[id] = pi.InFlight()
		}
	}
	if p := d.c.cfg.Peers; p != nil && d.act.kind() == reconciler.Replicas {
		p.Observe(d.Name, avg, dt, t.Queued, now)
		if t.Leader {
			t.Remote = p.Remote(d.Name, now)
		}
	}
	before := d.core.Desired()
	d.step(ctx, now, t)
	if after := d.core.Desired(); after != before {
		d.log.Debug("scale", "from", before, "to", after, "reason", d.core.View().Decision.String())
	}
}

// handle turns a message from an instance's goroutines into an event.
func (d *Deployment) handle(ctx context.Context, ev any) {
	now := time.Now()
	switch ev := ev.(type) {
	case evStarted:
		if ev.err == nil {
			d.started[ev.id] = ev.bi
		}
		d.step(ctx, now, reconciler.Started{ID: ev.id, Addr: ev.bi.Addr, At: ev.bi.StartedAt, Err: ev.err})
	case evReady:
		d.step(ctx, now, reconciler.Ready{ID: ev.id, Err: ev.err, Canceled: ev.err == context.Canceled})
	case evExited:
		d.step(ctx, now, reconciler.Exited{ID: ev.id, Exit: ev.exit})
	}
}

func (d *Deployment) step(ctx context.Context, now time.Time, ev reconciler.Event) {
	d.apply(ctx, now, d.core.Step(now, ev))
}

// apply carries effects out in order. Replica platform calls answer at
// once, and their answers are stepped in turn.
func (d *Deployment) apply(ctx context.Context, now time.Time, effects []reconciler.Effect) {
	for i := 0; i < len(effects); i++ {
		switch e := effects[i].(type) {
		case reconciler.StartInstance:
			d.c.cfg.Meter.InstanceStarting(d.meter, e.ID, e.Trigger)
			if e.Manifest.Mode == manifest.Hybrid && !e.Floor {
				d.c.cfg.Meter.InstanceTier(d.meter, e.ID, true, e.Trigger)
			}
			sctx, cancel := context.WithCancel(context.Background())
			d.cancels[e.ID] = cancel
			d.act.start(d, e, sctx)
		case reconciler.WatchInstance:
			if bi := d.started[e.ID]; !e.Trigger.IsZero() {
				d.c.cfg.Metrics.Phase(d.Name, "trigger", bi.StartedAt.Sub(e.Trigger).Seconds())
				for _, p := range bi.Phases {
					d.c.cfg.Metrics.Phase(d.Name, p.Name, p.Duration.Seconds())
				}
			}
			d.cancel(e.ID)
			d.cancels[e.ID] = d.act.watch(d, e.ID, e.Addr)
		case reconciler.AddToPool:
			pi := pool.NewInstance(e.ID, e.Addr)
			if st := e.Startup; st != nil {
				pi.Startup = &pool.Startup{Trigger: st.Trigger, Launched: st.Launched, Started: st.Started, Ready: st.Ready, Phases: d.started[e.ID].Phases}
				d.c.cfg.Metrics.Phase(d.Name, "ready", st.Ready.Sub(st.Started).Seconds())
				d.c.cfg.Metrics.Phase(d.Name, "total", st.Ready.Sub(st.Trigger).Seconds())
				d.noteStart(st.Ready.Sub(st.Trigger))
			}
			pi.SetFloor(e.Floor)
			d.pis[e.ID] = pi
			d.c.cfg.Meter.InstanceReady(d.meter, e.ID, pi, now)
			d.Pool.Add(pi)
		case reconciler.SetTier:
			if pi := d.pis[e.ID]; pi != nil {
				pi.SetFloor(e.Floor)
			}
			d.c.cfg.Meter.InstanceTier(d.meter, e.ID, !e.Floor, now)
			d.log.Info("instance moved to the floor tier", "instance", e.ID)
		case reconciler.Retire:
			d.cancel(e.ID)
			pi := d.pis[e.ID]
			if e.Drain && pi != nil {
				d.Pool.Remove(e.ID)
			} else {
				pi = nil
			}
			d.act.retire(d, e.ID, pi)
		case reconciler.Kill:
			d.act.kill(d, e.ID)
		case reconciler.Gone:
			d.cancel(e.ID)
			if pi := d.pis[e.ID]; pi != nil {
				pi.MarkExited(e.Exit)
				d.Pool.Remove(e.ID)
			}
			delete(d.pis, e.ID)
			delete(d.started, e.ID)
			d.act.forget(e.ID)
			d.c.cfg.Meter.InstanceGone(d.meter, e.ID, now)
		case reconciler.FailWaiters:
			d.Pool.Fail(problem.New(http.StatusBadGateway, e.Code, fmt.Sprintf("model %q: %v", d.Name, e.Err)))
		case reconciler.ClosePool:
			d.Pool.Close()
		case reconciler.WakeAt:
			time.AfterFunc(e.At.Sub(now), d.OnDemandPoke)
		case reconciler.ApplyObjects:
			effects = append(effects, d.core.Step(now, d.act.apply(ctx, d, e.Manifest))...)
		case reconciler.Scale:
			res := d.act.scale(ctx, d, e.N)
			if res.Err == nil {
				d.log.Debug("scaled", "from", d.core.View().Scaled, "to", e.N)
			}
			effects = append(effects, d.core.Step(now, res)...)
		case reconciler.Metered:
			d.c.cfg.Meter.Deployment(d.metered(e.Manifest), now)
		case reconciler.InstanceExit:
			d.c.cfg.Metrics.InstanceExit(d.Name, e.Reason)
		case reconciler.PanicStarted:
			d.c.cfg.Metrics.Panic(d.Name)
		case reconciler.Failure:
			d.log.Warn("failed", "err", e.Err, "retry_in", e.RetryIn)
		}
	}
}

func (d *Deployment) cancel(id string) {
	if cancel := d.cancels[id]; cancel != nil {
		cancel()
		delete(d.cancels, id)
	}
}

// OnDemandPoke asks the loop to evaluate now.
func (d *Deployment) OnDemandPoke() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

func (d *Deployment) send(ev any) { d.events <- ev }

// stopAll ends the deployment: waiting requests fail, instances drain and
// stop, and the loop waits until every instance is observed gone (started
// ones report an exit; ones still inside Start report evStarted, then are
// retired).
func (d *Deployment) stopAll(ctx context.Context) {
	d.step(ctx, time.Now(), reconciler.Stop{})
	deadline := time.After(d.man.Timeouts.Request.D() + d.man.Timeouts.Grace.D() + 15*time.Second)
	for !d.core.Done() {
		select {
		case ev := <-d.events:
			d.handle(ctx, ev)
		case <-deadline:
			d.log.Error("instances did not stop in time", "left", len(d.core.View().Instances))
			return
		}
	}
	d.publishStatus()
}

// Status is a deployment as `tandem status` shows it.
type Status struct {
	Name        string             `json:"name"`
	Mode        manifest.Mode      `json:"mode"`
	Backend     string             `json:"backend"`
	Revision    string             `json:"revision"`
	Desired     int                `json:"desired"`
	Ready       int                `json:"ready"`
	Starting    int                `json:"starting"`
	Draining    int                `json:"draining"`
	InFlight    int                `json:"in_flight"`
	Queued      int                `json:"queued"`
	Panic       bool               `json:"panic"`
	Reason      string             `json:"reason,omitempty"`
	Restarts    int                `json:"restarts"`
	LastError   string             `json:"last_error,omitempty"`
	LastErrorAt *time.Time         `json:"last_error_at,omitempty"`
	Instances   []InstanceStatus   `json:"instances"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	Manifest    *manifest.Manifest `json:"manifest"`
	// Prewarm is the prewarm floor, its recent changes and the cold
	// start estimate; nil when the deployment has none of them.
	Prewarm *PrewarmStatus `json:"prewarm,omitempty"`
}

// InstanceStatus is one instance in a Status.
type InstanceStatus struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Revision  string     `json:"revision"`
	Addr      string     `json:"addr,omitempty"`
	InFlight  int        `json:"in_flight"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	ReadyAt   *time.Time `json:"ready_at,omitempty"`
	// Tier is a hybrid deployment's tier of the instance: floor or burst.
	Tier string `json:"tier,omitempty"`
	// Backend is set for an instance on another backend than the
	// deployment's (a hybrid's burst tier, manifest.Burst).
	Backend string `json:"backend,omitempty"`
	// Containment is what holds the instance's processes on the process
	// backend: "cgroup" or "process-group" (which setsid escapes).
	Containment string `json:"containment,omitempty"`
}

// Status returns the latest published status, with live request counts.
func (d *Deployment) Status() *Status {
	s := *d.status.Load()
	s.InFlight = d.Pool.InFlight()
	s.Queued = d.Pool.Queued()
	return &s
}

func (d *Deployment) publishStatus() {
	r := d.rec.Load()
	v := d.core.View()
	s := &Status{
		Name: d.Name, Mode: d.man.Mode, Backend: d.backendName(), Revision: v.Revision,
		Desired: v.Desired, Panic: v.Decision.Panic, Reason: v.Decision.String(),
		Restarts: v.Restarts, LastError: v.LastError,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Manifest: r.Manifest,
		Instances: []InstanceStatus{},
		Prewarm:   d.prewarmStatus(),
	}
	s.Ready, s.Starting, s.Draining = v.Counts()
	if !v.LastErrorAt.IsZero() {
		t := v.LastErrorAt
		s.LastErrorAt = &t
	}
	for _, in := range v.Instances {
		is := InstanceStatus{ID: in.ID, State: string(in.Phase), Revision: in.Rev, Addr: in.Addr, Containment: d.started[in.ID].Containment}
		if d.man.Mode == manifest.Hybrid && d.act.kind() == reconciler.Instances {
			is.Tier = "burst"
			if in.Floor {
				is.Tier = "floor"
			}
		}
		if ia, ok := d.act.(instanceActuator); ok {
			if be := ia.on[in.ID]; be != nil {
				is.Backend = be.Name()
			}
		}
		if pi := d.pis[in.ID]; pi != nil {
			is.InFlight = pi.InFlight()
		}
		if !in.Started.IsZero() {
			t := in.Started
			is.StartedAt = &t
		}
		if !in.ReadyAt.IsZero() {
			t := in.ReadyAt
			is.ReadyAt = &t
		}
		s.Instances = append(s.Instances, is)
	}
	d.status.Store(s)
}

// floorTarget is the pool's FloorTarget: a hybrid deployment on an instance
// backend fills its floor instances up to target_concurrency (rounded up)
// before its burst ones.
func floorTarget(m *manifest.Manifest, k reconciler.Kind) int64 {
	if m.Mode != manifest.Hybrid || k != reconciler.Instances {
		return 0
	}
	return int64(math.Ceil(m.Scaling.TargetConcurrency - 1e-9))
}
