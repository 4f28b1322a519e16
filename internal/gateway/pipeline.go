package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"tandem/internal/controller"
	"tandem/internal/inference"
	"tandem/internal/pool"
	"tandem/internal/problem"
	"tandem/internal/shadow"
	"tandem/internal/tracing"
)

// Protocol names the door an exchange came in through; it labels metrics.
type Protocol = string

// The protocols the gateway speaks.
const (
	ProtocolHTTP Protocol = "http"                 // pass-through /models/{name}/...
	ProtocolV2   Protocol = inference.ProtocolREST // Open Inference Protocol, REST
	ProtocolGRPC Protocol = inference.ProtocolGRPC // Open Inference Protocol, gRPC
)

// Exchange is one client request on its way through the pipeline. The
// adapter of its protocol creates it with Begin and ends it with Finish,
// exactly once; the stages in between read it.
type Exchange struct {
	Protocol Protocol
	Model    string
	// Deployment is the resolved model's revision that serves the
	// exchange (the traffic split, a tag or a header route chose it);
	// never nil after Begin.
	Deployment *controller.Deployment
	// Shadow, when set, is the revision the request is mirrored to.
	Shadow *controller.Deployment
	// Header holds the request's headers (for gRPC, its metadata with
	// canonical keys). Stages may read it; they must not keep it.
	Header http.Header
	// Start is when the request arrived.
	Start time.Time
	// Tenant is the caller, when an authentication stage named one.
	Tenant string

	finished bool
	hit      bool // answered from the response cache (cache.go)
	onFinish []func(*Exchange, Result)
	span     tracing.Span // the request's gateway span, when traced
}

// Result is how an exchange ended, as its finish hooks see it.
type Result struct {
	Status int
	Took   time.Duration
	Cold   bool
	// Served is true when an instance took the request.
	Served bool
}

// OnFinish registers f to run when the exchange is finished (a stage that
// holds something for the request, such as a concurrency slot, releases it
// there). Hooks run in registration order, on the request's goroutine.
func (ex *Exchange) OnFinish(f func(*Exchange, Result)) { ex.onFinish = append(ex.onFinish, f) }

// Stage admits or refuses an exchange before anything is queued, read or
// woken: authentication, tenants' limits and traffic rules plug in here,
// once for every protocol. Admit is called concurrently on the request
// path and must not block on I/O. A refusal is an error, best a
// *problem.Error, which the protocol's adapter answers in its own shape.
type Stage interface {
	Admit(ctx context.Context, ex *Exchange) error
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, ex *Exchange) error

// Admit calls f.
func (f StageFunc) Admit(ctx context.Context, ex *Exchange) error { return f(ctx, ex) }

// Use appends stages to the pipeline. It must be called before the
// gateway serves.
func (g *Gateway) Use(stages ...Stage) { g.stages = append(g.stages, stages...) }

// Begin resolves the model and runs the admission stages. The error is a
// *problem.Error: 404 for an unknown model, or a stage's refusal (counted
// in the model's metrics).
func (g *Gateway) Begin(ctx context.Context, proto Protocol, model string, h http.Header) (*Exchange, error) {
	d, shadow, err := g.models.Route(model, h)
	if err != nil {
		if errors.Is(err, controller.ErrNotFound) {
			base, _, _ := strings.Cut(model, "@")
			return nil, problem.New(http.StatusNotFound, "model_not_found", fmt.Sprintf("model %q is not deployed", base)).WithField("name")
		}
		return nil, problem.From(err)
	}
	model = d.Name
	ex := &Exchange{Protocol: proto, Model: model, Deployment: d, Shadow: shadow, Header: h, Start: time.Now(), span: tracing.FromContext(ctx)}
	for _, s := range g.stages {
		if err := admit(ctx, s, ex); err != nil {
			pe := problem.From(err)
			ex.Finish(pe.Status, false, pe)
			return nil, pe
		}
	}
	return ex, nil
}

// Finish meters the exchange once it is answered with status: the request
// and latency metrics, cold starts and, when an instance took the request
// (err is nil, or says the instance failed it), the cost meter. Calls after
// the first do nothing.
func (ex *Exchange) Finish(status int, cold bool, err error) {
	if ex.finished {
		return
	}
	ex.finished = true
	d := ex.Deployment
	took := time.Since(ex.Start)
	d.Metrics.Request(ex.Protocol, status)
	d.Metrics.Latency.Observe(took.Seconds())
	if cold {
		d.Metrics.ColdStarts.Inc()
	}
	served := !ex.hit && (err == nil || reachedInstance(err))
	if served || status >= 500 {
		// The revision's own answers (and the gateway's 5xx for it) judge a
		// rollout; refusals at the door and cache hits do not.
		d.Stats.Observe(status, took, cold)
	}
	if served {
		d.Usage.Add(took, cold)
	} else if ex.hit {
		d.Usage.Hit()
	}
	for _, f := range ex.onFinish {
		f(ex, Result{Status: status, Took: took, Cold: cold, Served: served})
	}
	ex.span.Finish(ex.Protocol, ex.Model, ex.Tenant, status, cold)
}

// Timeout is the deployment's timeouts.request: the bound on the exchange
// with an instance, the upload of the request's body included.
func (ex *Exchange) Timeout() time.Duration { return ex.Deployment.Manifest().Timeouts.Request.D() }

// reachedInstance reports whether err came from an instance that had taken
// the request (it answered an error, died, or did not answer in time),
// rather than from the gateway before any instance did.
func reachedInstance(err error) bool {
	var pe *problem.Error
	if !errors.As(err, &pe) {
		return false
	}
	if pe.Source == problem.SourceModel {
		return true
	}
	switch pe.Code {
	case pool.CodeInstanceDied, pool.CodeInstanceOOM, pool.CodeUpstreamError, pool.CodeRequestTimeout:
		return true
	}
	return false
}

// v2Exchange shows an Exchange to the v2 adapters.
type v2Exchange struct{ *Exchange }

// RouteKey names the revision the exchange was routed to (batches never
// mix revisions).
func (e v2Exchange) RouteKey() string { return e.Deployment.Revision() }

// Enter admits a v2 REST or gRPC request (inference.Front).
func (g *Gateway) Enter(ctx context.Context, proto, model string, h http.Header) (inference.Exchange, error) {
	ex, err := g.Begin(ctx, proto, model, h)
	if err != nil {
		return nil, err
	}
	return v2Exchange{ex}, nil
}

var _ inference.Front = (*Gateway)(nil)

// upstream sends the v2 adapters' calls to one deployment's instances:
// through the activator, bounded by timeouts.request from the moment an
// instance took the call, and retried once on another instance when the
// first failed before answering.
type upstream struct {
	g *Gateway
	d *controller.Deployment
}

var _ inference.Upstream = upstream{}

func (u upstream) Do(ctx context.Context, req *http.Request) (*http.Response, bool, error) {
	if ex, ok := inference.ExchangeFrom(ctx).(v2Exchange); ok && ex.Deployment.Name == u.d.Name {
		u.d = ex.Deployment // the revision the pipeline routed the call to
	}
	lease, d, err := u.g.acquireWithin(ctx, u.d) // d: the fallback, when it took the call
	if err != nil {
		return nil, false, err
	}
	if lease.ColdStart {
		d.Metrics.ColdWait.Observe(lease.Waited.Seconds())
	}
	name := d.Manifest().Name
	rctx, cancel := context.WithTimeout(ctx, d.Manifest().Timeouts.Request.D())
	var call tracing.Call
	call.Start(ctx, lease.Instance.ID, 1)
	resp, err := roundTrip(rctx, lease, req, &call)
	if err != nil && retryable(req, err) {
		if next, aerr := d.Pool.AcquireExcept(rctx, lease.Instance); aerr == nil {
			d.Metrics.Retries.Inc()
			lease.Release()
			cold := lease.ColdStart
			lease = next
			lease.ColdStart = lease.ColdStart || cold
			call.Fail(err)
			call.Start(ctx, lease.Instance.ID, 2)
			resp, err = roundTrip(rctx, lease, req, &call)
		}
	}
	if err != nil {
		call.Fail(err)
		cancel()
		lease.Release()
		return nil, lease.ColdStart, pool.UpstreamError(rctx, name, lease.Instance, err)
	}
	call.Answered(resp.StatusCode)
	resp.Body = &leaseBody{ReadCloser: resp.Body, lease: lease, cancel: cancel, call: call}
	if pair := u.mirror(ctx, req); pair != nil {
		resp.Body = &teeBody{ReadCloser: resp.Body, status: resp.StatusCode, dig: shadow.NewDigest(), pair: pair}
	}
	return resp, lease.ColdStart, nil
}

// mirror sends a copy of a v2 call (its body is in memory) to the shadow
// revision the pipeline chose, if any.
func (u upstream) mirror(ctx context.Context, req *http.Request) *shadow.Pair {
	ex, ok := inference.ExchangeFrom(ctx).(v2Exchange)
	if !ok || ex.Shadow == nil || u.g.mirror == nil {
		return nil
	}
	var body []byte
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return nil
		}
		body, err = io.ReadAll(io.LimitReader(rc, maxShadowBody+1))
		rc.Close()
		if err != nil || len(body) > maxShadowBody {
			return nil
		}
	}
	return u.g.mirrorCopy(ex.Shadow, req.Method, req.URL.RequestURI(), req.Header, body)
}

func roundTrip(ctx context.Context, lease *pool.Lease, req *http.Request, call *tracing.Call) (*http.Response, error) {
	out := req.Clone(ctx)
	call.Inject(out.Header)
	out.URL.Scheme = "http"
	out.URL.Host = lease.Instance.Addr
	out.Host = lease.Instance.Addr
	out.RequestURI = ""
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	return lease.Instance.Raw.RoundTrip(out)
}

// retryable: the v2 adapters' bodies are in memory (GetBody), so any call
// that failed before an answer, other than by the deadline, may go again.
func retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

type leaseBody struct {
	io.ReadCloser
	lease  *pool.Lease
	cancel context.CancelFunc
	call   tracing.Call // ends when the answer has been read
}

func (b *leaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.call.End()
	b.cancel()
	b.lease.Release()
	return err
}
