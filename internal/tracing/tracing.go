// Package tracing exports OpenTelemetry spans of the gateway's requests over
// OTLP: the gateway span of each request (a child of the caller's W3C
// traceparent when it sent one), its admission stages, its wait in the
// activator queue, the cold start it waited for with the start's phases,
// each attempt at calling an instance, and its wait for a batch. The
// instance is called with a traceparent of the request's trace.
//
// Tracing is off unless `tandem serve --otlp-endpoint` or the standard
// OTEL_EXPORTER_OTLP_ENDPOINT variables name a collector. Off, the request
// path makes one check (Enabled, an atomic load) and allocates nothing for
// tracing. On, the sampler decides as a request arrives; one that is not
// sampled goes through as if tracing were off (the caller's traceparent, if
// any, reaches the instance as sent), so a low sampling rate costs little
// more than off.
//
// Who owns what: a Tracer owns its provider and exporter; Shutdown flushes
// them. The gateway starts a request's span in Handler (HTTP) or the gRPC
// stats handler and carries it in the request's context; the pipeline's
// parts start their spans from that context and end them on the request's
// goroutine, except a batch's wait, which the batch's run ends.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of tandem's spans.
const Scope = "tandem"

// Config says where spans go and how many requests are traced. The zero
// value reads the standard OTEL_* environment variables, and is off when
// they name no endpoint.
type Config struct {
	// Endpoint is the collector's OTLP base URL (--otlp-endpoint), as
	// OTEL_EXPORTER_OTLP_ENDPOINT would give it: http://host:4318 for
	// OTLP/HTTP, to which /v1/traces is added, or http://host:4317 with
	// OTEL_EXPORTER_OTLP_PROTOCOL=grpc. "" means the environment's, if any.
	Endpoint string
	// Sample, when not nil, is the fraction of requests traced (0 to 1) that
	// did not come with a caller's sampling decision (parent-based); nil
	// means OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else every
	// request.
	Sample *float64
	// Version is tandem's, recorded as service.version.
	Version string
	// Exporter, when not nil, receives the spans instead of an OTLP
	// exporter, and tracing is on whatever the endpoint (tests, benchmarks).
	Exporter sdktrace.SpanExporter
}

// Tracer exports the spans of one tandem server. A nil *Tracer is off:
// its methods do nothing and its wrappers return what they were given.
type Tracer struct {
	tp      *sdktrace.TracerProvider
	tracer  trace.Tracer
	prop    propagation.TraceContext
	sampler sampler
	done    atomic.Bool
}

// live counts the tracers not yet shut down: the request path's one check.
var live atomic.Int32

// tracers maps a live provider to its tracer, so that child spans find
// their tracer without the provider's lock.
var tracers sync.Map // *sdktrace.TracerProvider -> trace.Tracer

// Enabled reports whether any Tracer is exporting. When it is false the
// request path does nothing else for tracing.
func Enabled() bool { return live.Load() > 0 }

// New returns the Tracer cfg asks for, or nil when tracing is off (no
// endpoint in cfg or the environment, OTEL_SDK_DISABLED=true, or
// OTEL_TRACES_EXPORTER=none). Nothing is sent before the first span.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	var smp sampler
	if cfg.Sample != nil {
		if *cfg.Sample < 0 || *cfg.Sample > 1 {
			return nil, fmt.Errorf("--trace-sample %g: want a fraction from 0 to 1", *cfg.Sample)
		}
		smp = newSampler(*cfg.Sample, true)
	} else {
		var err error
		if smp, err = samplerFromEnv(); err != nil {
			return nil, err
		}
	}
	exp := cfg.Exporter
	if exp == nil {
		if !configured(cfg) {
			return nil, nil
		}
		var err error
		if exp, err = newExporter(ctx, cfg.Endpoint); err != nil {
			return nil, err
		}
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("tandem"), semconv.ServiceVersion(cfg.Version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	// The sampler decides before a span is started (Handler): the SDK
	// records every span it is asked for.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t := &Tracer{tp: tp, tracer: tp.Tracer(Scope), sampler: smp}
	tracers.Store(tp, t.tracer)
	live.Add(1)
	return t, nil
}

// configured reports whether cfg or the environment asks for an exporter.
func configured(cfg Config) bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if e := os.Getenv("OTEL_TRACES_EXPORTER"); e != "" && !strings.EqualFold(e, "otlp") {
		return false // "none", or an exporter tandem does not have
	}
	return cfg.Endpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// newExporter returns the OTLP exporter of the protocol the environment
// names (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL:
// http/protobuf by default, or grpc). The exporters read the other
// OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS) themselves.
func newExporter(ctx context.Context, endpoint string) (*otlptrace.Exporter, error) {
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var u *url.URL
	if endpoint != "" {
		var err error
		u, err = url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--otlp-endpoint %q: want a URL such as http://127.0.0.1:4318", endpoint)
		}
	}
	switch proto {
	case "grpc":
		var opts []otlptracegrpc.Option
		if u != nil {
			opts = append(opts, otlptracegrpc.WithEndpointURL(u.String()))
		}
		return otlptracegrpc.New(ctx, opts...)
	case "", "http/protobuf":
		var opts []otlptracehttp.Option
		if u != nil {
			// A base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is: the signal's path is added.
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		return otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: tandem exports traces over http/protobuf or grpc", proto)
	}
}

// Flush exports the spans that have ended and waits until they are sent or
// ctx is done.
func (t *Tracer) Flush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown flushes what is left and stops exporting. Spans started later
// record nothing. It is safe to call more than once.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil || !t.done.CompareAndSwap(false, true) {
		return nil
	}
	live.Add(-1)
	defer tracers.Delete(t.tp)
	return t.tp.Shutdown(ctx)
}

// ShutdownTimeout bounds how long Shutdown may wait for the collector when
// tandem stops.
const ShutdownTimeout = 5 * time.Second

// Handler wraps the gateway: each request gets its gateway span, a child of
// the caller's traceparent when it sent one, in its context. Health checks
// are not traced. On a nil Tracer it returns next.
func (t *Tracer) Handler(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if untraced(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		if _, ok := r.Header["Traceparent"]; ok { // Get would allocate the canonical key every time
			ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		if !t.sampler.sample(trace.SpanContextFromContext(ctx)) {
			next.ServeHTTP(w, r) // as if off: the caller's traceparent goes on as sent
			return
		}
		ctx, span := t.tracer.Start(ctx, SpanGateway, serverSpan...)
		defer span.End()
		if span.IsRecording() {
			span.SetAttributes(
				semconv.HTTPRequestMethodKey.String(r.Method),
				semconv.URLPath(r.URL.Path),
				semconv.NetworkProtocolVersion(fmt.Sprintf("%d.%d", r.ProtoMajor, r.ProtoMinor)),
			)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// serverSpan is built once: options passed one by one allocate per call.
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// untraced: the health checks that orchestrators call every few seconds.
func untraced(path string) bool {
	switch path {
	case "/healthz", "/v2/health/live", "/v2/health/ready":
		return true
	}
	return false
}
