package reconciler

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// world is a deployment's surroundings in virtual time, for a Core of
// either kind: it applies the core's effects as the controller's loop and
// a backend would (an instance backend: instances start after startDelay
// and become ready at once; a replica platform: replicas become ready
// endpoints startDelay after a Scale, and come back after a crash), keeps
// the requests (waiting and in flight), and feeds back the events.
type world struct {
	t    *testing.T
	kind Kind
	core *Core
	now  time.Time
	tick time.Duration

	startDelay time.Duration
	failStarts int // the next n starts fail
	nextID     int

	// Instance backend: what runs.
	running map[string]bool
	// Replica platform: the replicas asked for and the ready pods.
	replicas int
	pods     []string
	podSeq   int

	pool     map[string]bool // instances in rotation
	draining map[string]bool
	queued   int
	inflight int
	// integral of concurrency since the last tick (request-nanoseconds),
	// and when it was last brought up to date.
	integral   float64
	lastChange time.Time
	lastTickAt time.Time
	lastActive time.Time

	pending  []timed // events due later
	effects  []Effect
	failed   []FailWaiters
	nextTick time.Time
	floor    int // Tick.Floor of every tick
}

type timed struct {
	at time.Time
	ev Event
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newWorld(t *testing.T, kind Kind, m *manifest.Manifest, adopted []backend.Instance) *world {
	t.Helper()
	w := &world{t: t, kind: kind, now: epoch, tick: time.Second, startDelay: 300 * time.Millisecond,
		running: map[string]bool{}, pool: map[string]bool{}, draining: map[string]bool{},
		lastChange: epoch, lastTickAt: epoch, lastActive: epoch}
	for _, a := range adopted {
		w.running[a.ID] = true
	}
	core, effects := New(Config{Name: m.Name, Kind: kind, Backend: "test", NewID: func() string {
		w.nextID++
		return fmt.Sprintf("i%02d", w.nextID)
	}}, m, adopted, w.now)
	w.core = core
	w.nextTick = w.now.Add(w.tick)
	w.apply(effects)
	if kind == Replicas {
		w.step(w.sample()) // the loop's first tick
	}
	return w
}

func (w *world) conc() float64 { return float64(w.queued + w.inflight) }

// touch brings the concurrency integral up to now.
func (w *world) touch() {
	w.integral += w.conc() * float64(w.now.Sub(w.lastChange))
	w.lastChange = w.now
	if w.conc() > 0 {
		w.lastActive = w.now
	}
}

// sample is pool.Sample: the average concurrency since the last one.
func (w *world) sample() Tick {
	w.touch()
	dt := w.now.Sub(w.lastTickAt)
	avg := w.conc()
	if dt > 0 {
		avg = w.integral / float64(dt)
	}
	w.integral, w.lastTickAt = 0, w.now
	busy := map[string]int{}
	for id := range w.pool {
		busy[id] = 0
	}
	return Tick{Avg: avg, Dt: dt, LastActive: w.lastActive, Queued: w.queued, InFlight: w.inflight, Busy: busy, Leader: true, Floor: w.floor}
}

func (w *world) step(ev Event) {
	w.apply(w.core.Step(w.now, ev))
}

func (w *world) later(d time.Duration, ev Event) {
	w.pending = append(w.pending, timed{w.now.Add(d), ev})
	sort.SliceStable(w.pending, func(i, j int) bool { return w.pending[i].at.Before(w.pending[j].at) })
}

func (w *world) apply(effects []Effect) {
	for i := 0; i < len(effects); i++ {
		e := effects[i]
		w.effects = append(w.effects, e)
		switch e := e.(type) {
		case StartInstance:
			if w.failStarts > 0 {
				w.failStarts--
				w.later(w.startDelay, Started{ID: e.ID, Err: errors.New("exec: no such file")})
				continue
			}
			w.later(w.startDelay, Started{ID: e.ID, Addr: "addr-" + e.ID, At: w.now})
		case WatchInstance:
			w.running[e.ID] = true
			w.later(0, Ready{ID: e.ID})
		case AddToPool:
			w.pool[e.ID] = true
			w.dispatch()
		case Retire:
			if w.pool[e.ID] {
				delete(w.pool, e.ID)
				w.draining[e.ID] = true
			}
			if w.running[e.ID] {
				w.later(100*time.Millisecond, Exited{ID: e.ID, Exit: backend.Exit{Code: 0, At: w.now}})
			}
		case Kill:
			w.later(0, Exited{ID: e.ID, Exit: backend.Exit{Signal: "killed", At: w.now}})
		case Gone:
			delete(w.pool, e.ID)
			delete(w.draining, e.ID)
			delete(w.running, e.ID)
		case FailWaiters:
			w.touch()
			w.failed = append(w.failed, e)
			w.queued = 0
		case ClosePool:
			w.touch()
			w.queued = 0
		case ApplyObjects:
			effects = append(effects, w.core.Step(w.now, Applied{Replicas: w.replicas})...)
		case Scale:
			w.scaleTo(e.N)
			effects = append(effects, w.core.Step(w.now, Scaled{N: e.N})...)
		}
	}
}

// scaleTo is the platform's reaction to a new replica count.
func (w *world) scaleTo(n int) {
	old := w.replicas
	w.replicas = n
	if n < len(w.pods) {
		w.pods = w.pods[:n]
		w.later(0, Endpoints{Set: w.endpointSet()})
	}
	for i := old; i < n; i++ {
		w.later(w.startDelay, podReady{})
	}
}

type podReady struct{ Tick } // an internal marker: a pod became ready

func (w *world) endpointSet() []backend.Instance {
	var set []backend.Instance
	for _, p := range w.pods {
		set = append(set, backend.Instance{ID: p, Addr: "addr-" + p})
	}
	return set
}

// dispatch serves waiting requests on instances in rotation (container
// concurrency unbounded: one instance takes them all).
func (w *world) dispatch() {
	if len(w.pool) > 0 && w.queued > 0 {
		w.touch()
		w.inflight += w.queued
		w.queued = 0
	}
}

// arrive queues n requests (the pool pokes the loop: a Tick at once).
func (w *world) arrive(n int) {
	w.touch()
	w.queued += n
	w.dispatch()
	if w.queued > 0 {
		w.step(w.sample())
	}
}

// finish ends n requests in flight.
func (w *world) finish(n int) {
	w.touch()
	w.inflight -= n
	if w.inflight < 0 {
		w.t.Fatalf("finished more requests than were in flight")
	}
}

// crash ends a running instance by itself (instances), or a ready pod
// that the platform restarts (replicas).
func (w *world) crash(id string) {
	if w.kind == Replicas {
		for i, p := range w.pods {
			if p == id {
				w.pods = append(w.pods[:i:i], w.pods[i+1:]...)
				w.step(Endpoints{Set: w.endpointSet()})
				w.later(w.startDelay, podReady{})
				return
			}
		}
		w.t.Fatalf("no pod %s", id)
	}
	w.step(Exited{ID: id, Exit: backend.Exit{Code: 137, Signal: "killed", At: w.now}})
}

// advance runs virtual time forward: due events, and ticks.
func (w *world) advance(d time.Duration) {
	end := w.now.Add(d)
	for {
		next := w.nextTick
		if len(w.pending) > 0 && !w.pending[0].at.After(next) {
			next = w.pending[0].at
		}
		if next.After(end) {
			w.now = end
			w.touch()
			return
		}
		w.now = next
		w.touch()
		if len(w.pending) > 0 && !w.pending[0].at.After(w.nextTick) {
			ev := w.pending[0]
			w.pending = w.pending[1:]
			if _, ok := ev.ev.(podReady); ok {
				if len(w.pods) < w.replicas {
					w.podSeq++
					w.pods = append(w.pods, fmt.Sprintf("pod%02d", w.podSeq))
					w.step(Endpoints{Set: w.endpointSet()})
				}
				continue
			}
			if ex, ok := ev.ev.(Exited); ok && !w.running[ex.ID] {
				continue
			}
			w.step(ev.ev)
			continue
		}
		w.nextTick = w.nextTick.Add(w.tick)
		w.step(w.sample())
	}
}

// ready returns the instances in rotation.
func (w *world) ready() int { return len(w.pool) }

// count returns how many effects of type T were emitted since mark.
func count[T Effect](w *world, mark int) int {
	n := 0
	for _, e := range w.effects[mark:] {
		if _, ok := e.(T); ok {
			n++
		}
	}
	return n
}

// starts returns how many instances (or replicas) were asked for since mark.
func (w *world) starts(mark int) int {
	if w.kind == Instances {
		return count[StartInstance](w, mark)
	}
	asked, before := 0, -1
	for _, e := range w.effects[:mark] {
		if s, ok := e.(Scale); ok {
			before = s.N
		}
	}
	before = max(before, 0)
	for _, e := range w.effects[mark:] {
		if s, ok := e.(Scale); ok {
			if s.N > before {
				asked += s.N - before
			}
			before = s.N
		}
	}
	return asked
}
