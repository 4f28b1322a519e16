package inference_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"tandem/internal/inference"
	"tandem/internal/inference/inferencetest"
	"tandem/internal/manifest"
)

var digitsMeta = &inference.ModelMetadata{
	Name: "digits", Versions: []string{"1"}, Platform: "onnxruntime_onnx",
	Inputs: []inference.TensorMetadata{{Name: "input", Datatype: inference.FP32, Shape: []int64{-1, 64}}},
	Outputs: []inference.TensorMetadata{
		{Name: "label", Datatype: inference.Int64, Shape: []int64{-1}},
		{Name: "probabilities", Datatype: inference.FP32, Shape: []int64{-1, 10}},
	},
}

// okModel answers every infer with label 7 per row, and records calls.
func okModel() *inferencetest.Upstream {
	return &inferencetest.Upstream{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hl, _ := inference.ParseBinaryLength(r.Header.Get(inference.HeaderBinaryLength))
		req, err := inference.DecodeInferRequestBinary(body, hl)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		rows := req.Inputs[0].Shape[0]
		labels := make([]int64, rows)
		for i := range labels {
			labels[i] = 7
		}
		resp := &inference.InferResponse{ModelName: "digits", ID: req.ID, Outputs: []inference.Tensor{inference.NewTensor("label", []int64{rows}, labels)}}
		w.Header().Set("Content-Type", "application/json")
		w.Write(resp.AppendJSON(nil))
	})}
}

// errorBody is the protocol's error object: one string.
type errorBody struct {
	Error string `json:"error"`
}

func do(t *testing.T, h http.Handler, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func digitsInput(shape string, n int) string {
	data := make([]string, n)
	for i := range data {
		data[i] = "0.5"
	}
	return `{"inputs":[{"name":"input","datatype":"FP32","shape":` + shape + `,"data":[` + strings.Join(data, ",") + `]}]}`
}

// TestHandler_validation checks that bad requests are answered at the front
// door with the problem named, and never reach (or wake) an instance.
func TestHandler_validation(t *testing.T) {
	up := okModel()
	models := inferencetest.Models{"digits": {Name: "digits", Metadata: digitsMeta, Upstream: up, Ready: func() bool { return false }}}
	h := inference.NewHandler(models, inference.Options{MaxBodyBytes: 4096})
	infer := "/v2/models/digits/infer"
	cases := []struct {
		name, path, body string
		status           int
		code, field      string
		msg, details     string // details: what was expected and received, in the message's words
	}{
		{"wrong input name", infer, `{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,64],"data":[` + strings.Repeat("1,", 63) + `1]}]}`,
			400, "invalid_input", "inputs[0].name", `the model has no input "pixels"`, ""},
		{"wrong datatype", infer, `{"inputs":[{"name":"input","datatype":"INT64","shape":[1,64],"data":[` + strings.Repeat("1,", 63) + `1]}]}`,
			400, "invalid_input", "inputs[0].datatype", `input "input" is FP32, not INT64`, ""},
		{"wrong shape", infer, digitsInput("[1,65]", 65),
			400, "invalid_input", "inputs[0].shape", "shape [1,65] does not match", `shape [-1,64]`},
		{"wrong element count", infer, digitsInput("[2,64]", 100),
			400, "invalid_input", "inputs[0].data", "has 100 elements; shape [2,64] needs 128", ""},
		{"malformed JSON", infer, `{"inputs": [{"name": "input",`, 400, "invalid_json", "", "not valid JSON", ""},
		{"empty body", infer, ``, 400, "empty_body", "", "empty", ""},
		{"oversized body", infer, `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[` + strings.Repeat("0.000001,", 600) + `1]}]}`,
			413, "body_too_large", "", "larger than the limit of 4096 bytes", ""},
		{"unknown model", "/v2/models/nope/infer", digitsInput("[1,64]", 64), 404, "model_not_found", "", `no model "nope"`, ""},
		{"unknown version", "/v2/models/digits/versions/2/infer", digitsInput("[1,64]", 64), 404, "model_version_not_found", "", `no version "2"`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, h, "POST", c.path, c.body)
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
			}
			// The field leads the message; the code and who said it end it.
			if resp.StatusCode != c.status || !strings.HasPrefix(e.Error, c.field) ||
				!strings.Contains(e.Error, c.msg) || !strings.HasSuffix(e.Error, "("+c.code+", from gateway)") {
				t.Errorf("got %d %s", resp.StatusCode, body)
			}
			if !strings.Contains(e.Error, c.details) {
				t.Errorf("%s does not say %s", e.Error, c.details)
			}
		})
	}
	if calls := up.Calls(); len(calls) != 0 {
		t.Errorf("bad requests reached the instance: %v", calls)
	}
}

// TestHandler_metadataNeverWakes asks every read-only endpoint of a model
// with no instance ready: answers come from the cache, nothing is sent.
func TestHandler_metadataNeverWakes(t *testing.T) {
	up := okModel()
	models := inferencetest.Models{"digits": {Name: "digits", Metadata: digitsMeta, Upstream: up, Ready: func() bool { return false }}}
	h := inference.NewHandler(models, inference.Options{ServerVersion: "1.2.3"})
	cases := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/v2", 200, `{"name":"tandem","version":"1.2.3","extensions":["binary_tensor_data"]}`},
		{"GET", "/v2/", 200, `{"name":"tandem","version":"1.2.3","extensions":["binary_tensor_data"]}`},
		{"GET", "/v2/health/live", 200, `{"live":true}`},
		{"GET", "/v2/health/ready", 200, `{"ready":true}`},
		{"GET", "/v2/models/digits", 200, ""},
		{"GET", "/v2/models/digits/versions/1", 200, ""},
		{"GET", "/v2/models/digits/ready", 200, `{"name":"digits","ready":false}`},
		{"GET", "/v2/models/digits/versions/1/ready", 200, `{"name":"digits","ready":false}`},
		{"GET", "/v2/models/nope", 404, ""},
		{"GET", "/v2/models/digits/versions/9", 404, ""},
		{"GET", "/v2/models/digits/infer", 405, ""},
		{"POST", "/v2/models/digits", 405, ""},
		{"GET", "/v2/models/digits/explain", 404, ""},
		{"GET", "/v2/other", 404, ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			resp, body := do(t, h, c.method, c.path, "")
			if resp.StatusCode != c.status || (c.body != "" && strings.TrimSpace(string(body)) != c.body) {
				t.Errorf("got %d %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	_, body := do(t, h, "GET", "/v2/models/digits", "")
	var md inference.ModelMetadata
	json.Unmarshal(body, &md)
	if !reflect.DeepEqual(&md, digitsMeta) {
		t.Errorf("metadata %s", body)
	}
	if calls := up.Calls(); len(calls) != 0 {
		t.Errorf("metadata requests reached the instance: %v", calls)
	}
	// Once an instance is ready, the model says so.
	models["digits"] = inference.Model{Name: "digits", Metadata: digitsMeta, Upstream: up, Ready: func() bool { return true }}
	if resp, body := do(t, h, "GET", "/v2/models/digits/ready", ""); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"name":"digits","ready":true}` {
		t.Errorf("ready: %d %s", resp.StatusCode, body)
	}
}

func TestHandler_infer(t *testing.T) {
	up := okModel()
	up.ColdStart = true
	models := inferencetest.Models{"digits": {Name: "digits", Metadata: digitsMeta, Upstream: up}}
	h := inference.NewHandler(models, inference.Options{})
	resp, body := do(t, h, "POST", "/v2/models/digits/versions/1/infer?trace=1", `{"id":"a",`+digitsInput("[1,64]", 64)[1:])
	if resp.StatusCode != 200 || resp.Header.Get(inference.HeaderColdStart) != "true" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
	out, err := inference.DecodeInferResponse(body)
	if err != nil || out.ID != "a" {
		t.Fatalf("%v %s", err, body)
	}
	// The decoded request goes on to the unversioned path.
	if calls := up.Calls(); !slices.Equal(calls, []string{"POST /v2/models/digits/infer"}) {
		t.Errorf("calls %v", calls)
	}
}

// TestHandler_passThrough covers deployments without cached metadata (a
// user's own v2 server): nothing is validated, everything is forwarded.
func TestHandler_passThrough(t *testing.T) {
	up := &inferencetest.Upstream{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-From", "instance")
		w.WriteHeader(418)
		io.WriteString(w, r.Method+" "+r.URL.Path)
	})}
	models := inferencetest.Models{"custom": {Name: "custom", Upstream: up, Batching: &manifest.Batching{MaxBatchSize: 8}}}
	h := inference.NewHandler(models, inference.Options{})
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v2/models/custom", ""},
		{"POST", "/v2/models/custom/versions/3/infer", `{"anything": true}`},
	} {
		resp, body := do(t, h, c.method, c.path, c.body)
		if resp.StatusCode != 418 || string(body) != c.method+" "+c.path || resp.Header.Get("X-From") != "instance" ||
			resp.Header.Get(inference.HeaderColdStart) != "false" {
			t.Errorf("%s %s: %d %s %v", c.method, c.path, resp.StatusCode, body, resp.Header)
		}
	}
}

// TestHandler_modelErrors checks that an instance's own error comes back
// with its status, marked as said by the model, on the batched path too.
func TestHandler_modelErrors(t *testing.T) {
	up := &inferencetest.Upstream{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		io.WriteString(w, `{"error":"out of memory"}`)
	})}
	batching := &manifest.Batching{MaxBatchSize: 4, MaxDelay: manifest.Duration(1)}
	models := inferencetest.Models{"digits": {Name: "digits", Metadata: digitsMeta, Upstream: up, Batching: batching}}
	h := inference.NewHandler(models, inference.Options{})
	resp, body := do(t, h, "POST", "/v2/models/digits/infer", digitsInput("[1,64]", 64))
	var e errorBody
	json.Unmarshal(body, &e)
	if resp.StatusCode != 500 || e.Error != "out of memory (model_error, from model)" {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
}
