package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/backend"
)

// Instance is one ready (or draining) instance as the request path sees it.
type Instance struct {
	ID   string
	Addr string
	// Raw is the instance's one connection pool: every call to it (the
	// gateway's forwarder, the v2 adapters' upstream) goes over it.
	Raw *RawTransport
	// Startup, when not nil, tells how the instance started (the
	// controller sets it before Add); nil for an adopted instance.
	Startup *Startup

	inflight atomic.Int64
	limit    atomic.Int64
	draining atomic.Bool
	floor    atomic.Bool // a hybrid deployment's floor tier (Config.FloorTarget)

	// The busy clock (cost.BusyReader), touched only when in-flight moves
	// between 0 and 1, never per request otherwise.
	busyMu    sync.Mutex
	busySince time.Time // zero while idle
	busyTotal time.Duration

	exitOnce sync.Once
	exited   chan struct{}
	exit     atomic.Pointer[backend.Exit]
}

// SetFloor puts the instance in (or out of) a hybrid deployment's floor
// tier, which the balancer fills first.
func (in *Instance) SetFloor(floor bool) { in.floor.Store(floor) }

// Floor reports whether the instance is in the floor tier.
func (in *Instance) Floor() bool { return in.floor.Load() }

// NewInstance returns an instance with its connection pool ready.
func NewInstance(id, addr string) *Instance {
	return &Instance{
		ID:     id,
		Addr:   addr,
		Raw:    &RawTransport{Addr: addr},
		exited: make(chan struct{}),
	}
}

// tryAcquire takes a slot unless the limit is reached or the instance drains.
func (in *Instance) tryAcquire() bool {
	for {
		n := in.inflight.Load()
		if lim := in.limit.Load(); lim > 0 && n >= lim {
			return false
		}
		if in.inflight.CompareAndSwap(n, n+1) {
			if n == 0 {
				in.busyEdge()
			}
			break
		}
	}
	// Checked after taking the slot: Drain sets the flag, then watches the
	// count, so one of the two always sees the other.
	if in.draining.Load() {
		in.release()
		return false
	}
	return true
}

// release gives a slot back, ending the busy period when it was the last.
func (in *Instance) release() {
	if in.inflight.Add(-1) == 0 {
		in.busyEdge()
	}
}

// busyEdge brings the busy clock in line with the in-flight count. Edges of
// concurrent requests may arrive here out of order; reading the count under
// the lock, rather than trusting the edge, keeps the clock consistent.
func (in *Instance) busyEdge() {
	now := time.Now()
	in.busyMu.Lock()
	defer in.busyMu.Unlock()
	busy := in.inflight.Load() > 0
	switch {
	case busy && in.busySince.IsZero():
		in.busySince = now
	case !busy && !in.busySince.IsZero():
		in.busyTotal += now.Sub(in.busySince)
		in.busySince = time.Time{}
	}
}

// BusyTime returns how long, in total up to now, the instance had at least
// one request in flight (cost.BusyReader). It does not block for long.
func (in *Instance) BusyTime(now time.Time) time.Duration {
	in.busyMu.Lock()
	defer in.busyMu.Unlock()
	t := in.busyTotal
	if !in.busySince.IsZero() && now.After(in.busySince) {
		t += now.Sub(in.busySince)
	}
	return t
}

// InFlight returns the requests being served by this instance now.
func (in *Instance) InFlight() int { return int(in.inflight.Load()) }

// Drain stops new requests from reaching the instance and blocks until the
// ones in flight have finished or ctx is done. Call Pool.Remove first.
func (in *Instance) Drain(ctx context.Context) error {
	in.draining.Store(true)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for in.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-in.exited:
			return nil
		case <-t.C:
		}
	}
	return nil
}

// MarkExited records how the instance ended; requests failing on it then
// report that instead of a bare connection error.
func (in *Instance) MarkExited(e backend.Exit) {
	in.exitOnce.Do(func() {
		in.exit.Store(&e)
		in.draining.Store(true)
		close(in.exited)
		in.Raw.CloseIdleConnections()
	})
}

// Exited returns how the instance ended, waiting up to d for the news (a
// failed connection usually arrives a moment before the exit is observed).
func (in *Instance) Exited(d time.Duration) (backend.Exit, bool) {
	if e := in.exit.Load(); e != nil {
		return *e, true
	}
	if d <= 0 {
		return backend.Exit{}, false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-in.exited:
		return *in.exit.Load(), true
	case <-t.C:
		return backend.Exit{}, false
	}
}
