// Package reconciler decides what a deployment's instances should do. Its
// Core takes the deployment's state plus (now, event) and returns the
// effects to apply (start, watch, add to the pool, retire, kill, fail
// waiters, scale replicas, meter), and does nothing itself: time only
// comes in as now, and nothing is called. The controller's loop applies
// the effects to a backend (internal/controller, actuator.go); recommend
// drives the same decisions in virtual time.
//
// One Core serves both kinds of backend. Instance backends (process,
// Docker) start and stop single instances, so the core tracks each one;
// replica platforms (Kubernetes) run a replica count the core sets, and
// report their ready endpoints, which the core mirrors into the pool.
package reconciler

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"tandem/internal/autoscaler"
	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Kind is what a backend runs: single instances, or replicas.
type Kind int

const (
	// Instances: the backend starts and stops single instances.
	Instances Kind = iota
	// Replicas: the platform runs a replica count (Kubernetes).
	Replicas
)

// Phase is an instance's state as status reports it.
type Phase string

// Instance phases.
const (
	PhaseStarting Phase = "starting"
	PhaseReady    Phase = "ready"
	PhaseDraining Phase = "draining"
	PhaseStopping Phase = "stopping"
)

// Instance is one instance as the core sees it.
type Instance struct {
	ID, Rev, Addr string
	Phase         Phase
	Trigger       time.Time // when the decision to start it was taken
	Launched      time.Time // the backend's own start instant
	Started       time.Time // when Start returned (or adoption)
	ReadyAt       time.Time
	Adopted       bool
	// Floor marks a hybrid deployment's floor tier (reserved capacity);
	// false for its burst tier and for every other mode's instances.
	Floor bool
}

// Config sets a Core up.
type Config struct {
	Name string
	Kind Kind
	// Backend is the backend's name (limits such as one instance per
	// fixed port on the process backend depend on it).
	Backend string
	// NewID names a new instance; tests make it deterministic.
	NewID func() string
}

// Core is one deployment's reconciler. It is not safe for concurrent
// use: its one owner (the deployment's loop, or a simulation) steps it.
type Core struct {
	cfg Config

	man      *manifest.Manifest
	rev      string
	params   autoscaler.Params
	window   *autoscaler.Window
	scale    autoscaler.State
	decision autoscaler.Decision
	desired  int
	decided  bool // desired comes from a decision (never act on the zero value)

	insts map[string]*Instance
	busy  map[string]int
	// queued is the last observed number of waiting requests.
	queued int
	leader bool

	failures  int
	nextStart time.Time
	wakeAt    time.Time
	restarts  int
	lastErr   string
	lastErrAt time.Time
	stopping  bool

	// Replica mode: the count last set on the platform (-1 unknown), and
	// whether the objects are applied.
	scaled  int
	applied bool

	out []Effect
}

// New returns a Core for manifest m. Adopted instances (left running by an
// earlier tandem, same revision) are watched, and the first decision is
// taken at now; the effects to apply come back with it.
func New(cfg Config, m *manifest.Manifest, adopted []backend.Instance, now time.Time) (*Core, []Effect) {
	c := &Core{cfg: cfg, insts: map[string]*Instance{}, scaled: -1}
	c.setManifest(m)
	switch cfg.Kind {
	case Replicas:
		c.emit(ApplyObjects{Manifest: m})
	default:
		for _, bi := range adopted {
			in := &Instance{ID: bi.ID, Rev: bi.Revision, Addr: bi.Addr, Phase: PhaseStarting, Trigger: now, Launched: bi.StartedAt, Started: now, Adopted: true}
			c.insts[bi.ID] = in
			c.emit(WatchInstance{ID: bi.ID, Addr: bi.Addr})
		}
		c.retier() // a hybrid's floor, from what an earlier tandem left
		// A new deployment is not idle since forever: its pool counts it
		// active from creation.
		c.evaluate(now, Tick{LastActive: now})
	}
	return c, c.flush()
}

func (c *Core) setManifest(m *manifest.Manifest) {
	c.man = m
	c.rev = m.Hash()
	c.params = autoscaler.ParamsOn(m, c.cfg.Backend)
	c.window = autoscaler.NewWindow(autoscaler.WindowBucket(m), m.Scaling.StableWindow.D())
}

func (c *Core) emit(e Effect) { c.out = append(c.out, e) }

func (c *Core) flush() []Effect {
	out := c.out
	c.out = nil
	return out
}

// Step applies one event at now and returns the effects, in order. Only a
// Tick decides the size anew; other events act on the last decision, so
// a runtime follows an Update, Endpoints or Applied with a Tick.
func (c *Core) Step(now time.Time, ev Event) []Effect {
	switch ev := ev.(type) {
	case Tick:
		c.evaluate(now, ev)
	case Started:
		c.started(now, ev)
	case Ready:
		c.ready(now, ev)
	case Exited:
		c.exited(now, ev)
	case Update:
		c.update(now, ev.Manifest)
	case Endpoints:
		c.endpoints(now, ev.Set)
		c.reconcile(now)
	case Applied:
		if ev.Err != nil {
			c.applied = false
			c.platformError(now, fmt.Errorf("applying %s objects: %w", c.cfg.Backend, ev.Err))
			break
		}
		c.applied = true
		if ev.Replicas >= 0 {
			c.scaled = ev.Replicas // adopt what the platform runs: never scale twice
		}
		c.reconcile(now)
	case Scaled:
		if ev.Err != nil {
			c.platformError(now, fmt.Errorf("scaling to %d: %w", ev.N, ev.Err))
			break
		}
		c.scaled = ev.N
	case PlatformError:
		c.platformError(now, ev.Err)
	case Stop:
		c.stop(now)
	}
	return c.flush()
}

// counts returns the current revision's ready and starting instances.
func (c *Core) counts() (ready, starting int) {
	if c.cfg.Kind == Replicas {
		return len(c.insts), max(0, c.scaled-len(c.insts))
	}
	for _, in := range c.insts {
		if in.Rev != c.rev {
			continue
		}
		switch in.Phase {
		case PhaseReady:
			ready++
		case PhaseStarting:
			starting++
		}
	}
	return
}

func (c *Core) evaluate(now time.Time, t Tick) {
	if c.cfg.Kind == Replicas && !c.applied && !c.stopping {
		c.emit(ApplyObjects{Manifest: c.man}) // retried each tick until it works
	}
	if t.Dt > 0 {
		c.window.Record(now, t.Dt, t.Avg+t.Remote)
	}
	c.queued, c.leader, c.busy = t.Queued, t.Leader, t.Busy
	ready, starting := c.counts()
	s := c.man.Scaling
	m := autoscaler.Metrics{
		StableConcurrency: c.window.Average(now, s.StableWindow.D()),
		PanicConcurrency:  c.window.Average(now, s.PanicWindow.D()),
		Ready:             ready,
		Starting:          starting,
		Queued:            t.Queued,
		InFlight:          t.InFlight,
		LastActive:        t.LastActive,
	}
	if t.Remote > 0 {
		// Other tandem processes serve this deployment now: their
		// traffic is demand too, and the idle clock must not run out on
		// a leader that happens to receive none of it.
		m.LastActive = now
		m.InFlight = max(m.InFlight, 1)
	}
	wasPanic := c.decision.Panic
	c.decision, c.scale = autoscaler.Decide(c.params, c.scale, m, now)
	c.decided = true
	if c.decision.Panic && !wasPanic {
		c.emit(PanicStarted{})
	}
	c.desired = c.decision.Desired
	f := t.Floor
	if c.params.Max > 0 { // 0: no upper bound
		f = min(f, c.params.Max)
	}
	if f > c.desired {
		c.desired, c.decision.Desired, c.decision.Reason = f, f, ReasonFloor
	}
	c.reconcile(now)
}

// ReasonFloor is the decision's reason when Tick.Floor raised the size.
const ReasonFloor = "prewarm floor"

// reconcile starts or retires instances of the current revision until
// their number matches desired, and retires older revisions once the
// current one has enough ready instances. In replica mode it sets the
// platform's count instead.
func (c *Core) reconcile(now time.Time) {
	if c.stopping || !c.decided {
		return
	}
	if c.cfg.Kind == Replicas {
		c.reconcileReplicas()
		return
	}
	ready, starting := c.counts()
	switch have := ready + starting; {
	case have < c.desired:
		if now.Before(c.nextStart) {
			if !c.wakeAt.Equal(c.nextStart) {
				c.wakeAt = c.nextStart
				c.emit(WakeAt{At: c.nextStart})
			}
			break
		}
		for i := have; i < c.desired; i++ {
			c.startInstance(now)
		}
	case have > c.desired:
		c.scaleDown(have - c.desired)
	}
	if ready, _ = c.counts(); ready >= c.desired {
		for _, in := range c.sorted() {
			if in.Rev != c.rev && (in.Phase == PhaseReady || in.Phase == PhaseStarting) {
				c.retire(in)
			}
		}
	}
}

func (c *Core) reconcileReplicas() {
	if !c.applied || c.desired == c.scaled {
		return
	}
	// Only the leader decides; any process may wake a deployment from
	// zero for a request waiting here.
	if !c.leader && !(c.scaled <= 0 && c.desired > 0 && c.queued > 0) {
		return
	}
	c.emit(Scale{N: c.desired})
}

func (c *Core) startInstance(now time.Time) {
	in := &Instance{ID: c.cfg.NewID(), Rev: c.rev, Phase: PhaseStarting, Trigger: now}
	in.Floor = c.hybrid() && c.floorCount() < c.params.Min
	c.insts[in.ID] = in
	c.emit(StartInstance{ID: in.ID, Rev: c.rev, Manifest: c.man, Trigger: now, Floor: in.Floor})
}

func (c *Core) hybrid() bool { return c.man.Mode == manifest.Hybrid && c.cfg.Kind == Instances }

// floorCount is the current revision's floor instances that are starting
// or ready.
func (c *Core) floorCount() int {
	n := 0
	for _, in := range c.insts {
		if in.Floor && in.Rev == c.rev && (in.Phase == PhaseStarting || in.Phase == PhaseReady) {
			n++
		}
	}
	return n
}

// retier keeps a hybrid deployment's floor whole: when a floor instance is
// gone or retired, the longest-ready burst instance of the current
// revision takes its place at once (its replacement then starts as burst),
// so the floor stays warm through a crash.
func (c *Core) retier() {
	if !c.hybrid() {
		return
	}
	for c.floorCount() < c.params.Min {
		var best *Instance
		for _, in := range c.sorted() {
			if in.Floor || in.Rev != c.rev || (in.Phase != PhaseReady && in.Phase != PhaseStarting) {
				continue
			}
			if best == nil || better(in, best) {
				best = in
			}
		}
		if best == nil {
			return
		}
		best.Floor = true
		c.emit(SetTier{ID: best.ID, Floor: true})
	}
}

// better orders promotion candidates: ready before starting, then the
// longest ready.
func better(a, b *Instance) bool {
	if (a.Phase == PhaseReady) != (b.Phase == PhaseReady) {
		return a.Phase == PhaseReady
	}
	return a.ReadyAt.Before(b.ReadyAt)
}

// sorted returns the instances by id, so that effects come out in the
// same order every time.
func (c *Core) sorted() []*Instance {
	out := make([]*Instance, 0, len(c.insts))
	for _, in := range c.insts {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (c *Core) scaleDown(n int) {
	var cands []*Instance
	for _, in := range c.sorted() {
		if in.Rev == c.rev && (in.Phase == PhaseStarting || in.Phase == PhaseReady) {
			cands = append(cands, in)
		}
	}
	// A hybrid's burst tier first, then starting instances (they serve
	// nothing), then the least busy.
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.Floor != b.Floor {
			return !a.Floor
		}
		if (a.Phase == PhaseStarting) != (b.Phase == PhaseStarting) {
			return a.Phase == PhaseStarting
		}
		return c.busy[a.ID] < c.busy[b.ID]
	})
	for _, in := range cands[:min(n, len(cands))] {
		c.retire(in)
	}
}

// retire drains a ready instance then stops it, or stops a starting one.
func (c *Core) retire(in *Instance) {
	drain := in.Phase == PhaseReady
	if drain {
		in.Phase = PhaseDraining
	} else {
		in.Phase = PhaseStopping
	}
	c.emit(Retire{ID: in.ID, Drain: drain})
}

func (c *Core) started(now time.Time, ev Started) {
	in := c.insts[ev.ID]
	if in == nil {
		return
	}
	if ev.Err != nil {
		c.gone(in, backend.Exit{Code: -1, Err: ev.Err, At: now})
		if in.Phase == PhaseStopping {
			return // retired while starting: the cancelled start is no failure
		}
		c.emit(InstanceExit{Reason: "start_failed"})
		c.failed(now, fmt.Errorf("instance %s failed to start: %w", ev.ID, ev.Err))
		c.reconcile(now)
		return
	}
	in.Addr, in.Launched, in.Started = ev.Addr, ev.At, now
	c.emit(WatchInstance{ID: in.ID, Addr: ev.Addr, Trigger: in.Trigger})
	if in.Phase == PhaseStopping {
		// Retired while starting: stop what was started.
		c.emit(Retire{ID: in.ID})
	}
}

func (c *Core) ready(now time.Time, ev Ready) {
	in := c.insts[ev.ID]
	if in == nil || in.Phase != PhaseStarting || ev.Canceled {
		return
	}
	if ev.Err != nil {
		in.Phase = PhaseStopping
		c.emit(InstanceExit{Reason: "start_timeout"})
		c.failed(now, fmt.Errorf("instance %s was not ready within timeouts.startup (%s) and was killed", in.ID, c.man.Timeouts.Startup.D()))
		c.emit(Kill{ID: in.ID})
		c.reconcile(now)
		return
	}
	in.Phase = PhaseReady
	in.ReadyAt = now
	c.failures = 0
	add := AddToPool{ID: in.ID, Addr: in.Addr, Floor: in.Floor}
	if !in.Adopted {
		add.Startup = &Startup{Trigger: in.Trigger, Launched: in.Launched, Started: in.Started, Ready: now}
	}
	c.emit(add)
	c.reconcile(now)
}

func (c *Core) exited(now time.Time, ev Exited) {
	in := c.insts[ev.ID]
	if in == nil {
		return
	}
	c.gone(in, ev.Exit)
	switch in.Phase {
	case PhaseDraining, PhaseStopping:
		c.emit(InstanceExit{Reason: "stopped"})
	case PhaseStarting:
		c.emit(InstanceExit{Reason: "start_failed"})
		c.failed(now, fmt.Errorf("instance %s %s before it was ready; see `tandem logs %s`", in.ID, ev.Exit, c.cfg.Name))
	default:
		reason := "crashed"
		if ev.Exit.OOM {
			reason = "oom"
		}
		c.emit(InstanceExit{Reason: reason})
		c.restarts++
		// Requests waiting for an instance wait for the replacement
		// (within their own deadline): a crash of a ready instance says
		// nothing about whether the next one will start.
		c.backOff(now, fmt.Errorf("instance %s %s; replacing it", in.ID, ev.Exit))
	}
	c.reconcile(now)
}

func (c *Core) gone(in *Instance, exit backend.Exit) {
	delete(c.insts, in.ID)
	c.emit(Gone{ID: in.ID, Exit: exit})
	c.retier()
}

// failed records an instance failure, backs off the next start, and when
// nothing else can serve the waiting requests, answers them now.
func (c *Core) failed(now time.Time, err error) {
	c.backOff(now, err)
	ready, starting := c.counts()
	c.noteError(now, err, "instance_failed", ready+starting == 0)
}

// backOff records an instance failure and delays the next start (not the
// first retry), leaving waiting requests waiting.
func (c *Core) backOff(now time.Time, err error) {
	c.failures++
	backoff := min(100*time.Millisecond<<min(c.failures-1, 10), 30*time.Second)
	if c.failures == 1 {
		backoff = 0
	}
	c.nextStart = now.Add(backoff)
	c.emit(Failure{Err: err, RetryIn: backoff})
	c.lastErr, c.lastErrAt = err.Error(), now
}

func (c *Core) noteError(now time.Time, err error, code string, nothingComing bool) {
	c.lastErr, c.lastErrAt = err.Error(), now
	if nothingComing && c.queued > 0 {
		c.emit(FailWaiters{Code: code, Err: err})
	}
}

// platformError records a replica platform's error; waiting requests get
// it when nothing is ready.
func (c *Core) platformError(now time.Time, err error) {
	c.emit(Failure{Err: err})
	c.noteError(now, err, "platform_error", len(c.insts) == 0)
}

func (c *Core) update(now time.Time, m *manifest.Manifest) {
	c.setManifest(m)
	c.failures = 0
	c.nextStart = time.Time{}
	c.emit(Metered{Manifest: m})
	if c.cfg.Kind == Replicas {
		c.emit(ApplyObjects{Manifest: m})
	}
}

// endpoints makes the ready set equal the platform's (replica mode).
func (c *Core) endpoints(now time.Time, set []backend.Instance) {
	seen := make(map[string]bool, len(set))
	for _, e := range set {
		seen[e.ID] = true
		in, ok := c.insts[e.ID]
		if ok && in.Addr == e.Addr {
			continue
		}
		if ok {
			c.gone(in, backend.Exit{Code: -1, Err: fmt.Errorf("endpoint %s moved to %s", in.Addr, e.Addr), At: now})
		}
		in = &Instance{ID: e.ID, Rev: c.rev, Phase: PhaseReady, Addr: e.Addr, Started: e.StartedAt, ReadyAt: now, Adopted: true}
		c.insts[e.ID] = in
		c.emit(AddToPool{ID: e.ID, Addr: e.Addr})
	}
	for _, in := range c.sorted() {
		if !seen[in.ID] {
			c.gone(in, backend.Exit{Code: -1, Err: fmt.Errorf("endpoint %s left the ready set", in.Addr), At: now})
		}
	}
}

func (c *Core) stop(now time.Time) {
	if c.stopping {
		return
	}
	c.stopping = true
	c.emit(ClosePool{})
	for _, in := range c.sorted() {
		switch {
		case c.cfg.Kind == Replicas:
			c.gone(in, backend.Exit{Code: -1, Err: errors.New("deployment stopped"), At: now})
		case in.Phase == PhaseReady || in.Phase == PhaseStarting:
			c.retire(in)
		}
	}
}

// Desired is the size last decided.
func (c *Core) Desired() int { return c.desired }

// Settled reports whether ticks without traffic would change nothing
// now: no panic, nothing starting or leaving, and the ready instances
// match the decision. A simulation skips ticks while it holds.
func (c *Core) Settled() bool {
	if c.decision.Panic || c.decision.Reason == autoscaler.ReasonBurst {
		return false
	}
	ready := 0
	for _, in := range c.insts {
		if in.Phase != PhaseReady || in.Rev != c.rev {
			return false
		}
		ready++
	}
	return ready == c.desired
}

// Done reports whether a stopped deployment has no instance left.
func (c *Core) Done() bool { return c.stopping && len(c.insts) == 0 }

// View is the core's state as status shows it.
type View struct {
	Revision    string
	Desired     int
	Decision    autoscaler.Decision
	Restarts    int
	LastError   string
	LastErrorAt time.Time
	Instances   []Instance // by id
	Kind        Kind
	// Scaled is the replica count set on the platform (replica mode; -1
	// unknown).
	Scaled int
}

// View returns the core's state.
func (c *Core) View() View {
	v := View{Revision: c.rev, Desired: c.desired, Decision: c.decision, Restarts: c.restarts,
		LastError: c.lastErr, LastErrorAt: c.lastErrAt, Kind: c.cfg.Kind, Scaled: c.scaled}
	for _, in := range c.sorted() {
		v.Instances = append(v.Instances, *in)
	}
	return v
}

// Counts returns the instances ready, on their way and leaving. In
// replica mode, those on their way are the replicas asked for and not
// ready yet.
func (v View) Counts() (ready, starting, draining int) {
	for _, in := range v.Instances {
		switch in.Phase {
		case PhaseReady:
			ready++
		case PhaseStarting:
			starting++
		case PhaseDraining, PhaseStopping:
			draining++
		}
	}
	if v.Kind == Replicas {
		starting = max(0, v.Scaled-ready)
	}
	return
}
