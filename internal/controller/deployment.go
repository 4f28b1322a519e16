package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"tandem/internal/autoscaler"
	"tandem/internal/backend"
	"tandem/internal/cache"
	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/pool"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// Instance states as status reports them.
const (
	stateStarting = "starting"
	stateReady    = "ready"
	stateDraining = "draining"
	stateStopping = "stopping"
)

// Deployment is one deployment at run time. Its exported fields and
// methods are safe for concurrent use; everything else belongs to its loop.
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

	c    *Controller
	be   backend.Backend        // instance backends (process, docker)
	rb   backend.ReplicaBackend // or a platform that runs replicas (kubernetes)
	log  *slog.Logger
	rec  atomic.Pointer[store.Record]
	meta atomic.Pointer[decodedMeta]
	// Replica mode with a shared catalog: follow means the current record
	// came from the platform (another tandem applied it), so this process
	// must not apply objects; seenAt (unix ns, 0 = never) is when the
	// platform was first known to have the objects.
	follow atomic.Bool
	seenAt atomic.Int64

	poke    chan struct{}
	events  chan any
	updates chan *store.Record
	stop    chan chan struct{}
	ended   chan struct{} // closed when the loop has returned
	status  atomic.Pointer[Status]

	// Loop-owned state.
	man       *manifest.Manifest
	rev       string
	instances map[string]*inst
	window    *autoscaler.Window
	scale     autoscaler.State
	decision  autoscaler.Decision
	desired   int
	failures  int
	nextStart time.Time
	restarts  int
	lastErr   string
	lastErrAt time.Time
	stopping  bool
	// Replica mode only: the count last set on the platform (-1 unknown),
	// and whether its objects are applied.
	scaled  int
	applied bool
}

type inst struct {
	id, rev   string
	state     string
	addr      string
	pi        *pool.Instance
	trigger   time.Time // when the decision to start it was taken
	started   time.Time
	launched  time.Time // backend.Instance.StartedAt
	readyAt   time.Time
	adopted   bool
	cancel    context.CancelFunc
	lastPhase []backend.Phase
	contain   string // backend.Instance.Containment
}

// Events sent to the loop by the goroutines it starts.
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

func (c *Controller) newDeployment(r *store.Record, be backend.Backend, rb backend.ReplicaBackend) *Deployment {
	d := &Deployment{
		Name:      r.Manifest.Name,
		Metrics:   c.cfg.Metrics.ForModel(r.Manifest.Name),
		Usage:     c.cfg.Meter.Requests(r.Manifest.Name),
		c:         c,
		Cache:     cache.New(),
		be:        be,
		rb:        rb,
		log:       c.log.With("model", r.Manifest.Name),
		poke:      make(chan struct{}, 1),
		events:    make(chan any, 64),
		updates:   make(chan *store.Record, 4),
		stop:      make(chan chan struct{}),
		ended:     make(chan struct{}),
		instances: map[string]*inst{},
	}
	d.rec.Store(r)
	d.Pool = pool.New(d.poolConfig(r.Manifest))
	d.configureCache(r.Manifest)
	d.setManifest(r.Manifest)
	c.cfg.Meter.Deployment(r.Manifest, time.Now())
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
		OnDemand: func() {
			select {
			case d.poke <- struct{}{}:
			default:
			}
		},
	}
}

func (d *Deployment) setManifest(m *manifest.Manifest) {
	d.man = m
	d.rev = m.Hash()
	d.window = autoscaler.NewWindow(autoscaler.WindowBucket(m), m.Scaling.StableWindow.D())
}

func (d *Deployment) backendName() string { return backendName(d.be, d.rb) }

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

func (d *Deployment) params() autoscaler.Params {
	return autoscaler.ParamsOn(d.man, d.backendName())
}

func (d *Deployment) run(adopted []backend.Instance) {
	defer close(d.ended)
	for _, bi := range adopted {
		in := &inst{id: bi.ID, rev: bi.Revision, state: stateStarting, addr: bi.Addr, started: bi.StartedAt, trigger: time.Now(), adopted: true}
		d.instances[bi.ID] = in
		d.c.cfg.Meter.InstanceStarting(d.Name, bi.ID, in.trigger)
		d.log.Info("adopted instance", "instance", bi.ID, "addr", bi.Addr)
		d.watch(in, bi)
	}
	// Decide once before any event: reconcile must never act on the zero
	// desired count (it would drain adopted instances).
	d.evaluate(time.Now())
	d.publishStatus()
	tick := time.NewTicker(d.c.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			d.evaluate(now)
		case <-d.poke:
			d.evaluate(time.Now())
		case ev := <-d.events:
			d.handle(ev)
		case r := <-d.updates:
			d.applyUpdate(r)
		case done := <-d.stop:
			d.stopAll()
			close(done)
			return
		}
		d.publishStatus()
	}
}

func (d *Deployment) applyUpdate(r *store.Record) {
	d.log.Info("manifest updated", "revision", r.Manifest.Hash())
	d.setManifest(r.Manifest)
	d.c.cfg.Meter.Deployment(r.Manifest, time.Now())
	d.Pool.SetConfig(d.poolConfig(r.Manifest))
	d.failures = 0
	d.nextStart = time.Time{}
	d.evaluate(time.Now())
}

// counts returns the current revision's ready and starting instances.
func (d *Deployment) counts() (ready, starting int) {
	if d.rb != nil {
		return len(d.instances), max(0, d.scaled-len(d.instances))
	}
	for _, in := range d.instances {
		if in.rev != d.rev {
			continue
		}
		switch in.state {
		case stateReady:
			ready++
		case stateStarting:
			starting++
		}
	}
	return
}

func (d *Deployment) evaluate(now time.Time) {
	avg, dt, lastActive := d.Pool.Sample(now)
	if p := d.c.cfg.Peers; p != nil && d.rb != nil {
		p.Observe(d.Name, avg, dt, d.Pool.Queued(), now)
		if l, ok := d.rb.(backend.Leader); ok && l.IsLeader() {
			avg += p.Remote(d.Name, now)
		}
	}
	if dt > 0 {
		d.window.Record(now, dt, avg)
	}
	ready, starting := d.counts()
	s := d.man.Scaling
	m := autoscaler.Metrics{
		StableConcurrency: d.window.Average(now, s.StableWindow.D()),
		PanicConcurrency:  d.window.Average(now, s.PanicWindow.D()),
		Ready:             ready,
		Starting:          starting,
		Queued:            d.Pool.Queued(),
		InFlight:          d.Pool.InFlight(),
		LastActive:        lastActive,
	}
	wasPanic := d.decision.Panic
	d.decision, d.scale = autoscaler.Decide(d.params(), d.scale, m, now)
	if d.decision.Panic && !wasPanic {
		d.c.cfg.Metrics.Panic(d.Name)
	}
	if d.decision.Desired != d.desired {
		d.log.Debug("scale", "from", d.desired, "to", d.decision.Desired, "reason", d.decision.Reason)
	}
	d.desired = d.decision.Desired
	d.reconcile(now)
}

// reconcile starts or drains instances of the current revision until their
// number matches desired, and retires older revisions once the current one
// has enough ready instances.
func (d *Deployment) reconcile(now time.Time) {
	if d.rb != nil {
		d.reconcileReplicas(now)
		return
	}
	if d.stopping {
		return
	}
	ready, starting := d.counts()
	switch have := ready + starting; {
	case have < d.desired:
		if now.Before(d.nextStart) {
			time.AfterFunc(d.nextStart.Sub(now), func() { d.OnDemandPoke() })
			break
		}
		for i := have; i < d.desired; i++ {
			d.startInstance(now)
		}
	case have > d.desired:
		d.scaleDown(have - d.desired)
	}
	ready, _ = d.counts()
	if ready >= d.desired {
		for _, in := range d.instances {
			if in.rev != d.rev && (in.state == stateReady || in.state == stateStarting) {
				d.retire(in)
			}
		}
	}
}

// OnDemandPoke asks the loop to evaluate now.
func (d *Deployment) OnDemandPoke() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

func (d *Deployment) scaleDown(n int) {
	var cands []*inst
	for _, in := range d.instances {
		if in.rev == d.rev && (in.state == stateStarting || in.state == stateReady) {
			cands = append(cands, in)
		}
	}
	// Starting instances first (they serve nothing), then the least busy.
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if (a.state == stateStarting) != (b.state == stateStarting) {
			return a.state == stateStarting
		}
		return a.pi.InFlight() < b.pi.InFlight()
	})
	for _, in := range cands[:min(n, len(cands))] {
		d.retire(in)
	}
}

// retire drains a ready instance then stops it, or stops a starting one.
func (d *Deployment) retire(in *inst) {
	grace := d.man.Timeouts.Grace.D()
	drainFor := d.man.Timeouts.Request.D()
	if in.cancel != nil {
		in.cancel()
	}
	pi := in.pi
	if in.state == stateReady {
		in.state = stateDraining
		d.Pool.Remove(in.id)
	} else {
		in.state = stateStopping
	}
	be, id := d.be, in.id
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

func (d *Deployment) startInstance(now time.Time) {
	in := &inst{id: newID(d.Name), rev: d.rev, state: stateStarting, trigger: now}
	d.instances[in.id] = in
	d.c.cfg.Meter.InstanceStarting(d.Name, in.id, now)
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	m := d.man
	spec := backend.Spec{ID: in.id, Deployment: d.Name, Revision: d.rev, Manifest: m}
	if err := d.c.prepare(d.backendName(), &spec); err != nil {
		go d.send(evStarted{id: in.id, err: err})
		return
	}
	go func() {
		bi, err := d.be.Start(ctx, spec)
		d.send(evStarted{id: in.id, bi: bi, err: err})
	}()
}

func (d *Deployment) send(ev any) { d.events <- ev }

// watch follows an instance that runs: its exit, and its readiness.
func (d *Deployment) watch(in *inst, bi backend.Instance) {
	in.addr = bi.Addr
	in.started = time.Now()
	in.launched = bi.StartedAt
	in.lastPhase = bi.Phases
	in.contain = bi.Containment
	exitCh, err := d.be.Wait(bi.ID)
	if err != nil {
		go d.send(evExited{id: in.id, exit: backend.Exit{Code: -1, Err: err, At: time.Now()}})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.man.Timeouts.Startup.D())
	in.cancel = cancel
	go func() {
		e, ok := <-exitCh
		if !ok {
			e = backend.Exit{Code: -1, Err: fmt.Errorf("backend stopped tracking it"), At: time.Now()}
		}
		cancel()
		d.send(evExited{id: in.id, exit: e})
	}()
	health := d.c.healthPath(d.backendName(), d.man)
	go func() {
		err := probe(ctx, bi.Addr, health)
		d.send(evReady{id: in.id, err: err})
	}()
}

func (d *Deployment) handle(ev any) {
	now := time.Now()
	switch ev := ev.(type) {
	case evStarted:
		in := d.instances[ev.id]
		if in == nil {
			return
		}
		if ev.err != nil {
			d.forget(ev.id, now)
			if in.state == stateStopping {
				return // retired while starting; the cancelled start is no failure
			}
			d.c.cfg.Metrics.InstanceExit(d.Name, "start_failed")
			d.failed(now, fmt.Errorf("instance %s failed to start: %w", ev.id, ev.err))
			return
		}
		if in.state == stateStopping {
			// Retired while starting: stop what was started.
			in.state = stateStarting
			d.watch(in, ev.bi)
			d.retire(in)
			return
		}
		d.c.cfg.Metrics.Phase(d.Name, "trigger", ev.bi.StartedAt.Sub(in.trigger).Seconds())
		for _, p := range ev.bi.Phases {
			d.c.cfg.Metrics.Phase(d.Name, p.Name, p.Duration.Seconds())
		}
		d.watch(in, ev.bi)
	case evReady:
		in := d.instances[ev.id]
		if in == nil || in.state != stateStarting {
			return
		}
		if ev.err != nil {
			if ev.err == context.Canceled {
				return // it exited or was retired; that event tells the story
			}
			in.state = stateStopping
			d.c.cfg.Metrics.InstanceExit(d.Name, "start_timeout")
			d.failed(now, fmt.Errorf("instance %s was not ready within timeouts.startup (%s) and was killed", in.id, d.man.Timeouts.Startup.D()))
			go d.be.Stop(context.Background(), in.id, 0)
			return
		}
		in.state = stateReady
		in.readyAt = now
		in.pi = pool.NewInstance(in.id, in.addr)
		d.failures = 0
		if !in.adopted {
			in.pi.Startup = &pool.Startup{Trigger: in.trigger, Launched: in.launched, Started: in.started, Ready: now, Phases: in.lastPhase}
			d.c.cfg.Metrics.Phase(d.Name, "ready", now.Sub(in.started).Seconds())
			d.c.cfg.Metrics.Phase(d.Name, "total", now.Sub(in.trigger).Seconds())
		}
		d.c.cfg.Meter.InstanceReady(d.Name, in.id, in.pi, now)
		d.Pool.Add(in.pi)
		d.reconcile(now)
	case evExited:
		in := d.instances[ev.id]
		if in == nil {
			return
		}
		d.forget(ev.id, now)
		if in.pi != nil {
			in.pi.MarkExited(ev.exit)
			d.Pool.Remove(in.id)
		}
		switch in.state {
		case stateDraining, stateStopping:
			d.c.cfg.Metrics.InstanceExit(d.Name, "stopped")
		case stateStarting:
			d.c.cfg.Metrics.InstanceExit(d.Name, "start_failed")
			d.failed(now, fmt.Errorf("instance %s %s before it was ready; see `tandem logs %s`", in.id, ev.exit, d.Name))
		default:
			reason := "crashed"
			if ev.exit.OOM {
				reason = "oom"
			}
			d.c.cfg.Metrics.InstanceExit(d.Name, reason)
			d.restarts++
			// Requests waiting for an instance wait for the replacement
			// (within their own deadline): a crash of a ready instance says
			// nothing about whether the next one will start.
			d.backOff(now, fmt.Errorf("instance %s %s; replacing it", in.id, ev.exit))
		}
		d.reconcile(now)
	}
}

// forget drops an instance that is gone, and tells the cost meter.
func (d *Deployment) forget(id string, now time.Time) {
	delete(d.instances, id)
	d.c.cfg.Meter.InstanceGone(d.Name, id, now)
}

// failed records an instance failure, backs off the next start, and when
// nothing else can serve the waiting requests, answers them now.
func (d *Deployment) failed(now time.Time, err error) {
	d.backOff(now, err)
	ready, starting := d.counts()
	d.noteError(now, err, "instance_failed", ready+starting == 0)
}

// backOff records an instance failure for status and delays the next start
// (not the first retry), leaving waiting requests waiting.
func (d *Deployment) backOff(now time.Time, err error) {
	d.failures++
	backoff := min(100*time.Millisecond<<min(d.failures-1, 10), 30*time.Second)
	if d.failures == 1 {
		backoff = 0
	}
	d.nextStart = now.Add(backoff)
	d.log.Warn("instance failed", "err", err, "retry_in", backoff)
	d.lastErr = err.Error()
	d.lastErrAt = now
}

// noteError records err for status and, when nothing is ready or on its
// way, answers the waiting requests with it instead of letting them time
// out.
func (d *Deployment) noteError(now time.Time, err error, code string, nothingComing bool) {
	d.lastErr = err.Error()
	d.lastErrAt = now
	if nothingComing && d.Pool.Queued() > 0 {
		d.Pool.Fail(problem.New(http.StatusBadGateway, code, fmt.Sprintf("model %q: %v", d.Name, err)))
	}
}

// stopAll ends the deployment: waiting requests fail, instances drain and stop.
func (d *Deployment) stopAll() {
	d.stopping = true
	d.Pool.Close()
	for _, in := range d.instances {
		if in.state == stateReady || in.state == stateStarting {
			d.retire(in)
		}
	}
	// Wait for every instance to be observed gone (started ones report an
	// exit; ones still inside Start report evStarted, then are retired).
	deadline := time.After(d.man.Timeouts.Request.D() + d.man.Timeouts.Grace.D() + 15*time.Second)
	for len(d.instances) > 0 {
		select {
		case ev := <-d.events:
			if st, ok := ev.(evStarted); ok && st.err == nil {
				if in := d.instances[st.id]; in != nil {
					in.state = stateStarting
					d.watch(in, st.bi)
					d.retire(in)
					continue
				}
			}
			if st, ok := ev.(evStarted); ok && st.err != nil {
				d.forget(st.id, time.Now())
				continue
			}
			if ex, ok := ev.(evExited); ok {
				if in := d.instances[ex.id]; in != nil && in.pi != nil {
					in.pi.MarkExited(ex.exit)
				}
				d.forget(ex.id, time.Now())
			}
		case <-deadline:
			d.log.Error("instances did not stop in time", "left", len(d.instances))
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
	s := &Status{
		Name: d.Name, Mode: d.man.Mode, Backend: d.backendName(), Revision: d.rev,
		Desired: d.desired, Panic: d.decision.Panic, Reason: d.decision.String(),
		Restarts: d.restarts, LastError: d.lastErr,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Manifest: r.Manifest,
		Instances: []InstanceStatus{},
	}
	if !d.lastErrAt.IsZero() {
		t := d.lastErrAt
		s.LastErrorAt = &t
	}
	for _, in := range d.instances {
		is := InstanceStatus{ID: in.id, State: in.state, Revision: in.rev, Addr: in.addr, Containment: in.contain}
		if in.pi != nil {
			is.InFlight = in.pi.InFlight()
		}
		if !in.started.IsZero() {
			t := in.started
			is.StartedAt = &t
		}
		if !in.readyAt.IsZero() {
			t := in.readyAt
			is.ReadyAt = &t
		}
		switch in.state {
		case stateReady:
			s.Ready++
		case stateStarting:
			s.Starting++
		case stateDraining, stateStopping:
			s.Draining++
		}
		s.Instances = append(s.Instances, is)
	}
	if d.rb != nil {
		s.Starting = max(0, d.scaled-s.Ready)
	}
	sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].ID < s.Instances[j].ID })
	d.status.Store(s)
}
