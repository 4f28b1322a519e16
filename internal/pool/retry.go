package pool

import (
	"context"
	"time"
)

// AcquireExcept is Acquire for a retry after a call to failed did not get
// an answer: it takes a slot on the least-loaded ready instance other than
// failed when one has room, without waiting. Otherwise it acquires as
// Acquire does (waiting in the activator queue when no instance has room),
// which may give failed again when it is the only instance with room and
// has not been found dead: a pooled connection that the instance had
// closed is a failure on an instance that still serves. A failed instance
// known to have exited is never picked (it drains). It blocks like
// Acquire; safe for concurrent use.
func (p *Pool) AcquireExcept(ctx context.Context, failed *Instance) (*Lease, error) {
	p.stats.add(1, time.Now())
	if in := p.pickExcept(failed); in != nil {
		return &Lease{Instance: in, pool: p}, nil
	}
	p.stats.add(-1, time.Now())
	return p.Acquire(ctx)
}

// pickExcept is pick without failed.
func (p *Pool) pickExcept(failed *Instance) *Instance {
	for attempt := 0; attempt < 4; attempt++ {
		var best *Instance
		var bestN int64
		for _, in := range *p.snapshot() {
			if in == failed {
				continue
			}
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
