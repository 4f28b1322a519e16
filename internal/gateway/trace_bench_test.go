package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/gateway"
	"tandem/internal/manifest"
	"tandem/internal/store"
	"tandem/internal/tracing"
)

// dropExporter takes spans and sends them nowhere: what tracing costs the
// gateway, without a collector's.
type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing_Warm is BenchmarkGateway_Warm with tracing off, on at 1%
// sampling (the figure in docs/tracing.md) and on for every request, spans
// exported to nowhere.
//
//	go test -run '^$' -bench 'BenchmarkTracing_Warm/(off|sample=0.01)$' -benchtime 2s -count 8 ./internal/gateway/
func BenchmarkTracing_Warm(b *testing.B) {
	for _, sample := range []float64{-1, 0.01, 1} {
		name := "off"
		if sample >= 0 {
			name = fmt.Sprintf("sample=%g", sample)
		}
		b.Run(name, func(b *testing.B) {
			var tr *tracing.Tracer
			if sample >= 0 {
				var err error
				tr, err = tracing.New(context.Background(), tracing.Config{Exporter: dropExporter{}, Sample: &sample})
				if err != nil {
					b.Fatal(err)
				}
				defer tr.Shutdown(context.Background())
			}
			st, err := store.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path) }))
			c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
				DefaultBackend: "process", Tick: 20 * time.Millisecond})
			if err := c.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer c.Shutdown(context.Background())
			m, _ := manifest.Parse([]byte("name: m\nmode: dedicated\nruntime: {command: [x]}\n"), "")
			if _, err := c.Apply(context.Background(), m); err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(tr.Handler(gateway.New(c, nil)))
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			url := srv.URL + "/models/m/x"
			for {
				resp, err := client.Get(url)
				if err == nil && resp.StatusCode == 200 {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// CPU time (client, gateway and instance together) is what
			// throughput at saturation divides, and what other load on a
			// shared machine disturbs less than wall time.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
