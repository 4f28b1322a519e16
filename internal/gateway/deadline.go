package gateway

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"tandem/internal/controller"
	"tandem/internal/pool"
	"tandem/internal/problem"
)

// Deadline-aware cold starts: a request that says how long it may wait
// (X-Tandem-Deadline on the HTTP doors, the call's own deadline on gRPC,
// else the deployment's timeouts.deadline) is not made to wait for a cold
// start that is expected to take longer. When no instance is warm (ready
// with room) and the deployment's measured cold start exceeds the
// deadline, the request goes to the fallback deployment if that one has a
// warm instance, else it is answered at once with 503
// cold_start_exceeds_deadline, Retry-After and the estimate; either way an
// instance is started, so a retry finds one warm. Before any start was
// measured there is no estimate, and the request waits as any other.
const (
	// HeaderDeadline is how long a request may wait for an instance, as a
	// Go duration ("150ms", "2s").
	HeaderDeadline = "X-Tandem-Deadline"
	// HeaderColdStartEstimate is the expected cold start, on a 503
	// cold_start_exceeds_deadline.
	HeaderColdStartEstimate = "X-Tandem-Cold-Start-Estimate"
	// HeaderFallback names the deployment that answered in place of the
	// one asked for.
	HeaderFallback = "X-Tandem-Fallback"
	// CodeColdStartExceedsDeadline is the problem code of the 503.
	CodeColdStartExceedsDeadline = "cold_start_exceeds_deadline"
)

// headerDeadline is an X-Tandem-Deadline header, parsed once by ServeHTTP
// and carried in the request's context to whichever door serves it. w is
// the client's response writer, for the fallback header on doors that do
// not see it (v2 REST).
type headerDeadline struct {
	d   time.Duration
	err error
	w   http.ResponseWriter
}

type deadlineKey struct{}

// withDeadline parses the header of r, if any, into its context. Requests
// without it pass unchanged (no allocation).
func withDeadline(w http.ResponseWriter, r *http.Request) *http.Request {
	v := r.Header.Get(HeaderDeadline)
	if v == "" {
		return r
	}
	hd := &headerDeadline{w: w}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		hd.err = problem.New(http.StatusBadRequest, "invalid_deadline",
			fmt.Sprintf("%q is not a duration: give a number with a unit, such as 150ms or 2s", v)).WithField(HeaderDeadline)
	case d <= 0:
		hd.err = problem.New(http.StatusBadRequest, "invalid_deadline", fmt.Sprintf("%q must be positive", v)).WithField(HeaderDeadline)
	}
	hd.d = d
	return r.WithContext(context.WithValue(r.Context(), deadlineKey{}, hd))
}

// deadlineOf returns the request's deadline for waiting: the header, the
// context's own deadline (gRPC), or the deployment's timeouts.deadline;
// 0 is none.
func deadlineOf(ctx context.Context, d *controller.Deployment) (time.Duration, *headerDeadline, error) {
	if hd, ok := ctx.Value(deadlineKey{}).(*headerDeadline); ok {
		return hd.d, hd, hd.err
	}
	if at, ok := ctx.Deadline(); ok {
		return max(time.Until(at), 1), nil, nil
	}
	return d.Manifest().Timeouts.Deadline.D(), nil, nil
}

// acquireWithin is acquire for a request that may carry a deadline. It
// returns the lease and the deployment whose instance took the request:
// d, or its fallback.
func (g *Gateway) acquireWithin(ctx context.Context, d *controller.Deployment) (*pool.Lease, *controller.Deployment, error) {
	limit, hd, err := deadlineOf(ctx, d)
	if err != nil {
		return nil, nil, err
	}
	if limit <= 0 {
		l, err := acquire(ctx, d.Pool)
		return l, d, err
	}
	est := d.ColdStartEstimate()
	if est <= limit { // 0: nothing measured yet
		l, err := acquire(ctx, d.Pool)
		return l, d, err
	}
	if l := d.Pool.TryAcquire(); l != nil {
		return l, d, nil
	}
	d.Wake(est) // so that a retry finds an instance warm
	if name := d.Manifest().Fallback; name != "" {
		if fd, ok := g.models.Lookup(name); ok {
			if l := fd.Pool.TryAcquire(); l != nil {
				markFallback(ctx, hd, name)
				return l, fd, nil
			}
		}
	}
	name := d.Manifest().Name
	retry := (est + time.Second - 1) / time.Second
	shown := est.Round(time.Millisecond)
	if shown == 0 { // a start under half a millisecond is not "0s"
		shown = est.Round(time.Microsecond)
	}
	e := problem.New(http.StatusServiceUnavailable, CodeColdStartExceedsDeadline, fmt.Sprintf(
		"model %q: no instance is warm and its expected cold start (%s) exceeds the request's deadline (%s); an instance is starting: retry in %ds",
		name, shown, limit, retry))
	e.RetryAfter = est
	e.Header = http.Header{HeaderColdStartEstimate: {shown.String()}}
	return nil, nil, e
}

// markFallback tells the client which deployment answered, where the door
// cannot do it itself: gRPC's header metadata, or the writer of a request
// that gave X-Tandem-Deadline. Pass-through and OpenAI set it themselves.
func markFallback(ctx context.Context, hd *headerDeadline, name string) {
	if hd != nil {
		hd.w.Header().Set(HeaderFallback, name)
		return
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-tandem-fallback", name)) // an error outside gRPC: nothing to do
}
