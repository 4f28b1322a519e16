package pool

import "time"

// TryAcquire returns a lease on a ready instance with room, or nil at once
// when none has room: it never queues a request or asks for a scale-up.
// The gateway uses it for requests that must not wait for a cold start.
func (p *Pool) TryAcquire() *Lease {
	in := p.pick()
	if in == nil {
		return nil
	}
	p.stats.add(1, time.Now())
	return &Lease{Instance: in, pool: p}
}
