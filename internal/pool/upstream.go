package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"tandem/internal/problem"
)

// exitNewsWait bounds how long a failed call waits to learn whether its
// instance died: a broken connection arrives before the backend observes
// the exit, and a container engine reports an OOM kill up to a second later.
const exitNewsWait = 2 * time.Second

// UpstreamError explains a failed call to an instance: it died (502, with
// how), it did not answer in time (504), or it could not be reached (502).
//
// It waits up to exitNewsWait for news of the instance's exit only when the
// call failed by itself: a call that ctx ended (the client left, or
// timeouts.request) is answered at once, so its slot is not held longer.
func UpstreamError(ctx context.Context, model string, in *Instance, err error) *problem.Error {
	wait := exitNewsWait
	if ctx.Err() != nil {
		wait = 0
	}
	if e, ok := in.Exited(wait); ok {
		pe := problem.New(http.StatusBadGateway, "instance_died",
			fmt.Sprintf("model %q: instance %s died while serving the request (%s); see `tandem logs %s`", model, in.ID, e, model))
		if e.OOM {
			pe.Code = "instance_oom"
		}
		return pe
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return problem.New(http.StatusGatewayTimeout, "request_timeout",
			fmt.Sprintf("model %q: instance %s did not answer within timeouts.request", model, in.ID))
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return problem.New(499, "client_closed", "the client closed the request")
	}
	return problem.New(http.StatusBadGateway, "upstream_error",
		fmt.Sprintf("model %q: instance %s: %v", model, in.ID, err))
}

// Do sends req to a ready instance, waking the deployment from zero if need
// be, and returns the instance's response. The slot is held until the
// caller closes resp.Body. coldStart is true when the call waited for an
// instance to start. req's URL path and query are sent as they are.
func (p *Pool) Do(ctx context.Context, req *http.Request) (resp *http.Response, coldStart bool, err error) {
	lease, err := p.Acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	out := req.Clone(ctx)
	out.URL.Scheme = "http"
	out.URL.Host = lease.Instance.Addr
	out.Host = ""
	out.RequestURI = ""
	resp, err = lease.Instance.Raw.RoundTrip(out)
	if err != nil {
		lease.Release()
		return nil, lease.ColdStart, UpstreamError(ctx, p.cfg.Load().Name, lease.Instance, err)
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, lease: lease}
	return resp, lease.ColdStart, nil
}

type releasingBody struct {
	io.ReadCloser
	lease *Lease
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.lease.Release()
	return err
}
