package inference

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"tandem/internal/problem"
)

// Front is the gateway's request pipeline as the v2 endpoints use it. Every
// model-scoped REST or gRPC request enters it once, before its body is read
// or anything is queued or woken, and leaves it once, when answered; so
// admission (authentication, limits), timeouts and metering are the same as
// for the gateway's pass-through requests. Enter is called concurrently.
type Front interface {
	// Enter admits a request for model through protocol ("v2" or "grpc")
	// with the request's headers (gRPC: its metadata). A refusal is an
	// error, a *problem.Error, answered in the protocol's own shape.
	Enter(ctx context.Context, protocol, model string, header http.Header) (Exchange, error)
}

// Exchange is one admitted request.
type Exchange interface {
	// Timeout bounds the request's exchange with an instance, the upload of
	// its body included (the deployment's timeouts.request); 0 is none.
	Timeout() time.Duration
	// Finish meters the request once it is answered with status (gRPC: the
	// HTTP status its code maps from); err is the error it was answered
	// with, nil on success. Only the first call counts.
	Finish(status int, cold bool, err error)
}

// Protocol names as Front sees them.
const (
	ProtocolREST = "v2"
	ProtocolGRPC = "grpc"
)

// noFront admits everything and meters nothing: a Service with no gateway.
type noFront struct{}

type noExchange struct{}

func (noFront) Enter(context.Context, string, string, http.Header) (Exchange, error) {
	return noExchange{}, nil
}

func (noExchange) Timeout() time.Duration  { return 0 }
func (noExchange) Finish(int, bool, error) {}

// headerOf turns a gRPC call's metadata into headers with canonical keys.
func headerOf(ctx context.Context) http.Header {
	md, _ := metadata.FromIncomingContext(ctx)
	h := make(http.Header, len(md))
	for k, v := range md {
		h[http.CanonicalHeaderKey(k)] = v
	}
	return h
}

// restCall is one model-scoped REST request inside the pipeline: it
// remembers the status and error it was answered with, for Finish.
type restCall struct {
	http.ResponseWriter
	ex     Exchange
	status int
	err    error
}

func (c *restCall) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *restCall) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (c *restCall) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *restCall) noteError(err error) { c.err = err }

// noteError tells the pipeline which error w was answered with.
func noteError(w http.ResponseWriter, err error) {
	for w != nil {
		if c, ok := w.(*restCall); ok {
			c.noteError(err)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter }) // the response cache's recorder
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// inPipeline runs a model-scoped REST handler inside the pipeline: admitted
// first, metered when answered. The request body, if the handler reads it,
// must arrive within the deployment's timeouts.request (408 otherwise).
func (s *Service) inPipeline(w http.ResponseWriter, r *http.Request, name string, h func(http.ResponseWriter, *http.Request)) {
	ex, err := s.opts.Front.Enter(r.Context(), ProtocolREST, name, r.Header)
	if err != nil {
		WriteError(w, err)
		return
	}
	c := &restCall{ResponseWriter: w, ex: ex}
	defer func() {
		status := c.status
		if status == 0 {
			status = http.StatusOK
		}
		ex.Finish(status, c.Header().Get(HeaderColdStart) == "true", c.err)
	}()
	if t := ex.Timeout(); t > 0 && r.Body != nil && r.Body != http.NoBody {
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(t)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, limit: t, h: w.Header()}
		}
	}
	h(c, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex)))
}

type exchangeKey struct{}

// RouteKeyer is implemented by exchanges the front routed to one of a
// model's revisions: RouteKey names it, so that batches do not mix them.
type RouteKeyer interface {
	RouteKey() string
}

// ExchangeFrom returns the exchange the pipeline admitted the request in
// ctx with (nil outside the pipeline), so that an Upstream sends it to the
// revision the front chose.
func ExchangeFrom(ctx context.Context) Exchange {
	ex, _ := ctx.Value(exchangeKey{}).(Exchange)
	return ex
}

// deadlineBody lifts the read deadline once the body is read: past it, the
// server's background read would cancel a request still being served.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	limit time.Duration
	h     http.Header // the answer's
	done  bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
		if err != io.EOF {
			// The answer ends the connection: net/http would otherwise
			// read what is left of the body before sending it.
			b.h.Set("Connection", "close")
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = ErrBodyTimeout(b.limit)
		}
	}
	return n, err
}

// ErrBodyTimeout is the 408 for a request body that did not arrive within
// timeouts.request.
func ErrBodyTimeout(limit time.Duration) *problem.Error {
	return problem.New(http.StatusRequestTimeout, "body_timeout",
		"the request body did not arrive within timeouts.request ("+limit.String()+")")
}

// grpcStatus is the HTTP status a gRPC error maps from, for metering.
func grpcStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	if errors.Is(err, context.Canceled) {
		return 499
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return problem.From(err).Status
}

type coldKey struct{}

// setCold tells the gRPC pipeline interceptor that the call waited for a
// cold start.
func setCold(ctx context.Context, cold bool) {
	if p, ok := ctx.Value(coldKey{}).(*bool); ok {
		*p = cold
	}
}

// grpcPipeline runs model-scoped gRPC calls inside the pipeline, as
// inPipeline does for REST: admitted first (from the call's metadata),
// metered when answered.
func (s *Service) grpcPipeline(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var name string
	switch r := req.(type) {
	case interface{ GetModelName() string }: // ModelInfer
		name = r.GetModelName()
	case interface{ GetName() string }: // ModelMetadata, ModelReady
		name = r.GetName()
	default:
		return h(ctx, req)
	}
	ex, err := s.opts.Front.Enter(ctx, ProtocolGRPC, name, headerOf(ctx))
	if err != nil {
		return nil, grpcError(err)
	}
	var cold bool
	resp, err := h(context.WithValue(context.WithValue(ctx, coldKey{}, &cold), exchangeKey{}, ex), req)
	ex.Finish(grpcStatus(err), cold, err)
	return resp, err
}
