package tracing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"tandem/internal/tracing"
)

type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing_PerRequest is what tracing adds to one warm request, on
// the request's goroutine, without the network: the gateway span (Handler),
// the pipeline's look at it, one attempt with its traceparent, and the
// outcome. Off is a nil Tracer.
func BenchmarkTracing_PerRequest(b *testing.B) {
	for _, sample := range []float64{-1, 0.01, 1} {
		name := "off"
		if sample >= 0 {
			name = fmt.Sprintf("sample=%g", sample)
		}
		b.Run(name, func(b *testing.B) {
			var tr *tracing.Tracer
			if sample >= 0 {
				tr, _ = tracing.New(context.Background(), tracing.Config{Exporter: dropExporter{}, Sample: &sample})
				defer tr.Shutdown(context.Background())
			}
			out := http.Header{}
			h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sp := tracing.FromContext(r.Context())
				var c tracing.Call
				c.Start(r.Context(), "m-1", 1)
				c.Inject(out)
				c.Answered(200)
				c.End()
				sp.Finish("http", "m", "", 200, false)
			}))
			req := httptest.NewRequest("GET", "/models/m/x", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				h.ServeHTTP(w, req)
			}
		})
	}
}
