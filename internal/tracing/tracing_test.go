package tracing_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"tandem/internal/backend"
	"tandem/internal/pool"
	"tandem/internal/tracing"
)

// newTracer returns a tracer that exports into memory, and a function
// that returns what it exported so far.
func newTracer(t *testing.T, sample *float64) (*tracing.Tracer, func() tracetest.SpanStubs) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(context.Background(), tracing.Config{Exporter: exp, Sample: sample, Version: "test"})
	if err != nil || tr == nil {
		t.Fatalf("New: %v %v", tr, err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr, func() tracetest.SpanStubs {
		if err := tr.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		return exp.GetSpans()
	}
}

func byName(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func one(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	got := byName(spans, name)
	if len(got) != 1 {
		t.Fatalf("%d spans named %q, want 1; all: %v", len(got), name, names(spans))
	}
	return got[0]
}

func names(spans tracetest.SpanStubs) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return n
}

func attr(s tracetest.SpanStub, key string) (string, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit(), true
		}
	}
	return "", false
}

const callerParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestNew_Off(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"} {
		t.Setenv(k, "")
	}
	tests := []struct {
		name string
		env  map[string]string
		cfg  tracing.Config
		on   bool
	}{
		{name: "nothing configured", on: false},
		{name: "flag", cfg: tracing.Config{Endpoint: "http://127.0.0.1:1"}, on: true},
		{name: "env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, on: true},
		{name: "traces env", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, on: true},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true"}, cfg: tracing.Config{Endpoint: "http://127.0.0.1:1"}, on: false},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, cfg: tracing.Config{Endpoint: "http://127.0.0.1:1"}, on: false},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, cfg: tracing.Config{Endpoint: "http://127.0.0.1:1"}, on: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tr, err := tracing.New(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			if (tr != nil) != tc.on || tracing.Enabled() != tc.on {
				t.Fatalf("tracer %v, Enabled %v, want on=%v", tr, tracing.Enabled(), tc.on)
			}
		})
	}
	if tracing.Enabled() {
		t.Fatal("Enabled after every tracer shut down")
	}
}

func TestNew_BadConfig(t *testing.T) {
	bad := 1.5
	for _, tc := range []struct {
		name string
		cfg  tracing.Config
		env  string
	}{
		{name: "sample", cfg: tracing.Config{Endpoint: "http://127.0.0.1:1", Sample: &bad}},
		{name: "endpoint", cfg: tracing.Config{Endpoint: "127.0.0.1:4318"}},
		{name: "protocol", cfg: tracing.Config{Endpoint: "http://127.0.0.1:1"}, env: "thrift"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.env)
			if tr, err := tracing.New(context.Background(), tc.cfg); err == nil {
				tr.Shutdown(context.Background())
				t.Fatal("no error")
			}
		})
	}
}

func TestTraceparent_MatchesW3CPropagator(t *testing.T) {
	ts, _ := trace.ParseTraceState("vendor=x")
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xff},
			SpanID:     trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
			TraceFlags: flags, TraceState: ts,
		})
		h := http.Header{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), propagation.HeaderCarrier(h))
		if got, want := tracing.Traceparent(sc), h.Get("Traceparent"); got != want {
			t.Fatalf("Traceparent %q, propagator %q", got, want)
		}
	}
}

// TestHandler_ContinuesCallersTrace: the gateway span is a server span of
// the caller's trace, its parent the caller's span; a call made inside it
// passes a traceparent of that trace, naming the call's span, to the
// instance.
func TestHandler_ContinuesCallersTrace(t *testing.T) {
	tr, spans := newTracer(t, nil)
	var sent http.Header
	h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c tracing.Call
		c.Start(r.Context(), "i-1", 1)
		sent = http.Header{"Traceparent": {"stale"}, "Tracestate": {"stale"}}
		c.Inject(sent)
		c.Answered(200)
		c.End()
		tracing.FromContext(r.Context()).Finish("http", "m", "acme", 200, false)
	}))
	req := httptest.NewRequest("GET", "/models/m/x", nil)
	req.Header.Set("Traceparent", callerParent)
	h.ServeHTTP(httptest.NewRecorder(), req)

	all := spans()
	gw := one(t, all, tracing.SpanGateway)
	if gw.SpanKind != trace.SpanKindServer || gw.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		gw.Parent.SpanID().String() != "00f067aa0ba902b7" || !gw.Parent.IsRemote() {
		t.Fatalf("gateway span: kind %v trace %v parent %v", gw.SpanKind, gw.SpanContext.TraceID(), gw.Parent.SpanID())
	}
	if v, _ := attr(gw, "tandem.tenant"); v != "acme" {
		t.Fatalf("tenant attribute %q", v)
	}
	call := one(t, all, tracing.SpanCall)
	if call.Parent.SpanID() != gw.SpanContext.SpanID() || call.SpanKind != trace.SpanKindClient {
		t.Fatalf("call span's parent %v, want the gateway span %v", call.Parent.SpanID(), gw.SpanContext.SpanID())
	}
	if want := tracing.Traceparent(call.SpanContext); sent.Get("Traceparent") != want {
		t.Fatalf("instance got traceparent %q, want %q", sent.Get("Traceparent"), want)
	}
	if _, ok := sent["Tracestate"]; ok {
		t.Fatalf("a stale tracestate went on: %v", sent)
	}
}

func TestHandler_RootAndHealth(t *testing.T) {
	tr, spans := newTracer(t, nil)
	h := tr.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/models/m/x", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	all := spans()
	gw := one(t, all, tracing.SpanGateway)
	if gw.Parent.IsValid() {
		t.Fatalf("a request without traceparent got parent %v", gw.Parent)
	}
	if len(all) != 1 {
		t.Fatalf("spans %v: health checks are not traced", names(all))
	}
}

// TestCall_NotSampled: a request that is not sampled records nothing, has
// no span in its context, allocates nothing for tracing, and its caller's
// traceparent (if any) reaches the instance as sent; a caller's sampled
// flag wins over the ratio.
func TestCall_NotSampled(t *testing.T) {
	zero := 0.0
	tr, spans := newTracer(t, &zero)
	sent := http.Header{}
	var traced bool
	h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traced = tracing.FromContext(r.Context()).On() || trace.SpanFromContext(r.Context()).SpanContext().IsValid()
		var c tracing.Call
		c.Start(r.Context(), "i-1", 1)
		c.Inject(sent)
		c.End()
	}))
	req := httptest.NewRequest("GET", "/models/m/x", nil)
	w := httptest.NewRecorder()
	if allocs := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, req) }); allocs != 0 {
		t.Errorf("%v allocations for a request that is not sampled", allocs)
	}
	if all := spans(); len(all) != 0 || traced {
		t.Fatalf("spans %v (a span in the context: %v) at sampling 0", names(all), traced)
	}
	if _, ok := sent["Traceparent"]; ok {
		t.Fatalf("instance got traceparent %q for a request not traced", sent.Get("Traceparent"))
	}
	unsampled := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	for _, tc := range []struct {
		parent string
		spans  int
	}{{unsampled, 0}, {callerParent, 2}} {
		sent = http.Header{"Traceparent": {tc.parent}}
		r := httptest.NewRequest("GET", "/models/m/x", nil)
		r.Header.Set("Traceparent", tc.parent)
		h.ServeHTTP(httptest.NewRecorder(), r)
		all := spans()
		if len(all) != tc.spans || traced != (tc.spans > 0) {
			t.Fatalf("caller %s: spans %v, want %d", tc.parent, names(all), tc.spans)
		}
		if tc.spans == 0 && sent.Get("Traceparent") != tc.parent {
			t.Fatalf("caller's traceparent became %q", sent.Get("Traceparent"))
		}
		if tc.spans > 0 && sent.Get("Traceparent") != tracing.Traceparent(one(t, all, tracing.SpanCall).SpanContext) {
			t.Fatalf("instance got %q, not the call's traceparent", sent.Get("Traceparent"))
		}
	}
}

func TestCall_Off(t *testing.T) {
	if tracing.Enabled() {
		t.Fatal("a tracer is live")
	}
	var c tracing.Call
	c.Start(context.Background(), "i-1", 1)
	h := http.Header{"Traceparent": {callerParent}}
	c.Inject(h)
	c.Answered(200)
	c.Fail(errors.New("x"))
	c.End()
	if h.Get("Traceparent") != callerParent {
		t.Fatalf("off, the caller's traceparent changed: %v", h)
	}
	if s := tracing.FromContext(context.Background()); s.On() {
		t.Fatal("FromContext on with tracing off")
	}
	allocs := testing.AllocsPerRun(100, func() {
		var c tracing.Call
		c.Start(context.Background(), "i-1", 1)
		c.Inject(h)
		c.Answered(200)
		c.End()
		_, s := tracing.FromContext(context.Background()).Start(context.Background(), "x")
		s.End(nil)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request with tracing off", allocs)
	}
}

// TestQueued_ColdStartDrawnOnceLinkedElsewhere: the first request an
// instance serves draws its cold start, phases inside it with their
// measured durations; another request that waited for it links to it.
func TestQueued_ColdStartDrawnOnceLinkedElsewhere(t *testing.T) {
	tr, spans := newTracer(t, nil)
	t0 := time.Now().Add(-time.Second)
	st := &pool.Startup{
		Trigger:  t0,
		Launched: t0.Add(10 * time.Millisecond),
		Started:  t0.Add(200 * time.Millisecond),
		Ready:    t0.Add(700 * time.Millisecond),
		Phases:   []backend.Phase{{Name: "create", Duration: 150 * time.Millisecond}, {Name: "start", Duration: 40 * time.Millisecond}},
	}
	in := pool.NewInstance("m-1", "127.0.0.1:1")
	in.Startup = st
	request := func(cold bool, waited time.Duration) {
		h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tracing.Queued(r.Context(), t0, &pool.Lease{Instance: in, ColdStart: cold, Waited: waited}, nil)
		}))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/models/m/x", nil))
	}
	request(true, 700*time.Millisecond)
	request(true, 650*time.Millisecond)
	request(false, 0) // did not wait: no queue span

	all := spans()
	gws := byName(all, tracing.SpanGateway)
	queues := byName(all, tracing.SpanQueue)
	if len(gws) != 3 || len(queues) != 2 {
		t.Fatalf("spans %v", names(all))
	}
	cs := one(t, all, tracing.SpanColdStart)
	first := gws[0]
	if cs.Parent.SpanID() != first.SpanContext.SpanID() || queues[0].Parent.SpanID() != first.SpanContext.SpanID() {
		t.Fatal("the cold start and the queue are not children of the first request's gateway span")
	}
	if !cs.StartTime.Equal(st.Trigger) || !cs.EndTime.Equal(st.Ready) {
		t.Fatalf("cold start %v..%v, want trigger..ready", cs.StartTime, cs.EndTime)
	}
	want := map[string][2]time.Time{
		"trigger": {st.Trigger, st.Launched},
		"create":  {st.Started.Add(-190 * time.Millisecond), st.Started.Add(-40 * time.Millisecond)},
		"start":   {st.Started.Add(-40 * time.Millisecond), st.Started},
		"ready":   {st.Started, st.Ready},
	}
	for name, w := range want {
		p := one(t, all, name)
		if p.Parent.SpanID() != cs.SpanContext.SpanID() {
			t.Errorf("phase %s is not a child of the cold start", name)
		}
		if !p.StartTime.Equal(w[0]) || !p.EndTime.Equal(w[1]) {
			t.Errorf("phase %s: %v..%v, want %v..%v", name, p.StartTime, p.EndTime, w[0], w[1])
		}
	}
	second := queues[1]
	if second.SpanContext.TraceID() == cs.SpanContext.TraceID() {
		t.Fatal("the second request is in the first's trace")
	}
	if len(second.Links) != 1 || second.Links[0].SpanContext.SpanID() != cs.SpanContext.SpanID() {
		t.Fatalf("the second request's queue links %v, want the cold start %v", second.Links, cs.SpanContext.SpanID())
	}
	if v, _ := attr(second, "tandem.cold_start.drawn"); v != "linked" {
		t.Fatalf("drawn attribute %q", v)
	}
}

func TestQueued_Error(t *testing.T) {
	tr, spans := newTracer(t, nil)
	h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tracing.Queued(r.Context(), time.Now(), nil, pool.ErrQueueFull)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/models/m/x", nil))
	q := one(t, spans(), tracing.SpanQueue)
	if q.Status.Code != codes.Error {
		t.Fatalf("queue span status %v, want an error", q.Status)
	}
}
