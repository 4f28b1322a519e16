package onnx_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"tandem/internal/inference"
	"tandem/internal/runtime/onnx"
	"tandem/internal/runtime/onnx/onnxtest"
)

var wantMetadata = map[string]*inference.ModelMetadata{
	"digits": {
		Name: "digits", Versions: []string{"1"}, Platform: "onnxruntime_onnx",
		Inputs: []inference.TensorMetadata{{Name: "input", Datatype: inference.FP32, Shape: []int64{-1, 64}}},
		Outputs: []inference.TensorMetadata{
			{Name: "label", Datatype: inference.Int64, Shape: []int64{-1}},
			{Name: "probabilities", Datatype: inference.FP32, Shape: []int64{-1, 10}},
		},
	},
	"iris": {
		Name: "iris", Versions: []string{"1"}, Platform: "onnxruntime_onnx",
		Inputs: []inference.TensorMetadata{{Name: "input", Datatype: inference.FP32, Shape: []int64{-1, 4}}},
		Outputs: []inference.TensorMetadata{
			{Name: "label", Datatype: inference.Int64, Shape: []int64{-1}},
			{Name: "probabilities", Datatype: inference.FP32, Shape: []int64{-1, 3}},
		},
	},
}

func TestDescribe(t *testing.T) {
	for name, want := range wantMetadata {
		t.Run(name, func(t *testing.T) {
			got, err := onnx.Describe(onnxtest.ModelPath(t, name+".onnx"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Describe:\n got %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("not onnx", func(t *testing.T) {
		_, err := onnx.Describe(onnxtest.ModelPath(t, "digits_rows.json"))
		if !errors.Is(err, onnx.ErrNotONNX) {
			t.Errorf("err = %v, want ErrNotONNX", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := onnx.Describe("/nonexistent/model.onnx"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v, want not exist", err)
		}
	})
}

// TestDescribe_matchesONNXRuntime checks the pure-Go reading of model files
// against ONNX Runtime's own, on the repository's models and the test models
// that ship with onnxruntime_go.
func TestDescribe_matchesONNXRuntime(t *testing.T) {
	onnxtest.RequireLibrary(t)
	files, _ := filepath.Glob(onnxtest.ModelPath(t, "*.onnx"))
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("finding onnxruntime_go's test models: %v", err)
	}
	more, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "test_data", "*.onnx"))
	files = append(files, more...)
	if len(files) < 8 {
		t.Fatalf("only %d model files found", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			md, derr := onnx.Describe(f)
			m, lerr := onnx.Load(f, 1)
			if lerr == nil {
				defer m.Close()
			}
			switch {
			case errors.Is(derr, onnx.ErrUnsupported) && lerr != nil:
				// ORT may fail for its own reasons first (a locale, say).
				t.Logf("unsupported: %v; Load: %v", derr, lerr)
				return
			case derr != nil || lerr != nil:
				t.Fatalf("Describe: %v; Load: %v", derr, lerr)
			}
			ort := m.Metadata()
			if md.Platform != ort.Platform || !reflect.DeepEqual(md.Versions, ort.Versions) ||
				!compatible(md.Inputs, ort.Inputs) || !compatible(md.Outputs, ort.Outputs) {
				t.Errorf("Describe and ONNX Runtime differ:\nDescribe %+v\nORT      %+v", md, ort)
			}
		})
	}
}

// compatible reports whether the declared tensors (Describe's) are those
// ONNX Runtime reports, allowing a -1 where ORT's shape inference knows
// the size: Describe may be looser than ORT, never stricter.
func compatible(declared, ort []inference.TensorMetadata) bool {
	if len(declared) != len(ort) {
		return false
	}
	for i, d := range declared {
		o := ort[i]
		if d.Name != o.Name || d.Datatype != o.Datatype || len(d.Shape) != len(o.Shape) {
			return false
		}
		for j := range d.Shape {
			if d.Shape[j] != o.Shape[j] && d.Shape[j] != -1 {
				return false
			}
		}
	}
	return true
}

func TestFindLibrary(t *testing.T) {
	t.Run("env names a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
		os.WriteFile(f, nil, 0o644)
		t.Setenv(onnx.EnvLibrary, f)
		if got, err := onnx.FindLibrary(); err != nil || got != f {
			t.Errorf("FindLibrary() = %q, %v; want %q", got, err, f)
		}
	})
	t.Run("env names nothing", func(t *testing.T) {
		t.Setenv(onnx.EnvLibrary, "/nonexistent/libonnxruntime.so.1")
		_, err := onnx.FindLibrary()
		if !errors.Is(err, onnx.ErrLibraryNotFound) || !strings.Contains(err.Error(), "scripts/fetch-onnxruntime.sh") {
			t.Errorf("err = %v; want ErrLibraryNotFound saying to run scripts/fetch-onnxruntime.sh", err)
		}
	})
}

// TestServe_missingLibrary runs the real program without the library: it
// must exit with one clear message.
func TestServe_missingLibrary(t *testing.T) {
	prog, pre := onnxtest.Command(t)
	cmd := exec.Command(prog, append(pre, "--model", onnxtest.ModelPath(t, "iris.onnx"), "--listen", "127.0.0.1:0")...)
	cmd.Env = append(os.Environ(), onnx.EnvLibrary+"=/nonexistent/libonnxruntime.so.1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want a non-zero exit; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "run scripts/fetch-onnxruntime.sh") {
		t.Errorf("output does not say how to get the library:\n%s", out)
	}
}

func post(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	resp, err := http.Post(url, "application/json", rd)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestServe_sklearnLabels serves the digits and iris models and checks
// that v2 infer gives the labels sklearn predicts for the committed rows,
// both as one batch and row by row (with nested data).
func TestServe_sklearnLabels(t *testing.T) {
	onnxtest.RequireLibrary(t)
	for _, name := range []string{"digits", "iris"} {
		t.Run(name, func(t *testing.T) {
			rows := onnxtest.LoadRows(t, name)
			srv := onnxtest.Start(t, onnxtest.ModelPath(t, name+".onnx"), name)
			t.Logf("exec to ready: %v", srv.Ready)

			if code, body := get(t, srv.URL+"/health"); code != 200 {
				t.Fatalf("/health: %d %s", code, body)
			}
			code, body := get(t, srv.URL+"/v2/models/"+name)
			var md inference.ModelMetadata
			if code != 200 || json.Unmarshal(body, &md) != nil || !reflect.DeepEqual(&md, wantMetadata[name]) {
				t.Errorf("metadata: %d %s", code, body)
			}

			n, features := len(rows.Rows), len(rows.Rows[0])
			code, body = post(t, srv.URL+"/v2/models/"+name+"/infer", map[string]any{
				"id": "all-rows",
				"inputs": []map[string]any{{"name": "input", "datatype": "FP32",
					"shape": []int{n, features}, "data": rows.Rows}},
			})
			if code != 200 {
				t.Fatalf("infer: %d %s", code, body)
			}
			resp, err := inference.DecodeInferResponse(body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ID != "all-rows" || resp.ModelName != name {
				t.Errorf("id %q model %q", resp.ID, resp.ModelName)
			}
			labels, err := inference.Values[int64](&resp.Outputs[0])
			if err != nil || !reflect.DeepEqual(labels, rows.Labels) {
				t.Errorf("labels = %v (%v), sklearn says %v", labels, err, rows.Labels)
			}

			for i, row := range rows.Rows {
				code, body := post(t, srv.URL+"/v2/models/"+name+"/versions/1/infer", map[string]any{
					"inputs":  []map[string]any{{"name": "input", "datatype": "FP32", "shape": []int{1, features}, "data": [][]float64{row}}},
					"outputs": []map[string]any{{"name": "label"}},
				})
				resp, err := inference.DecodeInferResponse(body)
				if code != 200 || err != nil || len(resp.Outputs) != 1 {
					t.Fatalf("row %d: %d %s", i, code, body)
				}
				got, _ := inference.Values[int64](&resp.Outputs[0])
				if len(got) != 1 || got[0] != rows.Labels[i] {
					t.Errorf("row %d: label %v, sklearn says %d", i, got, rows.Labels[i])
				}
			}
		})
	}
}

// TestServe_binary sends the iris rows in the binary data extension and
// asks for one output in binary.
func TestServe_binary(t *testing.T) {
	onnxtest.RequireLibrary(t)
	rows := onnxtest.LoadRows(t, "iris")
	srv := onnxtest.Start(t, onnxtest.ModelPath(t, "iris.onnx"), "iris")
	req := &inference.InferRequest{
		Inputs:  []inference.Tensor{inference.NewTensor("input", []int64{int64(len(rows.Rows)), 4}, rows.Flat())},
		Outputs: []inference.RequestedOutput{{Name: "label", Parameters: map[string]any{"binary_data": true}}, {Name: "probabilities"}},
	}
	body, n := req.AppendBinary(nil, false)
	hreq, _ := http.NewRequest("POST", srv.URL+"/v2/models/iris/infer", bytes.NewReader(body))
	hreq.Header.Set(inference.HeaderBinaryLength, fmt.Sprint(n))
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	hl, err := inference.ParseBinaryLength(resp.Header.Get(inference.HeaderBinaryLength))
	if resp.StatusCode != 200 || err != nil || hl < 0 {
		t.Fatalf("%d %q: %s", resp.StatusCode, resp.Header.Get(inference.HeaderBinaryLength), data)
	}
	if !bytes.Contains(data[:hl], []byte(`"binary_data_size":64`)) || !bytes.Contains(data[:hl], []byte(`"data":[`)) {
		t.Errorf("header: %s", data[:hl])
	}
	out, err := inference.DecodeInferResponseBinary(data, hl)
	if err != nil {
		t.Fatal(err)
	}
	if labels, _ := inference.Values[int64](&out.Outputs[0]); !reflect.DeepEqual(labels, rows.Labels) {
		t.Errorf("labels %v, sklearn says %v", labels, rows.Labels)
	}
}

func TestServe_errors(t *testing.T) {
	onnxtest.RequireLibrary(t)
	srv := onnxtest.Start(t, onnxtest.ModelPath(t, "iris.onnx"), "iris")
	infer := srv.URL + "/v2/models/iris/infer"
	cases := []struct {
		name, url, body string
		code            int
		field, errCode  string
	}{
		{"wrong model", srv.URL + "/v2/models/digits/infer", `{}`, 404, "", "model_not_found"},
		{"wrong version", srv.URL + "/v2/models/iris/versions/2/infer", `{}`, 404, "", "model_version_not_found"},
		{"malformed", infer, `{"inputs": [`, 400, "", "invalid_json"},
		{"empty", infer, ``, 400, "", "empty_body"},
		{"shape", infer, `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,5],"data":[1,2,3,4,5]}]}`, 400, "inputs[0].shape", "invalid_input"},
		{"datatype", infer, `{"inputs":[{"name":"input","datatype":"FP64","shape":[1,4],"data":[1,2,3,4]}]}`, 400, "inputs[0].datatype", "invalid_input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := post(t, c.url, c.body)
			var e struct {
				Error struct{ Code, Field, Source, Message string }
			}
			json.Unmarshal(body, &e)
			if code != c.code || e.Error.Code != c.errCode || e.Error.Field != c.field || e.Error.Source != "model" {
				t.Errorf("got %d %s; want %d code %s field %q source model", code, body, c.code, c.errCode, c.field)
			}
		})
	}
}

func ExampleDescribe() {
	md, err := onnx.Describe("../../../models/iris.onnx")
	if err != nil {
		panic(err)
	}
	for _, in := range md.Inputs {
		fmt.Println("input", in)
	}
	for _, out := range md.Outputs {
		fmt.Println("output", out)
	}
	// Output:
	// input input (FP32 [-1,4])
	// output label (INT64 [-1])
	// output probabilities (FP32 [-1,3])
}
