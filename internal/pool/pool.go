// Package pool is the request-path view of one deployment: the set of ready
// instances (an immutable snapshot read without locks), the balancer that
// picks one by least outstanding requests while honouring a per-instance
// concurrency limit, and the activator queue that holds requests while no
// instance has room.
//
// Ownership: the controller owns membership (Add, Remove, Fail, Close); the
// request path only reads the snapshot and moves atomics. See doc.go.
package pool

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/problem"
)

// Sentinel errors the gateway maps to HTTP statuses.
var (
	// ErrQueueFull means max_queue requests are already waiting.
	ErrQueueFull = errors.New("queue full")
	// ErrStartTimeout means no instance had room within the wait deadline.
	ErrStartTimeout = errors.New("no instance became ready in time")
	// ErrClosed means the deployment was deleted while the request waited.
	ErrClosed = errors.New("deployment deleted")
)

func init() {
	problem.Register(ErrQueueFull, http.StatusServiceUnavailable, "queue_full", time.Second)
	problem.Register(ErrStartTimeout, http.StatusGatewayTimeout, "start_timeout", time.Second)
	problem.Register(ErrClosed, http.StatusNotFound, "model_not_found", 0)
}

// Config is a pool's settings; the controller sets them from the manifest.
type Config struct {
	Name string
	// MaxQueue bounds the requests waiting for room.
	MaxQueue int
	// ContainerConcurrency limits in-flight requests per instance; 0 = no limit.
	ContainerConcurrency int
	// StartupTimeout bounds a wait while no instance is ready (a cold start).
	StartupTimeout time.Duration
	// BusyTimeout bounds a wait while instances are ready but all full.
	BusyTimeout time.Duration
	// OnDemand is called, without blocking, when a request starts waiting:
	// the controller scales up at once instead of at its next tick.
	OnDemand func()
	// FloorTarget, when > 0, makes the balancer fill a hybrid deployment's
	// floor instances first, each up to this many requests in flight,
	// and send only the overflow to burst instances.
	FloorTarget int64
}

// Pool is safe for concurrent use.
type Pool struct {
	cfg   atomic.Pointer[Config]
	ready atomic.Pointer[[]*Instance]

	queued atomic.Int64 // waiters, read on the release fast path

	mu      sync.Mutex // guards waiters and closed, serialises snapshot writes
	waiters list.List  // of *waiter, FIFO
	closed  bool

	stats stats
}

type waiter struct {
	ch    chan result // buffered 1; receives exactly once
	cold  bool
	since time.Time
}

type result struct {
	inst *Instance
	err  error
}

// New returns an empty pool.
func New(cfg Config) *Pool {
	p := &Pool{}
	p.SetConfig(cfg)
	empty := []*Instance{}
	p.ready.Store(&empty)
	p.stats.start(time.Now())
	return p
}

// SetConfig replaces the settings (on a manifest update). Waiting requests
// keep the deadlines they started with.
func (p *Pool) SetConfig(cfg Config) {
	if cfg.OnDemand == nil {
		cfg.OnDemand = func() {}
	}
	p.cfg.Store(&cfg)
	for _, in := range *p.snapshot() {
		in.limit.Store(int64(cfg.ContainerConcurrency))
	}
}

func (p *Pool) snapshot() *[]*Instance {
	if s := p.ready.Load(); s != nil {
		return s
	}
	return &[]*Instance{}
}

// Lease is a slot on an instance, held for one request.
type Lease struct {
	Instance *Instance
	// ColdStart is true when the request waited for an instance to start.
	ColdStart bool
	// Waited is how long the request was queued (0 when it was not).
	Waited time.Duration
	pool   *Pool
	done   atomic.Bool
}

// Release gives the slot back. It is safe to call more than once.
func (l *Lease) Release() {
	if !l.done.CompareAndSwap(false, true) {
		return
	}
	l.Instance.release()
	l.pool.stats.add(-1, time.Now())
	if l.pool.queued.Load() > 0 {
		l.pool.dispatch()
	}
}

// Acquire returns a lease on a ready instance with room. When none has room
// it waits in the activator queue, after asking for a scale-up, until an
// instance has room, the wait deadline passes (ErrStartTimeout), the queue
// is full (ErrQueueFull, at once), or ctx is done.
func (p *Pool) Acquire(ctx context.Context) (*Lease, error) {
	p.stats.add(1, time.Now())
	if in := p.pick(); in != nil {
		return &Lease{Instance: in, pool: p}, nil
	}
	l, err := p.wait(ctx)
	if err != nil {
		p.stats.add(-1, time.Now())
	}
	return l, err
}

// pick chooses the ready instance with the fewest outstanding requests and
// room under the limit, and takes a slot on it. Nil when none has room.
func (p *Pool) pick() *Instance {
	if ft := p.cfg.Load().FloorTarget; ft > 0 {
		if in := p.pickFloor(ft); in != nil {
			return in
		}
	}
	for attempt := 0; attempt < 4; attempt++ {
		var best *Instance
		var bestN int64
		for _, in := range *p.snapshot() {
			n := in.inflight.Load()
			if lim := in.limit.Load(); lim > 0 && n >= lim {
				continue
			}
			if best == nil || n < bestN {
				best, bestN = in, n
			}
		}
		if best == nil {
			return nil
		}
		if best.tryAcquire() {
			return best
		}
	}
	return nil
}

// pickFloor takes a slot on the least busy floor instance with fewer than
// target requests in flight; nil when every floor instance is at target.
func (p *Pool) pickFloor(target int64) *Instance {
	for attempt := 0; attempt < 4; attempt++ {
		var best *Instance
		var bestN int64
		for _, in := range *p.snapshot() {
			if !in.floor.Load() {
				continue
			}
			n := in.inflight.Load()
			if n >= target {
				continue
			}
			if lim := in.limit.Load(); lim > 0 && n >= lim {
				continue
			}
			if best == nil || n < bestN {
				best, bestN = in, n
			}
		}
		if best == nil {
			return nil
		}
		if best.tryAcquire() {
			return best
		}
	}
	return nil
}

func (p *Pool) wait(ctx context.Context) (*Lease, error) {
	cfg := p.cfg.Load()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("model %q: %w", cfg.Name, ErrClosed)
	}
	// Count ourselves as queued before the last look, so that a Release
	// racing with us either frees the slot we see or sees us queued.
	p.queued.Add(1)
	if in := p.pick(); in != nil {
		p.queued.Add(-1)
		p.mu.Unlock()
		return &Lease{Instance: in, pool: p}, nil
	}
	if p.waiters.Len() >= cfg.MaxQueue {
		p.queued.Add(-1)
		p.mu.Unlock()
		return nil, fmt.Errorf("model %q: %d requests already waiting (scaling.max_queue): %w", cfg.Name, cfg.MaxQueue, ErrQueueFull)
	}
	w := &waiter{ch: make(chan result, 1), cold: len(*p.snapshot()) == 0, since: time.Now()}
	el := p.waiters.PushBack(w)
	p.mu.Unlock()
	cfg.OnDemand()

	limit := cfg.BusyTimeout
	if w.cold {
		limit = cfg.StartupTimeout
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var err error
	select {
	case r := <-w.ch:
		return p.leaseFrom(w, r)
	case <-timer.C:
		if w.cold {
			err = fmt.Errorf("model %q: no instance became ready within timeouts.startup (%s): %w", cfg.Name, limit, ErrStartTimeout)
		} else {
			err = fmt.Errorf("model %q: every instance stayed busy for %s: %w", cfg.Name, limit, ErrStartTimeout)
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	if el.Value != nil {
		p.waiters.Remove(el)
		el.Value = nil
		p.queued.Add(-1)
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	// We were handed a result just as we gave up: honour it.
	return p.leaseFrom(w, <-w.ch)
}

func (p *Pool) leaseFrom(w *waiter, r result) (*Lease, error) {
	if r.err != nil {
		return nil, r.err
	}
	return &Lease{Instance: r.inst, pool: p, ColdStart: w.cold, Waited: time.Since(w.since)}, nil
}

// dispatch hands free slots to waiters, oldest first.
func (p *Pool) dispatch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.waiters.Len() > 0 {
		in := p.pick()
		if in == nil {
			return
		}
		p.popWaiter() <- result{inst: in}
	}
}

// popWaiter removes the oldest waiter; p.mu must be held.
func (p *Pool) popWaiter() chan result {
	el := p.waiters.Front()
	w := el.Value.(*waiter)
	p.waiters.Remove(el)
	el.Value = nil
	p.queued.Add(-1)
	return w.ch
}

// Add puts a ready instance into rotation and serves waiting requests.
func (p *Pool) Add(in *Instance) {
	in.limit.Store(int64(p.cfg.Load().ContainerConcurrency))
	p.mu.Lock()
	old := *p.snapshot()
	next := make([]*Instance, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, in)
	p.ready.Store(&next)
	p.mu.Unlock()
	p.dispatch()
}

// Remove takes an instance out of rotation (to drain it, or because it
// died). Requests already on it are not touched.
func (p *Pool) Remove(id string) *Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.snapshot()
	next := make([]*Instance, 0, len(old))
	var gone *Instance
	for _, in := range old {
		if in.ID == id {
			gone = in
			continue
		}
		next = append(next, in)
	}
	p.ready.Store(&next)
	return gone
}

// Ready returns the instances in rotation. The slice must not be modified.
func (p *Pool) Ready() []*Instance { return *p.snapshot() }

// Fail answers every waiting request with err (for example when the only
// starting instance exited at once), instead of letting them time out.
func (p *Pool) Fail(err error) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for p.waiters.Len() > 0 {
		p.popWaiter() <- result{err: err}
		n++
	}
	return n
}

// Close fails waiting requests with ErrClosed and refuses new waits.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Fail(fmt.Errorf("model %q: %w", p.cfg.Load().Name, ErrClosed))
}

// Queued returns the number of waiting requests.
func (p *Pool) Queued() int { return int(p.queued.Load()) }

// InFlight returns the requests being served by instances in rotation.
func (p *Pool) InFlight() int {
	n := int64(0)
	for _, in := range *p.snapshot() {
		n += in.inflight.Load()
	}
	return int(n)
}

// Sample returns the time-weighted average concurrency (in flight plus
// queued) since the previous Sample, the length of that interval, and the
// last moment concurrency was above zero (now, when it still is).
func (p *Pool) Sample(now time.Time) (avg float64, dt time.Duration, lastActive time.Time) {
	return p.stats.sample(now)
}

// stats integrates concurrency over time for the autoscaler.
type stats struct {
	mu         sync.Mutex
	cur        int64
	integral   float64 // request-nanoseconds since the last sample
	last       time.Time
	sampled    time.Time
	lastActive time.Time
}

func (s *stats) add(d int64, now time.Time) {
	s.mu.Lock()
	s.integral += float64(s.cur) * float64(now.Sub(s.last))
	s.last = now
	s.cur += d
	if s.cur > 0 || d < 0 {
		s.lastActive = now
	}
	s.mu.Unlock()
}

// start begins the integral at now. A new pool is not idle since
// forever, and the first sample covers the time since start: requests
// that come and go before the deployment's first tick (a wake from zero
// right after a deploy) count.
func (s *stats) start(now time.Time) {
	s.last, s.lastActive, s.sampled = now, now, now
}

func (s *stats) sample(now time.Time) (float64, time.Duration, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.last) {
		now = s.last
	}
	s.integral += float64(s.cur) * float64(now.Sub(s.last))
	s.last = now
	start := s.sampled
	if start.IsZero() {
		start = now
	}
	dt := now.Sub(start)
	avg := float64(s.cur)
	if dt > 0 {
		avg = s.integral / float64(dt)
	}
	s.integral = 0
	s.sampled = now
	active := s.lastActive
	if s.cur > 0 {
		active = now
	}
	return avg, dt, active
}
