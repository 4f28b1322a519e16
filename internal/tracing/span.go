package tracing

import (
	"context"
	"encoding/hex"
	"net/http"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"tandem/internal/pool"
)

// The names of tandem's spans (docs/tracing.md shows the tree).
const (
	SpanGateway   = "gateway"       // a request, from arrival to its answer
	SpanAdmit     = "admit"         // an admission stage without a name of its own
	SpanQueue     = "queue"         // the wait in the activator queue, when there was one
	SpanColdStart = "cold start"    // the start of the instance the request waited for
	SpanCall      = "instance call" // one attempt at calling an instance
	SpanBatchWait = "batch wait"    // a request's wait for its batch to run
	SpanBatch     = "batch"         // the run of a batch of several requests
)

// Attribute keys of tandem's own.
const (
	AttrModel     = attribute.Key("tandem.model")
	AttrProtocol  = attribute.Key("tandem.protocol")
	AttrTenant    = attribute.Key("tandem.tenant")
	AttrColdStart = attribute.Key("tandem.cold_start")
	AttrInstance  = attribute.Key("tandem.instance")
	AttrAttempt   = attribute.Key("tandem.attempt")
	AttrBatchSize = attribute.Key("tandem.batch.requests")
	AttrPhase     = attribute.Key("tandem.cold_start.phase")
	AttrDrawnIn   = attribute.Key("tandem.cold_start.drawn")
)

// Span is a recording span of a request's, or nothing: the zero value,
// whose methods do nothing and which costs nothing (tracing off, or a
// request that is not sampled). It is a small value; copy it freely.
type Span struct{ s trace.Span }

// FromContext returns ctx's span when tracing is on and it records.
func FromContext(ctx context.Context) Span {
	if !Enabled() {
		return Span{}
	}
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		return Span{s}
	}
	return Span{}
}

// On reports whether s records.
func (s Span) On() bool { return s.s != nil }

// Start starts a child of s named name and returns it with ctx carrying it.
// On the zero Span it returns ctx and the zero Span.
func (s Span) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, Span) {
	if s.s == nil {
		return ctx, Span{}
	}
	ctx, c := tracerOf(s.s).Start(trace.ContextWithSpan(ctx, s.s), name, opts...)
	return ctx, Span{c}
}

// Set sets attributes on s.
func (s Span) Set(kv ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(kv...)
	}
}

// End ends s, as failed when err is not nil. Calls after the first do
// nothing.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.SetStatus(codes.Error, err.Error())
	}
	s.s.End()
}

// SpanContext returns s's identity (invalid for the zero Span), for links.
func (s Span) SpanContext() trace.SpanContext {
	if s.s == nil {
		return trace.SpanContext{}
	}
	return s.s.SpanContext()
}

// Finish records how the pipeline answered the request on its gateway
// span; the span ends when the request's handler returns.
func (s Span) Finish(proto, model, tenant string, status int, cold bool) {
	if s.s == nil {
		return
	}
	s.s.SetAttributes(AttrProtocol.String(proto), AttrModel.String(model), AttrColdStart.Bool(cold),
		semconv.HTTPResponseStatusCode(status))
	if tenant != "" {
		s.s.SetAttributes(AttrTenant.String(tenant))
	}
	if status >= 500 {
		s.s.SetStatus(codes.Error, http.StatusText(status))
	}
}

// tracerOf returns the tracer of the provider that made s.
func tracerOf(s trace.Span) trace.Tracer {
	tp := s.TracerProvider()
	if t, ok := tracers.Load(tp); ok {
		return t.(trace.Tracer)
	}
	return tp.Tracer(Scope)
}

// Queued draws a request's wait for an instance in its trace: a queue span
// from start to now when it waited (or failed), and, for a cold start, the
// instance's start with its phases. A cold start is shared by the requests
// that waited for it; it is drawn once, as a child of the gateway span of
// the first traced request the new instance serves (the oldest waiter,
// normally the one that asked for it), and the queue spans of the others
// link to it. lease is nil when err is not.
func Queued(ctx context.Context, start time.Time, lease *pool.Lease, err error) {
	s := FromContext(ctx)
	if !s.On() || (err == nil && lease.Waited <= 0) {
		return
	}
	now := time.Now()
	var opts []trace.SpanStartOption
	attrs := []attribute.KeyValue{}
	if lease != nil {
		attrs = append(attrs, AttrColdStart.Bool(lease.ColdStart), AttrInstance.String(lease.Instance.ID))
		if st := lease.Instance.Startup; lease.ColdStart && st != nil {
			note, first := st.Draw(func() any { return drawColdStart(ctx, s, st, lease.Instance.ID) })
			attrs = append(attrs, AttrDrawnIn.String(drawnIn(first)))
			if sc, ok := note.(trace.SpanContext); ok && !first && sc.IsValid() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc,
					Attributes: []attribute.KeyValue{attribute.String("tandem.link", "the cold start this request waited for")}}))
			}
		}
	}
	opts = append(opts, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	_, q := s.Start(ctx, SpanQueue, opts...)
	if err != nil {
		q.s.SetStatus(codes.Error, err.Error())
	}
	q.s.End(trace.WithTimestamp(now))
}

func drawnIn(first bool) string {
	if first {
		return "this trace"
	}
	return "linked"
}

// drawColdStart draws st under s: the cold start from the decision to
// readiness, and its phases as children with their measured durations:
// trigger (the decision to the backend's start time), the backend's steps
// (exec; create, start), laid end to end so that the last ends when the
// backend's Start returned, and ready (from then to the readiness probe's
// success). It returns the cold start's span context.
func drawColdStart(ctx context.Context, s Span, st *pool.Startup, instance string) trace.SpanContext {
	ctx, cs := s.Start(ctx, SpanColdStart, trace.WithTimestamp(st.Trigger),
		trace.WithAttributes(AttrInstance.String(instance)))
	phase := func(name string, from, to time.Time) {
		if to.Before(from) {
			to = from
		}
		_, p := cs.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(AttrPhase.String(name)))
		p.s.End(trace.WithTimestamp(to))
	}
	if !st.Launched.IsZero() {
		phase("trigger", st.Trigger, st.Launched)
	}
	var total time.Duration
	for _, p := range st.Phases {
		total += p.Duration
	}
	at := st.Started.Add(-total)
	for _, p := range st.Phases {
		phase(p.Name, at, at.Add(p.Duration))
		at = at.Add(p.Duration)
	}
	phase("ready", st.Started, st.Ready)
	cs.s.End(trace.WithTimestamp(st.Ready))
	return cs.SpanContext()
}

// Call is the span of one attempt at calling an instance. The zero value
// is ready for Start; when tracing is off every method does nothing.
type Call struct {
	span trace.Span
	sc   trace.SpanContext // what Inject passes on
}

// Start begins attempt (1 for the first) of the request in ctx at calling
// instance. It ends an attempt that was not ended.
func (c *Call) Start(ctx context.Context, instance string, attempt int) {
	if Enabled() {
		c.start(ctx, instance, attempt)
	}
}

func (c *Call) start(ctx context.Context, instance string, attempt int) {
	c.End()
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return // not traced: the caller's traceparent, if any, goes on as sent
	}
	_, c.span = tracerOf(parent).Start(ctx, SpanCall, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrInstance.String(instance), AttrAttempt.Int(attempt)))
	c.sc = c.span.SpanContext()
}

// Inject sets h's traceparent (and tracestate) to the attempt's, so that
// the instance continues the request's trace. Without a trace it leaves h
// as it is.
func (c *Call) Inject(h http.Header) {
	if !c.sc.IsValid() {
		return
	}
	h["Traceparent"] = traceparentValue(c.sc)
	if ts := c.sc.TraceState(); ts.Len() > 0 {
		h["Tracestate"] = []string{ts.String()}
	} else if _, ok := h["Tracestate"]; ok {
		delete(h, "Tracestate")
	}
}

// Answered records the instance's status on the attempt.
func (c *Call) Answered(status int) {
	if c.span != nil {
		c.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			c.span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
}

// Fail ends the attempt as failed by err.
func (c *Call) Fail(err error) {
	if c.span != nil {
		c.span.SetStatus(codes.Error, err.Error())
		c.End()
	}
}

// End ends the attempt. Calls after the first do nothing.
func (c *Call) End() {
	if c.span != nil {
		c.span.End()
		c.span = nil
	}
}

// Traceparent formats sc as a W3C traceparent header value (version 00).
func Traceparent(sc trace.SpanContext) string {
	var b [55]byte
	formatTraceparent(&b, sc)
	return string(b[:])
}

// headerValue is a one-value header and the value's bytes in a single
// allocation: every request that is traced, sampled or not, sends one.
type headerValue struct {
	v [1]string
	b [55]byte
}

// traceparentValue returns sc's traceparent as a header's values. The
// string shares the allocation of its bytes, which nothing writes again.
func traceparentValue(sc trace.SpanContext) []string {
	hv := new(headerValue)
	formatTraceparent(&hv.b, sc)
	hv.v[0] = unsafe.String(&hv.b[0], len(hv.b))
	return hv.v[:]
}

func formatTraceparent(b *[55]byte, sc trace.SpanContext) {
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	f := [1]byte{byte(sc.TraceFlags())}
	hex.Encode(b[53:55], f[:])
}
