package gateway

import (
	"context"
	"time"

	"tandem/internal/pool"
	"tandem/internal/tracing"
)

// SpanNamer is an optional ability of a Stage: the name of its span in a
// request's trace (tracing.SpanAdmit otherwise).
type SpanNamer interface{ SpanName() string }

// admit runs one admission stage, in a span of its own when the request is
// traced.
func admit(ctx context.Context, s Stage, ex *Exchange) error {
	if !ex.span.On() {
		return s.Admit(ctx, ex)
	}
	name := tracing.SpanAdmit
	if n, ok := s.(SpanNamer); ok {
		name = n.SpanName()
	}
	sctx, sp := ex.span.Start(ctx, name)
	err := s.Admit(sctx, ex)
	sp.End(err)
	return err
}

// acquire leases an instance of p for the request in ctx (p.Acquire), and
// draws the wait, when there was one, and the cold start it waited for in
// the request's trace.
func acquire(ctx context.Context, p *pool.Pool) (*pool.Lease, error) {
	if !tracing.Enabled() {
		return p.Acquire(ctx)
	}
	start := time.Now()
	lease, err := p.Acquire(ctx)
	tracing.Queued(ctx, start, lease, err)
	return lease, err
}
