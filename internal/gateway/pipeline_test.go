package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/inference"
	"tandem/internal/inference/pb"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// doors is one gateway with its three doors: pass-through and v2 REST on
// an HTTP server, v2 gRPC on its own listener, over a controller with the
// fake backend, real metrics and a real cost meter.
type doors struct {
	http    *httptest.Server
	grpc    pb.GRPCInferenceServiceClient
	metrics *metrics.Metrics
	meter   *cost.Meter
	fb      *fake.Backend
}

// v2Instance answers the v2 infer route like a v2 model server: it echoes
// the request's first input as output "y". Requests with an X-Sleep header
// or a "sleep" id wait 5s first.
func v2Instance(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("X-Sleep") != "" || strings.Contains(string(body), `"sleep"`) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
			return
		}
	}
	if !strings.HasSuffix(r.URL.Path, "/infer") {
		io.WriteString(w, "ok "+r.URL.Path)
		return
	}
	var req struct {
		ID     string `json:"id"`
		Inputs []struct {
			Shape    []int64   `json:"shape"`
			Datatype string    `json:"datatype"`
			Data     []float32 `json:"data"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil || len(req.Inputs) == 0 {
		http.Error(w, `{"error": "bad request"}`, http.StatusBadRequest)
		return
	}
	in := req.Inputs[0]
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"model_name": "m", "id": req.ID,
		"outputs": []any{map[string]any{"name": "y", "datatype": in.Datatype, "shape": in.Shape, "data": in.Data}},
	})
}

func newDoors(t *testing.T, yaml string, stages ...gateway.Stage) *doors {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	meter, err := cost.Open(dir, cost.DefaultPrices(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meter.Close(time.Now()) })
	m := metrics.New()
	fb := fake.New(http.HandlerFunc(v2Instance))
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: m, Meter: meter})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	man, err := manifest.Parse([]byte(yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), man); err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(c, nil)
	gw.Use(stages...)
	v2 := inference.NewService(gw.V2Models(), inference.Options{Front: gw})
	gw.Handle("/v2", v2.Handler())
	gw.Handle("/v2/", v2.Handler())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := v2.GRPCServer()
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &doors{http: srv, grpc: pb.NewGRPCInferenceServiceClient(conn), metrics: m, meter: meter, fb: fb}
}

const inferBody = `{"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]}`

func (d *doors) post(t *testing.T, path, body string, h map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *doors) infer(ctx context.Context, id string, md ...string) (*pb.ModelInferResponse, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	return d.grpc.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "m", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
		Name: "x", Datatype: "FP32", Shape: []int64{1, 2},
		Contents: &pb.InferTensorContents{Fp32Contents: []float32{1.5, 2.5}},
	}}})
}

// Every door meters alike: requests by protocol and status, latency, cold
// starts and the cost meter's request count.
func TestPipeline_EveryProtocolMeteredAlike(t *testing.T) {
	d := newDoors(t, "name: m\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n")
	const n = 3
	for i := 0; i < n; i++ {
		if code, body := d.post(t, "/models/m/echo", "x", nil); code != 200 {
			t.Fatalf("pass-through: %d %s", code, body)
		}
		if code, body := d.post(t, "/v2/models/m/infer", inferBody, nil); code != 200 || !strings.Contains(body, `"name":"y"`) {
			t.Fatalf("v2 REST: %d %s", code, body)
		}
		out, err := d.infer(context.Background(), "g1")
		if err != nil || len(out.Outputs) != 1 {
			t.Fatalf("gRPC: %v %v", out, err)
		}
	}
	for _, proto := range []string{"http", "v2", "grpc"} {
		if got := requests(t, d.metrics, "m", proto, "200"); got != n {
			t.Errorf("tandem_requests_total{protocol=%q,code=200} = %v, want %d", proto, got, n)
		}
	}
	if got := sample(t, d.metrics, "tandem_request_duration_seconds", map[string]string{"model": "m"}); got != 3*n {
		t.Errorf("latency observations = %v, want %d", got, 3*n)
	}
	if got := sample(t, d.metrics, "tandem_cold_starts_total", map[string]string{"model": "m"}); got != 1 {
		t.Errorf("cold starts = %v, want 1 (the first request woke the model)", got)
	}
	now := time.Now()
	d.meter.Flush(now)
	rep, err := d.meter.Report("m", now.Add(-time.Hour), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Models) != 1 || rep.Models[0].Usage.Requests != 3*n {
		t.Fatalf("cost meter: %+v, want %d requests", rep.Models, 3*n)
	}
}

// timeouts.request bounds v2 REST and gRPC calls as it bounds pass-through.
func TestPipeline_RequestTimeoutOnEveryProtocol(t *testing.T) {
	d := newDoors(t, "name: m\nmode: dedicated\nruntime: {command: [x]}\ntimeouts: {request: 100ms}\n")
	slow := map[string]string{"X-Sleep": "5s"}
	if code, body := d.post(t, "/models/m/echo", "x", slow); code != http.StatusGatewayTimeout {
		t.Errorf("pass-through: %d %s, want 504", code, body)
	}
	code, body := d.post(t, "/v2/models/m/infer", strings.Replace(inferBody, `"r1"`, `"sleep"`, 1), nil)
	var v2err struct {
		Error string `json:"error"`
	}
	if code != http.StatusGatewayTimeout || json.Unmarshal([]byte(body), &v2err) != nil || !strings.Contains(v2err.Error, "timeouts.request") {
		t.Errorf("v2 REST: %d %s, want 504 {\"error\": \"... timeouts.request ...\"}", code, body)
	}
	_, err := d.infer(context.Background(), "sleep")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("gRPC: %v, want DeadlineExceeded", err)
	}
	for _, proto := range []string{"http", "v2", "grpc"} {
		if got := requests(t, d.metrics, "m", proto, "504"); got != 1 {
			t.Errorf("tandem_requests_total{protocol=%q,code=504} = %v, want 1", proto, got)
		}
	}
}

// A stage refuses before anything is queued or woken, on every door, in
// each protocol's own error shape.
func TestPipeline_StageRefusesBeforeWakeUp(t *testing.T) {
	deny := gateway.StageFunc(func(_ context.Context, ex *gateway.Exchange) error {
		if ex.Header.Get("X-Deny") != "" {
			return problem.New(http.StatusForbidden, "forbidden", fmt.Sprintf("%s: not for you", ex.Model))
		}
		return nil
	})
	d := newDoors(t, "name: m\nruntime: {command: [x]}\nscaling: {idle_timeout: 1h}\n", deny)
	h := map[string]string{"X-Deny": "1"}
	code, body := d.post(t, "/models/m/echo", "x", h)
	if code != http.StatusForbidden || !strings.Contains(body, `"code":"forbidden"`) {
		t.Errorf("pass-through: %d %s", code, body)
	}
	code, body = d.post(t, "/v2/models/m/infer", inferBody, h)
	if code != http.StatusForbidden || body != `{"error":"not for you (forbidden, from gateway)"}`+"\n" && !strings.HasPrefix(body, `{"error":"`) {
		t.Errorf("v2 REST: %d %s", code, body)
	}
	if _, err := d.infer(context.Background(), "g1", "x-deny", "1"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC: %v, want PermissionDenied", err)
	}
	if calls := d.fb.Calls(); len(calls) != 0 {
		t.Errorf("refused requests woke the model: %v", calls)
	}
	for _, proto := range []string{"http", "v2", "grpc"} {
		if got := requests(t, d.metrics, "m", proto, "403"); got != 1 {
			t.Errorf("tandem_requests_total{protocol=%q,code=403} = %v, want 1", proto, got)
		}
	}
	// Admitted requests go through.
	if code, body := d.post(t, "/v2/models/m/infer", inferBody, nil); code != 200 {
		t.Errorf("admitted v2: %d %s", code, body)
	}
}

func requests(t *testing.T, m *metrics.Metrics, model, proto, code string) float64 {
	return sample(t, m, "tandem_requests_total", map[string]string{"model": model, "protocol": proto, "code": code})
}

// sample reads a counter's value, or a histogram's count, from the
// registry; 0 when there is no such series.
func sample(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range mt.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if h := mt.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return mt.GetCounter().GetValue()
		}
	}
	return 0
}
