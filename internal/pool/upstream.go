package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"tandem/internal/problem"
)

// exitNewsWait bounds how long a failed call waits to learn whether its
// instance died: a broken connection arrives before the backend observes
// the exit, and a container engine reports an OOM kill up to a second later.
const exitNewsWait = 2 * time.Second

// The codes of UpstreamError: the instance had taken the call and failed
// it (the pipeline meters such calls as served).
const (
	CodeInstanceDied   = "instance_died"
	CodeInstanceOOM    = "instance_oom"
	CodeRequestTimeout = "request_timeout"
	CodeUpstreamError  = "upstream_error"
)

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
		pe := problem.New(http.StatusBadGateway, CodeInstanceDied,
			fmt.Sprintf("model %q: instance %s died while serving the request (%s); see `tandem logs %s`", model, in.ID, e, model))
		if e.OOM {
			pe.Code = CodeInstanceOOM
		}
		return pe
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return problem.New(http.StatusGatewayTimeout, CodeRequestTimeout,
			fmt.Sprintf("model %q: instance %s did not answer within timeouts.request", model, in.ID))
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return problem.New(499, "client_closed", "the client closed the request")
	}
	return problem.New(http.StatusBadGateway, CodeUpstreamError,
		fmt.Sprintf("model %q: instance %s: %v", model, in.ID, err))
}
