package recommend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"tandem/internal/autoscaler"
	"tandem/internal/backend"
	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/prewarm"
	"tandem/internal/reconciler"
	"tandem/internal/trace"
)

// Timings are the model's own timings, measured on a real instance.
type Timings struct {
	// ColdStart runs from the decision to start an instance until it is
	// ready (the controller's "total" start phase).
	ColdStart time.Duration `json:"cold_start"`
	// Service holds warm service times by path ("" for any path not
	// listed): how long an instance is busy with one request. The
	// simulation draws from them. Requests on one instance are taken not
	// to slow each other down.
	Service map[string][]time.Duration `json:"service"`
	// Overhead is what a client sees on top of the service time (the
	// gateway and the network); it adds to latency, not to busy time.
	Overhead time.Duration `json:"overhead"`
	// Stop is how long an instance takes to exit once drained.
	Stop time.Duration `json:"stop"`
}

// ErrTimings is returned for timings the simulation cannot use.
var ErrTimings = errors.New("invalid model timings")

func (t *Timings) check() error {
	if t.ColdStart < 0 || t.Stop < 0 || t.Overhead < 0 {
		return fmt.Errorf("%w: negative cold start or stop time", ErrTimings)
	}
	if len(t.Service) == 0 {
		return fmt.Errorf("%w: no service times", ErrTimings)
	}
	for p, s := range t.Service {
		if len(s) == 0 {
			return fmt.Errorf("%w: no service times for path %q", ErrTimings, p)
		}
	}
	return nil
}

// Config is one simulation's settings.
type Config struct {
	// Manifest is the deployment as it would run (ForMode sets the mode).
	Manifest *manifest.Manifest
	// Prices price the usage (the defaults when nil).
	Prices *cost.Prices
	// Tick is the controller's autoscaling interval (default 1s).
	Tick time.Duration
	// End is when the measured stretch ends at least; the simulation runs
	// on until the last request is answered. Zero means the trace's last
	// arrival.
	End time.Duration
	// Seed makes the draws of service times repeatable.
	Seed uint64

	everyTick bool // tests: run every tick, quiet or not
}

// Result is what a simulated (or measured) run came to.
type Result struct {
	Mode       manifest.Mode   `json:"mode"`
	Requests   int             `json:"requests"`
	Errors     int             `json:"errors"`
	Latency    loadgen.Latency `json:"latency_ms"`
	ColdStarts int             `json:"cold_starts"`
	// ColdLatency summarises the requests that waited for a start.
	ColdLatency loadgen.Latency `json:"cold_start_latency_ms"`
	// Starts counts instances started.
	Starts int `json:"instance_starts"`
	// Peak is the most instances up at once.
	Peak int `json:"peak_instances"`
	// Duration is the stretch the usage covers.
	Duration time.Duration `json:"duration"`
	Usage    cost.Usage    `json:"usage"`
	Cost     float64       `json:"cost_total"`
	CostIdle float64       `json:"cost_idle"`
	// CostPer1K is Cost per thousand requests.
	CostPer1K float64 `json:"cost_per_1k"`
}

// ForMode returns a copy of m set to run in mode, as bench deploys it:
// serverless scales to zero (scaling.min 0), dedicated keeps at least
// one instance (scaling.min at least 1).
func ForMode(m *manifest.Manifest, mode manifest.Mode) *manifest.Manifest {
	c := *m
	c.Mode = mode
	lo := m.Scaling.MinInstances()
	if mode == manifest.Dedicated || mode == manifest.Hybrid {
		lo = max(lo, 1)
	} else {
		lo = 0
	}
	c.Scaling.Min = &lo
	c.Scaling.Max = max(c.Scaling.Max, lo)
	return &c
}

// backendOf names the backend the controller would run m on (limits such
// as one instance per fixed port depend on it).
func backendOf(m *manifest.Manifest) string {
	if m.Backend == "" {
		return manifest.BackendProcess
	}
	return m.Backend
}

// epoch is the simulation's time zero. Any fixed instant would do; it is
// not the zero time.Time, which the autoscaler reads as "never".
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type instState uint8

const (
	simStarting instState = iota
	simReady
	simDraining
	simGone
)

type simInstance struct {
	id       string
	state    instState
	inflight int
	edges    time.Duration // the busy clock: minus each busy period's start, plus its end
	// started: the core has seen it start (Started); canceled: retired
	// before that, so its start ends as a cancelled one.
	started, canceled bool
	floor             bool // a hybrid's floor tier, filled first (pool.Config.FloorTarget)
}

// BusyTime implements cost.BusyReader with the simulation's clock.
func (in *simInstance) BusyTime(now time.Time) time.Duration {
	b := in.edges
	if in.inflight > 0 {
		b += now.Sub(epoch)
	}
	return b
}

type waiter struct {
	path     string
	at       time.Duration
	cold     bool
	deadline time.Duration
	done     bool
}

type evKind uint8

const (
	evComplete evKind = iota
	evReady           // the cold start is over: Started, then Ready
	evExit            // an instance ended (Exited)
	evCanceled        // a start cancelled by a retire ended (Started with an error)
	evTimeout
)

type event struct {
	at   time.Duration
	seq  uint64
	kind evKind
	inst *simInstance
	w    *waiter
}

// sim replays a trace through the pool's activator semantics, and steps
// the controller's reconciler.Core (the same decisions as live: the
// autoscaler, its windows, starts, drains and backoff) in simulated time,
// applying its effects as a backend whose instances take the measured
// cold start would.
type sim struct {
	cfg     Config
	tm      Timings
	man     *manifest.Manifest
	core    *reconciler.Core
	byID    map[string]*simInstance
	rng     *rand.Rand
	service map[string][]time.Duration
	meter   *cost.Meter
	reqs    *cost.RequestCounter

	now    time.Duration
	events evHeap
	seq    uint64

	instances []*simInstance // every instance not gone
	ready     []*simInstance // in rotation, in the order they were added
	waiters   []*waiter      // FIFO; done ones are skipped
	queued    int
	inflight  int // requests being served, on any instance
	nextID    int

	// The pool's concurrency integral (in flight plus queued).
	cur        int
	integral   float64
	last       time.Duration
	sampled    time.Duration
	lastActive time.Duration
	everActive bool

	// idle is set while ticks would change nothing: they are skipped
	// until the next event or arrival (see quiescent and wake).
	idle bool

	lat, cold *loadgen.Histogram
	res       Result
	lastDone  time.Duration

	// The manifest's prewarm entries and the traffic history they learn
	// from, as the controller keeps them (nil plan: none).
	plan    *prewarm.Plan
	hist    prewarm.History
	learned prewarm.Pattern
}

// Simulate replays tr through a deployment of cfg.Manifest with the
// model's timings tm and returns what it came to, usage and cost included
// (metered by cost.Meter, as live).
func Simulate(tr *trace.Trace, tm Timings, cfg Config) (*Result, error) {
	if err := tm.check(); err != nil {
		return nil, err
	}
	if cfg.Manifest == nil {
		return nil, errors.New("simulate: no manifest")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Prices == nil {
		cfg.Prices = cost.DefaultPrices()
	}
	m := cfg.Manifest
	s := &sim{
		cfg: cfg, tm: tm, man: m, byID: map[string]*simInstance{},
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x73696d)),
		service: tm.Service,
		meter:   cost.NewMeter(cfg.Prices, epoch),
		lat:     loadgen.NewHistogram(),
		cold:    loadgen.NewHistogram(),
	}
	s.res.Mode = m.Mode
	plan, err := prewarm.Compile(m.Prewarm)
	if err != nil {
		return nil, err
	}
	if plan != nil {
		// The floor moves with the clock, not only with traffic: no
		// tick may be skipped.
		s.plan, s.cfg.everyTick = plan, true
	}
	s.reqs = s.meter.Requests(m.Name)
	s.meter.Deployment(m, epoch)
	// The measured stretch starts with the deployment settled: dedicated
	// warm at its minimum (started and ready at once), serverless at zero.
	var effects []reconciler.Effect
	s.core, effects = reconciler.New(reconciler.Config{Name: m.Name, Kind: reconciler.Instances, Backend: backendOf(m),
		NewID: func() string { s.nextID++; return fmt.Sprintf("i%d", s.nextID) }}, m, nil, epoch)
	s.apply(effects)
	for _, in := range s.instances {
		s.step(reconciler.Started{ID: in.id, Addr: in.id, At: epoch})
	}
	s.res.Starts = 0
	s.run(tr)
	return s.finish(tr), nil
}

func (s *sim) at(d time.Duration) time.Time { return epoch.Add(d) }

func (s *sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.events.push(e)
}

func (s *sim) run(tr *trace.Trace) {
	reqs := tr.Requests
	i := 0
	nextTick := s.cfg.Tick
	for {
		// The next thing to happen: an event, an arrival or a tick. Events
		// at an instant go first, then arrivals, then the tick.
		const never = time.Duration(1<<63 - 1)
		evAt, arrAt := never, never
		if len(s.events) > 0 {
			evAt = s.events[0].at
		}
		if i < len(reqs) {
			arrAt = reqs[i].At
		}
		tickAt := nextTick
		if s.idle {
			tickAt = never
		}
		next := min(evAt, arrAt, tickAt)
		// The measured stretch ends once every request is answered and
		// End has passed; what happens later is not measured.
		if i == len(reqs) && s.inflight == 0 && s.queued == 0 && next > s.cfg.End {
			return
		}
		if s.idle {
			nextTick = s.wake(next, nextTick)
		}
		switch {
		case evAt == next:
			e := s.events.pop()
			s.now = e.at
			s.handle(e)
		case arrAt == next:
			s.now = arrAt
			s.arrive(reqs[i])
			i++
		default:
			s.now = nextTick
			s.evaluate()
			nextTick += s.cfg.Tick
			s.idle = !s.cfg.everyTick && s.quiescent()
		}
	}
}

// arrive is pool.Acquire: the least-loaded ready instance with room, or
// the activator queue, which asks for a scale-up at once.
func (s *sim) arrive(r trace.Request) {
	s.statsAdd(1)
	if in := s.pick(); in != nil {
		s.serve(in, r.Path, r.At, false)
		return
	}
	if s.queued >= s.man.Scaling.MaxQueue {
		s.statsAdd(-1)
		s.res.Requests++
		s.res.Errors++ // 503 queue full
		return
	}
	w := &waiter{path: r.Path, at: s.now, cold: len(s.ready) == 0}
	limit := s.man.Timeouts.Request.D()
	if w.cold {
		limit = s.man.Timeouts.Startup.D()
	}
	w.deadline = s.now + limit
	s.waiters = append(s.waiters, w)
	s.queued++
	s.push(event{at: w.deadline, kind: evTimeout, w: w})
	s.evaluate() // OnDemand pokes the loop
}

// pick is pool.pick: fewest in flight, first added on a tie, under the
// container_concurrency limit.
func (s *sim) pick() *simInstance {
	limit := s.man.Scaling.ContainerConcurrency
	if s.man.Mode == manifest.Hybrid {
		// The pool fills floor instances up to the target first.
		target := int(math.Ceil(s.man.Scaling.TargetConcurrency - 1e-9))
		var best *simInstance
		for _, in := range s.ready {
			if !in.floor || in.inflight >= target || (limit > 0 && in.inflight >= limit) {
				continue
			}
			if best == nil || in.inflight < best.inflight {
				best = in
			}
		}
		if best != nil {
			return best
		}
	}
	var best *simInstance
	for _, in := range s.ready {
		if limit > 0 && in.inflight >= limit {
			continue
		}
		if best == nil || in.inflight < best.inflight {
			best = in
		}
	}
	return best
}

func (s *sim) serve(in *simInstance, path string, arrived time.Duration, cold bool) {
	if in.inflight == 0 {
		in.edges -= s.now
	}
	in.inflight++
	s.inflight++
	d := s.serviceTime(path)
	done := s.now + d
	latency := done - arrived + s.tm.Overhead
	s.lat.Record(latency)
	if cold {
		s.res.ColdStarts++
		s.cold.Record(latency)
	}
	s.reqs.Add(latency, cold)
	s.res.Requests++
	s.push(event{at: done, kind: evComplete, inst: in})
}

func (s *sim) serviceTime(path string) time.Duration {
	samples, ok := s.service[path]
	if !ok {
		samples = s.service[""]
		if samples == nil {
			for _, v := range s.service { // any measured path will do
				samples = v
				break
			}
		}
		s.service[path] = samples
	}
	if len(samples) == 1 {
		return samples[0]
	}
	return samples[s.rng.IntN(len(samples))]
}

func (s *sim) handle(e event) {
	switch e.kind {
	case evComplete:
		in := e.inst
		in.inflight--
		s.inflight--
		if in.inflight == 0 {
			in.edges += s.now
		}
		s.lastDone = max(s.lastDone, s.now)
		s.statsAdd(-1)
		if in.state == simDraining && in.inflight == 0 {
			s.push(event{at: s.now + s.tm.Stop, kind: evExit, inst: in})
		}
		if s.queued > 0 {
			s.dispatch()
		}
	case evReady:
		if e.inst.canceled || e.inst.state == simGone {
			return // retired while starting: evCanceled tells the core
		}
		s.step(reconciler.Started{ID: e.inst.id, Addr: e.inst.id, At: s.at(s.now)})
	case evExit:
		if e.inst.state != simGone {
			s.step(reconciler.Exited{ID: e.inst.id, Exit: backend.Exit{At: s.at(s.now)}})
		}
	case evCanceled:
		s.step(reconciler.Started{ID: e.inst.id, Err: context.Canceled})
	case evTimeout:
		w := e.w
		if w.done {
			return
		}
		w.done = true
		s.queued--
		s.statsAdd(-1)
		s.res.Requests++
		s.res.Errors++ // 504
		s.lastDone = max(s.lastDone, s.now)
	}
}

// dispatch is pool.dispatch: free slots go to waiters, oldest first.
func (s *sim) dispatch() {
	for s.queued > 0 {
		in := s.pick()
		if in == nil {
			return
		}
		var w *waiter
		for len(s.waiters) > 0 {
			w = s.waiters[0]
			s.waiters[0] = nil
			s.waiters = s.waiters[1:]
			if !w.done {
				break
			}
			w = nil
		}
		if w == nil {
			return
		}
		w.done = true
		s.queued--
		s.serve(in, w.path, w.at, w.cold)
	}
}

// quiescent reports whether the ticks to come would change nothing until
// the next event or arrival: no request in flight or queued, no panic,
// the size settled, and a whole stable window of zeros in the Window. At
// low rates most of a trace's ticks are such; skipping them is what makes
// long, quiet traces fast to simulate.
func (s *sim) quiescent() bool {
	if s.cur != 0 || s.queued != 0 || !s.core.Settled() {
		return false
	}
	if s.man.Mode == manifest.Serverless && len(s.ready) != 0 && s.man.Scaling.MinInstances() == 0 {
		return false
	}
	return !s.everActive || s.now-s.lastActive > s.man.Scaling.StableWindow.D()+2*autoscaler.WindowBucket(s.man)
}

// wake ends a quiet stretch before something happens at `at`: the ticks
// skipped since nextTick would each have recorded zero concurrency, which
// one record over their span does alike. It returns the next tick due.
func (s *sim) wake(at, nextTick time.Duration) time.Duration {
	s.idle = false
	if nextTick >= at {
		return nextTick
	}
	skipped := (at - nextTick - 1) / s.cfg.Tick // ticks strictly before at, less one
	last := nextTick + skipped*s.cfg.Tick
	now := s.now
	s.now = last
	s.evaluate()
	s.now = now
	return last + s.cfg.Tick
}

// evaluate is the controller's tick: sample the pool, step the core.
func (s *sim) evaluate() {
	avg, dt, lastActive := s.sample()
	var busy map[string]int
	if len(s.ready) > 0 {
		busy = make(map[string]int, len(s.ready))
		for _, in := range s.ready {
			busy[in.id] = in.inflight
		}
	}
	t := reconciler.Tick{Avg: avg, Dt: dt, LastActive: lastActive, Queued: s.queued,
		InFlight: s.inflight, Busy: busy, Leader: true}
	if s.plan != nil { // the controller's prewarmFloor, in simulated time
		if s.plan.Predictive() {
			var changed bool
			if s.hist, changed = prewarm.Observe(s.hist, s.at(s.now), avg > 0 || s.queued > 0); changed {
				s.learned = prewarm.Learn(s.hist)
			}
		}
		t.Floor = prewarm.Floor(s.plan, s.learned, s.at(s.now)).Floor
	}
	s.step(t)
}

func (s *sim) step(ev reconciler.Event) {
	s.apply(s.core.Step(s.at(s.now), ev))
}

// apply carries the core's effects out as the controller's loop and a
// backend would, in simulated time.
func (s *sim) apply(effects []reconciler.Effect) {
	for _, e := range effects {
		switch e := e.(type) {
		case reconciler.StartInstance:
			in := &simInstance{id: e.ID, state: simStarting}
			s.instances = append(s.instances, in)
			s.byID[in.id] = in
			s.res.Starts++
			s.res.Peak = max(s.res.Peak, len(s.instances))
			s.meter.InstanceStarting(s.man.Name, in.id, e.Trigger)
			in.floor = e.Floor
			if s.man.Mode == manifest.Hybrid && !e.Floor {
				s.meter.InstanceTier(s.man.Name, in.id, true, e.Trigger)
			}
			s.push(event{at: s.now + s.tm.ColdStart, kind: evReady, inst: in})
		case reconciler.WatchInstance:
			// The cold start measured runs to ready: ready at once.
			if in := s.byID[e.ID]; in != nil {
				in.started = true
				s.step(reconciler.Ready{ID: e.ID})
			}
		case reconciler.AddToPool:
			in := s.byID[e.ID]
			in.state = simReady
			s.ready = append(s.ready, in)
			s.meter.InstanceReady(s.man.Name, in.id, in, s.at(s.now))
			s.dispatch()
		case reconciler.Retire:
			in := s.byID[e.ID]
			if in == nil {
				continue
			}
			s.retire(in)
		case reconciler.SetTier:
			if in := s.byID[e.ID]; in != nil {
				in.floor = e.Floor
				s.meter.InstanceTier(s.man.Name, in.id, !e.Floor, s.at(s.now))
			}
		case reconciler.Kill:
			s.push(event{at: s.now, kind: evExit, inst: s.byID[e.ID]})
		case reconciler.Gone:
			if in := s.byID[e.ID]; in != nil {
				s.gone(in)
			}
		}
	}
}

// retire takes an instance out of rotation: once its requests are done
// it stops, taking the measured stop time; a start not over yet is
// cancelled, and ends after the stop time too.
func (s *sim) retire(in *simInstance) {
	if !in.started {
		in.canceled = true
		in.state = simDraining
		s.push(event{at: s.now + s.tm.Stop, kind: evCanceled, inst: in})
		return
	}
	in.state = simDraining
	for i, r := range s.ready {
		if r == in {
			s.ready = append(s.ready[:i], s.ready[i+1:]...)
			break
		}
	}
	if in.inflight == 0 {
		s.push(event{at: s.now + s.tm.Stop, kind: evExit, inst: in})
	}
}

func (s *sim) gone(in *simInstance) {
	if in.state == simGone {
		return
	}
	in.state = simGone
	for i, r := range s.instances {
		if r == in {
			s.instances = append(s.instances[:i], s.instances[i+1:]...)
			break
		}
	}
	for i, r := range s.ready {
		if r == in {
			s.ready = append(s.ready[:i], s.ready[i+1:]...)
			break
		}
	}
	delete(s.byID, in.id)
	s.meter.InstanceGone(s.man.Name, in.id, s.at(s.now))
}

// statsAdd and sample are the pool's concurrency integral, in sim time.
func (s *sim) statsAdd(d int) {
	s.integral += float64(s.cur) * float64(s.now-s.last)
	s.last = s.now
	s.cur += d
	if s.cur > 0 || d < 0 {
		s.lastActive, s.everActive = s.now, true
	}
}

func (s *sim) sample() (float64, time.Duration, time.Time) {
	now := max(s.now, s.last)
	s.integral += float64(s.cur) * float64(now-s.last)
	s.last = now
	dt := now - s.sampled // the first sample covers the time since epoch, as the pool's does
	avg := float64(s.cur)
	if dt > 0 {
		avg = s.integral / float64(dt)
	}
	s.integral = 0
	s.sampled = now
	var active time.Time
	switch {
	case s.cur > 0:
		active = s.at(now)
	case s.everActive:
		active = s.at(s.lastActive)
	}
	return avg, dt, active
}

func (s *sim) finish(tr *trace.Trace) *Result {
	end := max(s.cfg.End, tr.Duration(), s.lastDone, s.now)
	u := s.meter.Live(s.at(end)).Models[s.man.Name]
	p := s.cfg.Prices
	r := &s.res
	r.Duration = end
	r.Usage = u
	r.Cost = p.Cost(s.man.Mode, u)
	r.CostIdle = p.IdleCost(s.man.Mode, u)
	if r.Requests > 0 {
		r.CostPer1K = r.Cost / float64(r.Requests) * 1000
	}
	r.Latency = s.lat.Summary()
	r.ColdLatency = s.cold.Summary()
	return r
}
