package inference_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"tandem/internal/inference"
	"tandem/internal/inference/inferencetest"
	"tandem/internal/pool"
)

// The Open Inference Protocol's REST messages as a JSON schema, written
// from the spec (see its description).
const oipSchemaFile = "testdata/oip-rest.schema.json"

var oipSchema struct {
	once     sync.Once
	compiler *jsonschema.Compiler
	err      error
	mu       sync.Mutex
	defs     map[string]*jsonschema.Schema
}

// oipDef returns the schema's $defs entry name, compiled.
func oipDef(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	oipSchema.once.Do(func() {
		b, err := os.ReadFile(oipSchemaFile)
		if err != nil {
			oipSchema.err = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			oipSchema.err = fmt.Errorf("%s is not JSON: %w", oipSchemaFile, err)
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		if err := c.AddResource("oip-rest.schema.json", doc); err != nil {
			oipSchema.err = err
			return
		}
		oipSchema.compiler, oipSchema.defs = c, map[string]*jsonschema.Schema{}
	})
	if oipSchema.err != nil {
		t.Fatal(oipSchema.err)
	}
	oipSchema.mu.Lock()
	defer oipSchema.mu.Unlock()
	if s, ok := oipSchema.defs[name]; ok {
		return s
	}
	s, err := oipSchema.compiler.Compile("oip-rest.schema.json#/$defs/" + name)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	oipSchema.defs[name] = s
	return s
}

// oipValidate checks a JSON document against the schema's $defs entry def.
func oipValidate(t *testing.T, def string, doc []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return oipDef(t, def).Validate(v)
}

var oipDigitsMeta = &inference.ModelMetadata{
	Name: "digits", Versions: []string{"1"}, Platform: inference.Platform,
	Inputs: []inference.TensorMetadata{{Name: "input", Datatype: inference.FP32, Shape: []int64{-1, 4}}},
	Outputs: []inference.TensorMetadata{
		{Name: "label", Datatype: inference.Int64, Shape: []int64{-1}},
		{Name: "probabilities", Datatype: inference.FP32, Shape: []int64{-1, 3}},
	},
}

// oipRuntime answers infer as the built-in runtime does: both outputs for
// every row, each in binary or JSON as the request asks.
func oipRuntime() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hl, _ := inference.ParseBinaryLength(r.Header.Get(inference.HeaderBinaryLength))
		req, err := inference.DecodeInferRequestBinary(body, hl)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rows := req.Inputs[0].Shape[0]
		labels, probs := make([]int64, rows), make([]float32, rows*3)
		for i := range labels {
			labels[i] = 2
			probs[i*3+2] = 1
		}
		resp := &inference.InferResponse{ModelName: "digits", ModelVersion: "1", ID: req.ID, Outputs: []inference.Tensor{
			inference.NewTensor("label", []int64{rows}, labels),
			inference.NewTensor("probabilities", []int64{rows, 3}, probs),
		}}
		if len(req.Outputs) > 0 {
			var keep []inference.Tensor
			for _, o := range resp.Outputs {
				for _, want := range req.Outputs {
					if o.Name == want.Name {
						keep = append(keep, o)
					}
				}
			}
			resp.Outputs = keep
		}
		inference.WriteInferResponse(w, resp, inference.BinaryOutputs(req))
	})
}

// oipCustom is a v2 server of a user's own (no cached metadata): tandem
// passes requests to it as they are.
func oipCustom() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "GET /v2/models/custom":
			io.WriteString(w, `{"name":"custom","versions":["7"],"platform":"python","inputs":[{"name":"x","datatype":"BYTES","shape":[-1]}],"outputs":[{"name":"y","datatype":"BYTES","shape":[-1]}]}`)
		case "POST /v2/models/custom/infer":
			io.WriteString(w, `{"model_name":"custom","id":"c1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[0.5]}]}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"no such endpoint"}`)
		}
	})
}

// errUpstream fails every request with err, as the activator does when it
// cannot get an instance.
type errUpstream struct{ err error }

func (u errUpstream) Do(context.Context, *http.Request) (*http.Response, bool, error) {
	return nil, true, u.err
}

func oipModels() inferencetest.Models {
	ready := func(b bool) func() bool { return func() bool { return b } }
	runtime := &inferencetest.Upstream{Handler: oipRuntime()}
	built := func(name string, up inference.Upstream, isReady bool) inference.Model {
		return inference.Model{Name: name, Metadata: oipDigitsMeta, Upstream: up, Ready: ready(isReady)}
	}
	answer := func(status int, body string) inference.Upstream {
		return &inferencetest.Upstream{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		})}
	}
	return inferencetest.Models{
		"digits": built("digits", runtime, false), // scaled to zero
		"warm":   built("warm", runtime, true),
		"custom": {Name: "custom", Upstream: &inferencetest.Upstream{Handler: oipCustom()}, Ready: ready(true)},
		// A user's own v2 server that cannot be woken: the gateway's error,
		// not the instance's, so in the protocol's shape too.
		"custom-full": {Name: "custom-full", Upstream: errUpstream{fmt.Errorf("waking custom-full: %w", pool.ErrQueueFull)}, Ready: ready(false)},
		"full":        built("full", errUpstream{fmt.Errorf("waking full: %w", pool.ErrQueueFull)}, false),
		"slow":        built("slow", errUpstream{fmt.Errorf("waking slow: %w", pool.ErrStartTimeout)}, false),
		"late":        built("late", errUpstream{fmt.Errorf("calling late: %w", context.DeadlineExceeded)}, true),
		"crash":       built("crash", errUpstream{errors.New("connection reset by peer")}, true),
		"broken":      built("broken", answer(200, "this is not JSON"), true),
		"oom":         built("oom", answer(500, `{"error":"out of memory"}`), true),
	}
}

func oipInput(rows int) string {
	data := make([]string, rows*4)
	for i := range data {
		data[i] = "0.25"
	}
	return `{"name":"input","datatype":"FP32","shape":[` + strconv.Itoa(rows) + `,4],"data":[` + strings.Join(data, ",") + `]}`
}

// oipBinaryRequest is a request in the binary tensor data extension: the
// JSON header, then the input's raw data.
func oipBinaryRequest() (body string, headerLen int) {
	req := &inference.InferRequest{ID: "bin", Inputs: []inference.Tensor{
		inference.NewTensor("input", []int64{1, 4}, []float32{1, 2, 3, 4}),
	}}
	b, n := req.AppendBinary(nil, false)
	return string(b), n
}

// TestHandler_conformsToOIP sends every v2 REST endpoint its successes and
// every class of error, over HTTP, and checks each answer's status and
// body against the protocol's schema: errors are {"error": "message"}.
func TestHandler_conformsToOIP(t *testing.T) {
	svc := inference.NewService(oipModels(), inference.Options{MaxBodyBytes: 16 << 10, ServerVersion: "9.9.9"})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	binBody, binLen := oipBinaryRequest()
	infer := func(model string) string { return "/v2/models/" + model + "/infer" }
	one := `{"id":"r1","inputs":[` + oipInput(1) + `]}`

	type check func(t *testing.T, h http.Header, body []byte)
	has := func(subs ...string) check {
		return func(t *testing.T, _ http.Header, body []byte) {
			for _, s := range subs {
				if !strings.Contains(string(body), s) {
					t.Errorf("%s does not contain %s", body, s)
				}
			}
		}
	}
	header := func(k, v string) check {
		return func(t *testing.T, h http.Header, _ []byte) {
			if h.Get(k) != v {
				t.Errorf("%s: %q, want %q", k, h.Get(k), v)
			}
		}
	}
	cases := []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		def                      string // the schema's $defs entry the answer must match
		checks                   []check
	}{
		// Server endpoints.
		{"server metadata", "GET", "/v2", "", nil, 200, "server_metadata_response",
			[]check{has(`"name":"tandem"`, `"version":"9.9.9"`, `"extensions":["binary_tensor_data"]`)}},
		{"server metadata, slash", "GET", "/v2/", "", nil, 200, "server_metadata_response", nil},
		{"server live", "GET", "/v2/health/live", "", nil, 200, "server_live_response", []check{has(`"live":true`)}},
		{"server ready", "GET", "/v2/health/ready", "", nil, 200, "server_ready_response", []check{has(`"ready":true`)}},

		// Model metadata and readiness: cached, never waking anything.
		{"model metadata", "GET", "/v2/models/digits", "", nil, 200, "model_metadata_response",
			[]check{has(`"name":"digits"`, `"versions":["1"]`, `"platform":"onnxruntime_onnx"`, `{"name":"input","datatype":"FP32","shape":[-1,4]}`)}},
		{"model metadata, version", "GET", "/v2/models/digits/versions/1", "", nil, 200, "model_metadata_response", nil},
		{"model metadata, trailing slash", "GET", "/v2/models/digits/", "", nil, 200, "model_metadata_response", nil},
		{"model metadata, pass-through", "GET", "/v2/models/custom", "", nil, 200, "model_metadata_response", []check{has(`"platform":"python"`)}},
		{"model ready, scaled to zero", "GET", "/v2/models/digits/ready", "", nil, 200, "model_ready_response",
			[]check{has(`{"name":"digits","ready":false}`)}},
		{"model ready, version", "GET", "/v2/models/digits/versions/1/ready", "", nil, 200, "model_ready_response",
			[]check{has(`"ready":false`)}},
		{"model ready, warm", "GET", "/v2/models/warm/versions/1/ready", "", nil, 200, "model_ready_response",
			[]check{has(`{"name":"warm","ready":true}`)}},
		{"model ready, pass-through", "GET", "/v2/models/custom/ready", "", nil, 200, "model_ready_response", []check{has(`"ready":true`)}},

		// Inference.
		{"infer", "POST", infer("digits"), one, nil, 200, "inference_response",
			[]check{has(`"model_name":"digits"`, `"model_version":"1"`, `"id":"r1"`, `"name":"label"`, `"name":"probabilities"`)}},
		{"infer, version, one output", "POST", "/v2/models/digits/versions/1/infer",
			`{"inputs":[` + oipInput(2) + `],"outputs":[{"name":"label"}]}`, nil, 200, "inference_response",
			[]check{has(`"shape":[2]`, `"data":[2,2]`)}},
		{"infer, pass-through", "POST", infer("custom"), `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["hi"]}]}`, nil,
			200, "inference_response", []check{has(`"data":[0.5]`)}},
		{"infer, binary outputs but one", "POST", infer("digits"),
			`{"parameters":{"binary_data_output":true},"inputs":[` + oipInput(1) + `],"outputs":[{"name":"label","parameters":{"binary_data":false}},{"name":"probabilities"}]}`,
			nil, 200, "binary_inference_response",
			[]check{has(`"name":"label","datatype":"INT64","shape":[1],"data":[2]`, `"binary_data_size":12`)}},
		{"infer, binary input", "POST", infer("digits"), binBody, map[string]string{inference.HeaderBinaryLength: strconv.Itoa(binLen)},
			200, "inference_response", []check{has(`"id":"bin"`)}},

		// Not found.
		{"unknown model: metadata", "GET", "/v2/models/nope", "", nil, 404, "error_response", []check{has(`no model \"nope\"`, "model_not_found")}},
		{"unknown model: ready", "GET", "/v2/models/nope/ready", "", nil, 404, "error_response", []check{has("model_not_found")}},
		{"unknown model: infer", "POST", infer("nope"), one, nil, 404, "error_response", []check{has("model_not_found")}},
		{"unknown version: metadata", "GET", "/v2/models/digits/versions/2", "", nil, 404, "error_response", []check{has("model_version_not_found")}},
		{"unknown version: ready", "GET", "/v2/models/digits/versions/2/ready", "", nil, 404, "error_response", []check{has("model_version_not_found")}},
		{"unknown version: infer", "POST", "/v2/models/digits/versions/2/infer", one, nil, 404, "error_response", []check{has("model_version_not_found")}},
		{"empty version", "GET", "/v2/models/digits/versions/", "", nil, 404, "error_response", []check{has("not_found")}},
		{"no endpoint", "GET", "/v2/other", "", nil, 404, "error_response", []check{has("no v2 endpoint at /v2/other")}},
		{"no model endpoint", "POST", "/v2/models/digits/explain", one, nil, 404, "error_response", nil},

		// Wrong method.
		{"GET infer", "GET", infer("digits"), "", nil, 405, "error_response", []check{has("method_not_allowed"), header("Allow", "POST")}},
		{"POST metadata", "POST", "/v2/models/digits", one, nil, 405, "error_response", []check{header("Allow", "GET, HEAD")}},
		{"DELETE server metadata", "DELETE", "/v2", "", nil, 405, "error_response", []check{header("Allow", "GET, HEAD")}},
		{"POST live", "POST", "/v2/health/live", "", nil, 405, "error_response", nil},

		// Bad requests, refused at the front door.
		{"wrong input name", "POST", infer("digits"), strings.Replace(one, `"name":"input"`, `"name":"pixels"`, 1), nil,
			400, "error_response", []check{has(`inputs[0].name: the model has no input \"pixels\"`, "(invalid_input, from gateway)")}},
		{"wrong datatype", "POST", infer("digits"), strings.Replace(one, `"FP32"`, `"FP64"`, 1), nil,
			400, "error_response", []check{has("inputs[0].datatype")}},
		{"wrong shape", "POST", infer("digits"), strings.Replace(one, `[1,4]`, `[1,5]`, 1), nil,
			400, "error_response", []check{has("inputs[0].shape", "[-1,4]")}},
		{"wrong element count", "POST", infer("digits"), strings.Replace(one, `[1,4]`, `[2,4]`, 1), nil,
			400, "error_response", []check{has("inputs[0].data")}},
		{"unknown output", "POST", infer("digits"), `{"inputs":[` + oipInput(1) + `],"outputs":[{"name":"logits"}]}`, nil,
			400, "error_response", []check{has("outputs[0]")}},
		{"malformed JSON", "POST", infer("digits"), `{"inputs": [`, nil, 400, "error_response", []check{has("invalid_json")}},
		{"empty body", "POST", infer("digits"), "", nil, 400, "error_response", []check{has("empty_body")}},
		{"empty body, pass-through", "POST", infer("custom"), "", nil, 400, "error_response", []check{has("empty_body")}},
		{"bad binary header length", "POST", infer("digits"), one, map[string]string{inference.HeaderBinaryLength: "lots"},
			400, "error_response", []check{has(inference.HeaderBinaryLength)}},
		{"too large", "POST", infer("digits"), `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[` + strings.Repeat("0.000001,", 2<<10) + `1]}]}`, nil,
			413, "error_response", []check{has("body_too_large")}},

		// Errors on the way to an instance, and an instance's own.
		{"queue full", "POST", infer("full"), one, nil, 503, "error_response", []check{has("queue full (queue_full, from gateway)"), header("Retry-After", "1")}},
		{"start timeout", "POST", infer("slow"), one, nil, 504, "error_response", []check{has("start_timeout"), header("Retry-After", "1")}},
		{"deadline", "POST", infer("late"), one, nil, 504, "error_response", []check{has("deadline_exceeded")}},
		{"instance unreachable", "POST", infer("crash"), one, nil, 500, "error_response", []check{has("connection reset by peer")}},
		{"instance answers garbage", "POST", infer("broken"), one, nil, 502, "error_response", []check{has("upstream_error")}},
		{"instance's own error", "POST", infer("oom"), one, nil, 500, "error_response", []check{has(`"out of memory (model_error, from model)"`)}},
		{"pass-through metadata, queue full", "GET", "/v2/models/custom-full", "", nil, 503, "error_response", []check{has("queue_full"), header("Retry-After", "1")}},
		{"pass-through infer, queue full", "POST", infer("custom-full"), one, nil, 503, "error_response", []check{has("queue_full"), header("Retry-After", "1")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			if c.method == "POST" && c.status == 200 && c.header == nil {
				if err := oipValidate(t, "inference_request", []byte(c.body)); err != nil {
					t.Fatalf("the test's own request is not a v2 inference request: %v", err)
				}
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			doc := body
			if n := resp.Header.Get(inference.HeaderBinaryLength); n != "" {
				hl, err := strconv.Atoi(n)
				if err != nil || hl > len(body) {
					t.Fatalf("%s: %q for a body of %d bytes", inference.HeaderBinaryLength, n, len(body))
				}
				doc = body[:hl]
			} else if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if err := oipValidate(t, c.def, doc); err != nil {
				t.Errorf("%d %s\ndoes not match %s: %v", resp.StatusCode, doc, c.def, err)
			}
			if c.def == "error_response" {
				var e map[string]any
				if json.Unmarshal(doc, &e) != nil || len(e) != 1 || e["error"] == "" {
					t.Errorf("want exactly {\"error\": \"message\"}, got %s", doc)
				}
			}
			for _, ck := range c.checks {
				ck(t, resp.Header, doc)
			}
		})
	}
}

// TestHandler_HEAD checks that every GET endpoint answers HEAD with the
// GET's status and headers and no body.
func TestHandler_HEAD(t *testing.T) {
	srv := httptest.NewServer(inference.NewHandler(oipModels(), inference.Options{}))
	defer srv.Close()
	for _, path := range []string{"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/digits", "/v2/models/digits/versions/1/ready", "/v2/models/nope"} {
		t.Run(path, func(t *testing.T) {
			get, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, get.Body)
			get.Body.Close()
			head, err := srv.Client().Head(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(head.Body)
			head.Body.Close()
			if head.StatusCode != get.StatusCode || len(body) != 0 ||
				head.Header.Get("Content-Type") != get.Header.Get("Content-Type") ||
				head.Header.Get("Content-Length") != get.Header.Get("Content-Length") {
				t.Errorf("HEAD %d %v %q; GET %d %v", head.StatusCode, head.Header, body, get.StatusCode, get.Header)
			}
		})
	}
}

// TestOIPSchema_rejects proves the schema can fail: answers that are not
// the protocol's, among them tandem's former error shape and its former
// bodiless not-ready answer, do not pass it.
func TestOIPSchema_rejects(t *testing.T) {
	cases := []struct{ def, doc string }{
		{"error_response", `{"error":{"code":"model_not_found","message":"no model \"nope\" is deployed","source":"gateway"}}`},
		{"error_response", `{"message":"no model"}`},
		{"error_response", `"no model"`},
		{"model_ready_response", `{"error":{"code":"model_not_ready","message":"no instance is ready"}}`},
		{"model_ready_response", `{"ready":false}`},
		{"model_ready_response", `{"name":"digits","ready":"false"}`},
		{"server_ready_response", `{"live":true}`},
		{"server_live_response", `{}`},
		{"server_metadata_response", `{"name":"tandem","version":"1"}`},
		{"server_metadata_response", `{"name":"tandem","version":"1","extensions":[{"name":"binary_tensor_data"}]}`},
		{"model_metadata_response", `{"name":"digits","platform":"onnxruntime_onnx","inputs":[{"name":"x","datatype":"FP32"}],"outputs":[]}`},
		{"model_metadata_response", `{"name":"digits","platform":"onnxruntime_onnx","inputs":[{"name":"x","datatype":"FLOAT","shape":[1]}],"outputs":[]}`},
		{"model_metadata_response", `{"name":"digits","inputs":[],"outputs":[]}`},
		{"inference_request", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}`},
		{"inference_request", `{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}`},
		{"inference_request", `{"inputs":[],"parameters":{"nested":{"a":1}}}`},
		{"inference_response", `{"outputs":[]}`},
		{"inference_response", `{"model_name":"digits","outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`},
		{"inference_response", `{"model_name":"digits","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[{"v":1}]}]}`},
		{"inference_response", `{"model_name":"digits","id":42,"outputs":[]}`},
		{"binary_inference_response", `{"model_name":"d","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`},
		{"binary_inference_response", `{"model_name":"d","outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":-4}}]}`},
	}
	for _, c := range cases {
		if err := oipValidate(t, c.def, []byte(c.doc)); err == nil {
			t.Errorf("%s accepts %s", c.def, c.doc)
		}
	}
	// And the spec's own examples pass.
	for _, c := range []struct{ def, doc string }{
		{"inference_request", `{"id":"42","inputs":[{"name":"input0","shape":[2,2],"datatype":"UINT32","data":[1,2,3,4]},{"name":"input1","shape":[3],"datatype":"BOOL","data":[true]}],"outputs":[{"name":"output0"}]}`},
		{"inference_response", `{"model_name":"m","id":"42","outputs":[{"name":"output0","shape":[3,2],"datatype":"FP32","data":[1.0,1.1,2.0,2.1,3.0,3.1]}]}`},
		{"inference_response", `{"model_name":"m","outputs":[{"name":"o","shape":[2,2],"datatype":"INT32","data":[[1,2],[4,5]]}]}`},
		{"error_response", `{"error":"no model \"nope\" is deployed"}`},
	} {
		if err := oipValidate(t, c.def, []byte(c.doc)); err != nil {
			t.Errorf("%s refuses %s: %v", c.def, c.doc, err)
		}
	}
}
