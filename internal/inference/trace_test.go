package inference_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"tandem/internal/inference"
	"tandem/internal/inference/inferencetest"
	"tandem/internal/manifest"
	"tandem/internal/tracing"
)

// TestTracing_BatchWait: each request of a batch has its batch wait in its
// own trace; the batch's run, with the instance call, is drawn once, in
// the first request's trace, linked to every request's wait.
func TestTracing_BatchWait(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(context.Background(), tracing.Config{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	var mu sync.Mutex
	var called []trace.SpanContext
	ok := okModel()
	up := &inferencetest.Upstream{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		called = append(called, trace.SpanContextFromContext(r.Context()))
		mu.Unlock()
		ok.Handler.ServeHTTP(w, r)
	})}
	// Two requests of two rows fill a batch of four: it runs at once.
	batching := &manifest.Batching{MaxBatchSize: 4, MaxDelay: manifest.Duration(3600e9)}
	models := inferencetest.Models{"digits": {Name: "digits", Metadata: digitsMeta, Upstream: up, Batching: batching}}
	h := tr.Handler(inference.NewHandler(models, inference.Options{}))
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := do(t, h, "POST", "/v2/models/digits/infer", digitsInput("[2,64]", 128))
			if resp.StatusCode != 200 {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	tr.Flush(context.Background())
	spans := exp.GetSpans()
	var gateways, waits, batches []tracetest.SpanStub
	for _, s := range spans {
		switch s.Name {
		case tracing.SpanGateway:
			gateways = append(gateways, s)
		case tracing.SpanBatchWait:
			waits = append(waits, s)
		case tracing.SpanBatch:
			batches = append(batches, s)
		}
	}
	if len(gateways) != 2 || len(waits) != 2 || len(batches) != 1 || len(called) != 1 {
		t.Fatalf("%d gateway, %d batch wait, %d batch spans, %d instance calls", len(gateways), len(waits), len(batches), len(called))
	}
	parents := map[trace.SpanID]bool{}
	for _, g := range gateways {
		parents[g.SpanContext.SpanID()] = true
	}
	for _, w := range waits {
		if !parents[w.Parent.SpanID()] {
			t.Errorf("batch wait under %v, not a gateway span", w.Parent.SpanID())
		}
		if !strings.Contains(attrs(w), "tandem.batch.requests=2") {
			t.Errorf("batch wait attributes %s", attrs(w))
		}
	}
	b := batches[0]
	if !parents[b.Parent.SpanID()] || len(b.Links) != 2 {
		t.Fatalf("batch under %v with %d links", b.Parent.SpanID(), len(b.Links))
	}
	linked := map[trace.SpanID]bool{b.Links[0].SpanContext.SpanID(): true, b.Links[1].SpanContext.SpanID(): true}
	for _, w := range waits {
		if !linked[w.SpanContext.SpanID()] {
			t.Errorf("batch does not link wait %v", w.SpanContext.SpanID())
		}
	}
	if called[0].SpanID() != b.SpanContext.SpanID() {
		t.Fatalf("the instance was called under %v, want the batch span %v", called[0].SpanID(), b.SpanContext.SpanID())
	}
}

func attrs(s tracetest.SpanStub) string {
	var b strings.Builder
	for _, a := range s.Attributes {
		b.WriteString(string(a.Key) + "=" + a.Value.Emit() + " ")
	}
	return b.String()
}
