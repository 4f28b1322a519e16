package inference_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"tandem/internal/inference"
	"tandem/internal/inference/inferencetest"
	"tandem/internal/inference/pb"
	"tandem/internal/manifest"
	"tandem/internal/runtime/onnx"
	"tandem/internal/runtime/onnx/onnxtest"
)

// runtimeModel starts the built-in runtime for models/NAME.onnx as a real
// process and returns the model as the gateway would hand it over: metadata
// from Describe (as at deploy time), the process as Upstream.
func runtimeModel(t *testing.T, name string, batching *manifest.Batching) (inference.Model, *inferencetest.HTTPUpstream) {
	t.Helper()
	onnxtest.RequireLibrary(t)
	path := onnxtest.ModelPath(t, name+".onnx")
	md, err := onnx.Describe(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := onnxtest.Start(t, path, name)
	up := &inferencetest.HTTPUpstream{BaseURL: srv.URL}
	return inference.Model{Name: name, Metadata: md, Batching: batching, Upstream: up, Ready: func() bool { return up.Calls() > 0 }}, up
}

func rowsRequest(id string, rows [][]float64) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": id,
		"inputs": []map[string]any{{"name": "input", "datatype": "FP32",
			"shape": []int{len(rows), len(rows[0])}, "data": rows}},
	})
	return b
}

func postInfer(t testing.TB, url string, body []byte) (*http.Response, *inference.InferResponse) {
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("infer: %d %s", resp.StatusCode, data)
	}
	out, err := inference.DecodeInferResponse(data)
	if err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return resp, out
}

// postBinary sends one row in the binary data extension, asking for the
// outputs in binary too, and decodes the answer.
func postBinary(t testing.TB, url, id string, row []float64) *inference.InferResponse {
	f := make([]float32, len(row))
	for i, v := range row {
		f[i] = float32(v)
	}
	req := &inference.InferRequest{ID: id, Inputs: []inference.Tensor{inference.NewTensor("input", []int64{1, int64(len(row))}, f)}}
	body, n := req.AppendBinary(nil, true)
	hreq, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	hreq.Header.Set(inference.HeaderBinaryLength, fmt.Sprint(n))
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	hl, err := inference.ParseBinaryLength(resp.Header.Get(inference.HeaderBinaryLength))
	if resp.StatusCode != 200 || err != nil || hl < 0 {
		t.Fatalf("binary infer: %d %q %s", resp.StatusCode, resp.Header.Get(inference.HeaderBinaryLength), data)
	}
	out, err := inference.DecodeInferResponseBinary(data, hl)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func output(t testing.TB, r *inference.InferResponse, name string) *inference.Tensor {
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return &r.Outputs[i]
		}
	}
	t.Fatalf("no output %q in %+v", name, r)
	return nil
}

// TestService_REST_sklearnLabels: v2 REST through the handler to a real
// runtime process gives sklearn's labels; the first call reports the cold
// start, the next does not; metadata was answered before any call.
func TestService_REST_sklearnLabels(t *testing.T) {
	for _, name := range []string{"digits", "iris"} {
		t.Run(name, func(t *testing.T) {
			m, up := runtimeModel(t, name, nil)
			rows := onnxtest.LoadRows(t, name)
			gw := httptest.NewServer(inference.NewHandler(inferencetest.Models{name: m}, inference.Options{}))
			defer gw.Close()

			resp, err := http.Get(gw.URL + "/v2/models/" + name)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("metadata: %v %v", resp, err)
			}
			resp.Body.Close()
			if up.Calls() != 0 {
				t.Fatal("metadata woke the model")
			}
			for i, cold := range []string{"true", "false"} {
				resp, out := postInfer(t, gw.URL+"/v2/models/"+name+"/infer", rowsRequest(fmt.Sprint("req", i), rows.Rows))
				if got := resp.Header.Get(inference.HeaderColdStart); got != cold {
					t.Errorf("call %d: %s %q, want %q", i, inference.HeaderColdStart, got, cold)
				}
				labels, _ := inference.Values[int64](output(t, out, "label"))
				if !reflect.DeepEqual(labels, rows.Labels) || out.ID != fmt.Sprint("req", i) {
					t.Errorf("labels %v id %q; sklearn says %v", labels, out.ID, rows.Labels)
				}
			}
		})
	}
}

func grpcClient(t *testing.T, srv *grpc.Server) pb.GRPCInferenceServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewGRPCInferenceServiceClient(conn)
}

// TestService_GRPC_sklearnLabels: the same through gRPC, with typed and raw
// contents, plus the protocol's other calls and a validation error that
// never reaches the instance.
func TestService_GRPC_sklearnLabels(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"digits", "iris"} {
		t.Run(name, func(t *testing.T) {
			m, up := runtimeModel(t, name, nil)
			rows := onnxtest.LoadRows(t, name)
			c := grpcClient(t, inference.NewGRPCServer(inferencetest.Models{name: m}, inference.Options{}))

			if r, err := c.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.Live {
				t.Errorf("ServerLive: %v %v", r, err)
			}
			if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
				t.Errorf("ServerReady: %v %v", r, err)
			}
			if r, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{}); err != nil || r.Name != "tandem" {
				t.Errorf("ServerMetadata: %v %v", r, err)
			}
			if r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: name}); err != nil || r.Ready {
				t.Errorf("ModelReady before any call: %v %v", r, err)
			}
			md, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: name})
			if err != nil || md.Name != name || md.Platform != "onnxruntime_onnx" || md.Inputs[0].Name != "input" ||
				!reflect.DeepEqual(md.Inputs[0].Shape, []int64{-1, int64(len(rows.Rows[0]))}) {
				t.Errorf("ModelMetadata: %v %v", md, err)
			}
			if _, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
				t.Errorf("ModelMetadata(nope): %v", err)
			}
			if up.Calls() != 0 {
				t.Fatal("metadata calls woke the model")
			}

			// Wrong shape: InvalidArgument naming the field, no call made.
			_, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: name, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
				Name: "input", Datatype: "FP32", Shape: []int64{1, 3}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}}}}})
			if status.Code(err) != codes.InvalidArgument || !bytes.Contains([]byte(err.Error()), []byte("inputs[0].shape")) || up.Calls() != 0 {
				t.Errorf("bad shape: %v (calls %d)", err, up.Calls())
			}

			shape := []int64{int64(len(rows.Rows)), int64(len(rows.Rows[0]))}
			typed := &pb.ModelInferRequest{ModelName: name, Id: "typed", Inputs: []*pb.ModelInferRequest_InferInputTensor{{
				Name: "input", Datatype: "FP32", Shape: shape, Contents: &pb.InferTensorContents{Fp32Contents: rows.Flat()}}}}
			var header metadata.MD
			r, err := c.ModelInfer(ctx, typed, grpc.Header(&header))
			if err != nil {
				t.Fatal(err)
			}
			if got := header.Get(inference.GRPCHeaderColdStart); len(got) != 1 || got[0] != "true" {
				t.Errorf("cold start header %v", got)
			}
			for _, o := range r.Outputs {
				if o.Name == "label" && (!reflect.DeepEqual(o.Contents.GetInt64Contents(), rows.Labels) || r.Id != "typed") {
					t.Errorf("typed: labels %v id %q; sklearn says %v", o.Contents.GetInt64Contents(), r.Id, rows.Labels)
				}
			}

			raw := inference.NewTensor("input", shape, rows.Flat()).Raw
			r, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: name, ModelVersion: "1",
				Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: shape}},
				Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "label"}},
				RawInputContents: [][]byte{raw}})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Outputs) != 1 || len(r.RawOutputContents) != 1 {
				t.Fatalf("raw: %v", r)
			}
			lt := inference.Tensor{Name: "label", Datatype: inference.Int64, Raw: r.RawOutputContents[0]}
			if labels, _ := inference.Values[int64](&lt); !reflect.DeepEqual(labels, rows.Labels) {
				t.Errorf("raw: labels %v; sklearn says %v", labels, rows.Labels)
			}
			if r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: name}); err != nil || !r.Ready {
				t.Errorf("ModelReady after a call: %v %v", r, err)
			}
		})
	}
}

// variants makes n distinct digits rows from the committed ones.
func variants(rows [][]float64, n int) [][]float64 {
	out := make([][]float64, n)
	for k := range out {
		base := rows[k%len(rows)]
		row := make([]float64, len(base))
		for j, v := range base {
			row[j] = v * (1 - 0.02*float64(k/len(rows)))
		}
		row[k%len(row)] += 0.25
		out[k] = row
	}
	return out
}

// TestService_batching sends 64 concurrent single-row requests with
// batching on: each caller must get exactly the answer an unbatched call
// gives for its row, and the batch-size histogram must show batches of
// more than one request.
func TestService_batching(t *testing.T) {
	const n = 64
	m, up := runtimeModel(t, "digits", nil)
	rows := variants(onnxtest.LoadRows(t, "digits").Rows, n)

	plain := httptest.NewServer(inference.NewHandler(inferencetest.Models{"digits": m}, inference.Options{}))
	defer plain.Close()
	want := make([]*inference.InferResponse, n)
	for i, row := range rows {
		_, want[i] = postInfer(t, plain.URL+"/v2/models/digits/infer", rowsRequest(fmt.Sprint("row", i), [][]float64{row}))
	}
	unbatchedCalls := up.Calls()

	// Batches close only when full (the delay is far beyond the test), so
	// 64 requests make exactly 8 batches of 8, whatever the scheduling.
	batched := m
	batched.Batching = &manifest.Batching{MaxBatchSize: 8, MaxDelay: manifest.Duration(time.Hour)}
	reg := prometheus.NewRegistry()
	gw := httptest.NewServer(inference.NewHandler(inferencetest.Models{"digits": batched}, inference.Options{Registerer: reg}))
	defer gw.Close()
	got := make([]*inference.InferResponse, n)
	var wg sync.WaitGroup
	for i, row := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%4 == 0 { // some callers use the binary data extension both ways
				got[i] = postBinary(t, gw.URL+"/v2/models/digits/infer", fmt.Sprint("row", i), row)
				return
			}
			_, got[i] = postInfer(t, gw.URL+"/v2/models/digits/infer", rowsRequest(fmt.Sprint("row", i), [][]float64{row}))
		}()
	}
	wg.Wait()

	for i := range rows {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d: batched answer differs from the unbatched one:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if calls := up.Calls() - unbatchedCalls; calls != n/8 {
		t.Errorf("%d calls to the instance for %d requests, want %d", calls, n, n/8)
	}
	count, bigger := batchHistogram(t, reg, "tandem_batch_size")
	if count != n/8 || bigger != n/8 {
		t.Errorf("tandem_batch_size: %d batches, %d of more than one request; want %d and %d", count, bigger, n/8, n/8)
	}
	if c, _ := batchHistogram(t, reg, "tandem_batch_queue_delay_seconds"); c != n {
		t.Errorf("tandem_batch_queue_delay_seconds has %d samples, want %d", c, n)
	}
}

// batchHistogram returns a histogram's sample count and how many samples
// were above 1.
func batchHistogram(t *testing.T, reg *prometheus.Registry, name string) (count, above1 uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			count += h.GetSampleCount()
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 1 {
					above1 += h.GetSampleCount() - b.GetCumulativeCount()
				}
			}
		}
	}
	return count, above1
}
