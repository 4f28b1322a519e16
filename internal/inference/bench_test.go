package inference_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"tandem/internal/inference"
	"tandem/internal/inference/inferencetest"
	"tandem/internal/manifest"
	"tandem/internal/runtime/onnx"
	"tandem/internal/runtime/onnx/onnxtest"
)

func poster(client *http.Client, url string, body []byte) func() error {
	return func() error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
}

// BenchmarkService_Infer compares v2 infer of one digits row, warm, sent
// directly to the runtime and through the v2 handler (validation, then
// forwarding), at 1 and 32 concurrent clients.
//
//	go test ./internal/inference -run XXX -bench Service_Infer -benchtime 5000x
func BenchmarkService_Infer(b *testing.B) {
	onnxtest.RequireLibrary(b)
	path := onnxtest.ModelPath(b, "digits.onnx")
	srv := onnxtest.Start(b, path, "digits")
	md, err := onnx.Describe(path)
	if err != nil {
		b.Fatal(err)
	}
	up := &inferencetest.HTTPUpstream{BaseURL: srv.URL}
	gw := httptest.NewServer(inference.NewHandler(inferencetest.Models{"digits": {Name: "digits", Metadata: md, Upstream: up}}, inference.Options{}))
	defer gw.Close()
	rows := onnxtest.LoadRows(b, "digits")
	body := rowsRequest("", rows.Rows[:1])
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, target := range []struct{ name, url string }{{"direct", srv.URL}, {"handler", gw.URL}} {
		call := poster(client, target.url+"/v2/models/digits/infer", body)
		for range 200 {
			call()
		}
		for _, clients := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", target.name, clients), func(b *testing.B) {
				lat, err := onnxtest.RunClients(clients, b.N, call)
				if err != nil {
					b.Fatal(err)
				}
				lat.Report(b)
			})
		}
	}
}

// BenchmarkBatching runs 64 concurrent clients through the v2 handler to
// a runtime process, with batching off and on (max_batch_size 32 or 8,
// max_delay 2ms), on two models: the PaddleOCR text-direction classifier
// (a real CNN, fetched by scripts/fetch-ocr-model.sh; one 3x48x192 image
// per request), and the digits MLP (one row per request).
//
//	go test ./internal/inference -run XXX -bench Batching -benchtime 3000x
func BenchmarkBatching(b *testing.B) {
	onnxtest.RequireLibrary(b)
	b.Run("model=ocr-cls", func(b *testing.B) {
		path, ok := onnxtest.OCRModel(b, "ocr-cls.onnx")
		if !ok {
			b.Skipf("SKIPPING: %s missing (run scripts/fetch-ocr-model.sh)", path)
		}
		// Pixels normalised as PaddleOCR does: (p/255 - 0.5) / 0.5.
		rng := rand.New(rand.NewPCG(1, 2))
		img := make([]float32, 3*48*192)
		for i := range img {
			img[i] = (float32(rng.IntN(256))/255 - 0.5) / 0.5
		}
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{
			"name": "x", "datatype": "FP32", "shape": []int{1, 3, 48, 192}, "data": img}}})
		benchBatching(b, path, body)
	})
	b.Run("model=digits", func(b *testing.B) {
		benchBatching(b, onnxtest.ModelPath(b, "digits.onnx"), rowsRequest("", onnxtest.LoadRows(b, "digits").Rows[:1]))
	})
}

func benchBatching(b *testing.B, path string, body []byte) {
	md, err := onnx.Describe(path)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	for _, mode := range []struct {
		name     string
		batching *manifest.Batching
	}{
		{"off", nil},
		{"on/max=32", &manifest.Batching{MaxBatchSize: 32, MaxDelay: manifest.Duration(2 * time.Millisecond)}},
		{"on/max=8", &manifest.Batching{MaxBatchSize: 8, MaxDelay: manifest.Duration(2 * time.Millisecond)}},
	} {
		srv := onnxtest.Start(b, path, "m")
		up := &inferencetest.HTTPUpstream{BaseURL: srv.URL}
		models := inferencetest.Models{"m": {Name: "m", Metadata: md, Batching: mode.batching, Upstream: up}}
		gw := httptest.NewServer(inference.NewHandler(models, inference.Options{}))
		call := poster(client, gw.URL+"/v2/models/m/infer", body)
		onnxtest.RunClients(64, 256, call) // warm up
		b.Run("clients=64/batching="+mode.name, func(b *testing.B) {
			// CPU per request (this process: clients and handler; plus the
			// runtime) says what throughput the machine allows, even when
			// other work shares its CPUs and makes req/s noisy.
			cpu0 := onnxtest.SelfCPU() + srv.CPU()
			lat, err := onnxtest.RunClients(64, b.N, call)
			if err != nil {
				b.Fatal(err)
			}
			cpu := onnxtest.SelfCPU() + srv.CPU() - cpu0
			lat.Report(b)
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/req")
		})
		gw.Close()
		srv.Stop()
	}
}
