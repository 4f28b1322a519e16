package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/gateway"
	"tandem/internal/inference"
	"tandem/internal/inference/pb"
	"tandem/internal/manifest"
	"tandem/internal/store"
	"tandem/internal/tracing"
)

// traced is a gateway with tracing on, exporting into memory, over the
// fake backend, with its three doors.
type traced struct {
	url  string
	grpc pb.GRPCInferenceServiceClient
	tr   *tracing.Tracer
	exp  *tracetest.InMemoryExporter
	c    *controller.Controller

	mu   sync.Mutex
	seen []string // the traceparent of each request an instance got
}

// namedStage admits everything, in a span of its own name.
type namedStage struct{}

func (namedStage) Admit(context.Context, *gateway.Exchange) error { return nil }
func (namedStage) SpanName() string                               { return "authenticate" }

func newTraced(t *testing.T, yaml string) *traced {
	t.Helper()
	tt := &traced{exp: tracetest.NewInMemoryExporter()}
	var err error
	if tt.tr, err = tracing.New(context.Background(), tracing.Config{Exporter: tt.exp}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.tr.Shutdown(context.Background()) })
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var flaky atomic.Int64
	fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tt.mu.Lock()
		tt.seen = append(tt.seen, r.Header.Get("Traceparent"))
		tt.mu.Unlock()
		if r.URL.Path == "/flaky" && flaky.Add(1) == 1 {
			// Fail before answering: the gateway tries another instance.
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		v2Instance(w, r)
	}))
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	tt.c = c
	m, err := manifest.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(c, nil)
	gw.Use(namedStage{})
	v2 := inference.NewService(gw.V2Models(), inference.Options{Front: gw})
	gw.Handle("/v2", v2.Handler())
	gw.Handle("/v2/", v2.Handler())
	srv := httptest.NewServer(tt.tr.Handler(gw))
	t.Cleanup(srv.Close)
	tt.url = srv.URL
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := v2.GRPCServer(tt.tr.GRPCOptions()...)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tt.grpc = pb.NewGRPCInferenceServiceClient(conn)
	return tt
}

// trace returns the spans of traceID once its gateway span has ended
// (after the answer reached the client), waiting for it at most 10s.
func (tt *traced) trace(t *testing.T, traceID string) tracetest.SpanStubs {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		tt.tr.Flush(context.Background())
		var spans tracetest.SpanStubs
		done := false
		for _, s := range tt.exp.GetSpans() {
			if s.SpanContext.TraceID().String() == traceID {
				spans = append(spans, s)
				done = done || s.Name == tracing.SpanGateway
			}
		}
		if done {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("no gateway span in trace %s: %v", traceID, spanNames(spans))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tt *traced) lastSeen() string {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if len(tt.seen) == 0 {
		return ""
	}
	return tt.seen[len(tt.seen)-1]
}

func spanNames(spans tracetest.SpanStubs) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return n
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	t.Helper()
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no span %q among %v", name, spanNames(spans))
	}
	return out
}

func spanAttr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// traceID makes a caller's traceparent for test n.
func traceID(n int) (id, parent string) {
	id = fmt.Sprintf("%032x", 0xabc000+n)
	return id, "00-" + id + "-00f067aa0ba902b7-01"
}

// TestTracing_ColdStartPassThrough: a request woken from zero is one trace,
// continued from the caller's: the gateway span under the caller's, with
// its admission stage, its queue wait, the cold start (trigger, exec,
// ready) and the instance call as children; the instance got a traceparent
// naming the call.
func TestTracing_ColdStartPassThrough(t *testing.T) {
	tt := newTraced(t, "name: m\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n")
	id, parent := traceID(1)
	req, _ := http.NewRequest("GET", tt.url+"/models/m/a", nil)
	req.Header.Set("Traceparent", parent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(gateway.HeaderColdStart) != "true" {
		t.Fatalf("%d cold=%s", resp.StatusCode, resp.Header.Get(gateway.HeaderColdStart))
	}
	spans := tt.trace(t, id)
	gw := spanNamed(t, spans, tracing.SpanGateway)[0]
	if gw.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("gateway span's parent %v, want the caller's", gw.Parent.SpanID())
	}
	if spanAttr(gw, "http.response.status_code") != "200" || spanAttr(gw, "tandem.model") != "m" ||
		spanAttr(gw, "tandem.cold_start") != "true" || spanAttr(gw, "tandem.protocol") != "http" {
		t.Fatalf("gateway span attributes %v", gw.Attributes)
	}
	under := func(s tracetest.SpanStub, p tracetest.SpanStub) bool {
		return s.Parent.SpanID() == p.SpanContext.SpanID()
	}
	for _, name := range []string{"authenticate", tracing.SpanQueue, tracing.SpanColdStart, tracing.SpanCall} {
		if s := spanNamed(t, spans, name); len(s) != 1 || !under(s[0], gw) {
			t.Errorf("%s: %d spans, want one under the gateway span", name, len(s))
		}
	}
	cs := spanNamed(t, spans, tracing.SpanColdStart)[0]
	for _, phase := range []string{"trigger", "exec", "ready"} {
		if p := spanNamed(t, spans, phase); len(p) != 1 || !under(p[0], cs) {
			t.Errorf("phase %s is not one span under the cold start", phase)
		}
	}
	if q := spanNamed(t, spans, tracing.SpanQueue)[0]; spanAttr(q, "tandem.cold_start") != "true" {
		t.Errorf("queue attributes %v", q.Attributes)
	}
	call := spanNamed(t, spans, tracing.SpanCall)[0]
	if got, want := tt.lastSeen(), tracing.Traceparent(call.SpanContext); got != want {
		t.Fatalf("instance got traceparent %q, want %q", got, want)
	}

	// Warm, without a caller's trace: a new root, and no queue span.
	resp, err = http.Get(tt.url + "/models/m/b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := tt.lastSeen()
	spans = tt.trace(t, seen[3:35])
	if g := spanNamed(t, spans, tracing.SpanGateway)[0]; g.Parent.IsValid() {
		t.Fatalf("a request without traceparent has parent %v", g.Parent)
	}
	for _, s := range spans {
		if s.Name == tracing.SpanQueue || s.Name == tracing.SpanColdStart {
			t.Fatalf("a warm request has a %s span", s.Name)
		}
	}
}

// TestTracing_RetryIsASpanPerAttempt: a call that fails before an answer
// and goes to another instance has two attempt spans, the first failed,
// and the instance that answers gets the second's traceparent.
func TestTracing_RetryIsASpanPerAttempt(t *testing.T) {
	tt := newTraced(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 2, max: 2}\n")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, _ := tt.c.Status("m"); st.Ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instances not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	id, parent := traceID(2)
	req, _ := http.NewRequest("GET", tt.url+"/models/m/flaky", nil)
	req.Header.Set("Traceparent", parent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	spans := tt.trace(t, id)
	gw := spanNamed(t, spans, tracing.SpanGateway)[0]
	calls := spanNamed(t, spans, tracing.SpanCall)
	if len(calls) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(calls))
	}
	byAttempt := map[string]tracetest.SpanStub{}
	for _, c := range calls {
		if c.Parent.SpanID() != gw.SpanContext.SpanID() {
			t.Errorf("attempt %s is not under the gateway span", spanAttr(c, "tandem.attempt"))
		}
		byAttempt[spanAttr(c, "tandem.attempt")] = c
	}
	first, second := byAttempt["1"], byAttempt["2"]
	if first.Status.Code != codes.Error || second.Status.Code == codes.Error || spanAttr(second, "http.response.status_code") != "200" {
		t.Fatalf("attempt statuses %v, %v", first.Status, second.Status)
	}
	if spanAttr(first, "tandem.instance") == spanAttr(second, "tandem.instance") {
		t.Fatal("the retry went to the same instance")
	}
	if got, want := tt.lastSeen(), tracing.Traceparent(second.SpanContext); got != want {
		t.Fatalf("instance got traceparent %q, want the second attempt's %q", got, want)
	}
}

// TestTracing_V2Doors: v2 REST and gRPC requests continue the caller's
// trace to the instance the same way.
func TestTracing_V2Doors(t *testing.T) {
	tt := newTraced(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\n")
	id, parent := traceID(3)
	req, _ := http.NewRequest("POST", tt.url+"/v2/models/m/infer", strings.NewReader(inferBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", parent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("REST: %d %s", resp.StatusCode, b)
	}
	checkCall := func(door, id string) {
		t.Helper()
		spans := tt.trace(t, id)
		gw := spanNamed(t, spans, tracing.SpanGateway)[0]
		call := spanNamed(t, spans, tracing.SpanCall)[0]
		if call.Parent.SpanID() != gw.SpanContext.SpanID() || gw.Parent.SpanID().String() != "00f067aa0ba902b7" {
			t.Fatalf("%s: spans not nested under the caller's: %v", door, spanNames(spans))
		}
		if got, want := tt.lastSeen(), tracing.Traceparent(call.SpanContext); got != want {
			t.Fatalf("%s: instance got traceparent %q, want %q", door, got, want)
		}
	}
	checkCall("REST", id)

	id, parent = traceID(4)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", parent)
	if _, err := tt.grpc.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{
		Name: "x", Datatype: "FP32", Shape: []int64{1, 1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}},
	}}}); err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	checkCall("gRPC", id)
}
