package onnx_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"tandem/internal/runtime/onnx/onnxtest"
)

// benchModels are the models the benchmarks run: the committed ones, and
// the OCR CNNs when scripts/fetch-ocr-model.sh has fetched them.
func benchModels(b *testing.B) map[string]string {
	m := map[string]string{
		"digits": onnxtest.ModelPath(b, "digits.onnx"),
		"iris":   onnxtest.ModelPath(b, "iris.onnx"),
	}
	for _, f := range []string{"ocr-cls", "ocr-rec"} {
		if p, ok := onnxtest.OCRModel(b, f+".onnx"); ok {
			m[f] = p
		} else {
			b.Logf("no %s: run scripts/fetch-ocr-model.sh", p)
		}
	}
	return m
}

// BenchmarkRuntime_ExecToReady measures the cold start of the runtime
// process per model: from exec until it listens with the model loaded.
//
//	go test ./internal/runtime/onnx -run XXX -bench ExecToReady -benchtime 20x
func BenchmarkRuntime_ExecToReady(b *testing.B) {
	onnxtest.RequireLibrary(b)
	models := benchModels(b)
	for _, name := range []string{"digits", "iris", "ocr-cls", "ocr-rec"} {
		path, ok := models[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			var ready []time.Duration
			for range b.N {
				s := onnxtest.Start(b, path, name)
				ready = append(ready, s.Ready)
				s.Stop()
			}
			slices.Sort(ready)
			b.ReportMetric(float64(ready[len(ready)/2].Microseconds())/1000, "p50-ready-ms")
			b.ReportMetric(float64(ready[len(ready)-1].Microseconds())/1000, "max-ready-ms")
		})
	}
}

// BenchmarkRuntime_Infer measures v2 REST infer of one row, warm, directly
// against the runtime, at 1 and 32 concurrent clients.
//
//	go test ./internal/runtime/onnx -run XXX -bench Runtime_Infer -benchtime 5000x
func BenchmarkRuntime_Infer(b *testing.B) {
	onnxtest.RequireLibrary(b)
	for _, name := range []string{"digits", "iris"} {
		rows := onnxtest.LoadRows(b, name)
		srv := onnxtest.Start(b, onnxtest.ModelPath(b, name+".onnx"), name)
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{
			"name": "input", "datatype": "FP32", "shape": []int{1, len(rows.Rows[0])}, "data": rows.Rows[0]}}})
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		url := srv.URL + "/v2/models/" + name + "/infer"
		call := func() error {
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
		for range 200 { // warm up
			call()
		}
		for _, clients := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", name, clients), func(b *testing.B) {
				lat, err := onnxtest.RunClients(clients, b.N, call)
				if err != nil {
					b.Fatal(err)
				}
				lat.Report(b)
			})
		}
		srv.Stop()
	}
}
