package inference_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"tandem/internal/inference"
	"tandem/internal/problem"
)

func TestDecodeInferRequest(t *testing.T) {
	cases := []struct {
		name string
		body string
		want inference.Tensor
	}{
		{"flat FP32", `{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,-3,4e2]}]}`,
			inference.NewTensor("x", []int64{2, 2}, []float32{1, 2.5, -3, 400})},
		{"nested FP32", `{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[-3,4e2]]}]}`,
			inference.NewTensor("x", []int64{2, 2}, []float32{1, 2.5, -3, 400})},
		{"FP64 specials", `{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","data":["Inf","-Inf",0.1]}]}`,
			inference.NewTensor("x", []int64{3}, []float64{math.Inf(1), math.Inf(-1), 0.1})},
		{"INT64 written as floats", `{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[3.0,-1e3,9007199254740993]}]}`,
			inference.NewTensor("x", []int64{3}, []int64{3, -1000, 9007199254740993})},
		{"INT8 range", `{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[-128,127]}]}`,
			inference.NewTensor("x", []int64{2}, []int8{-128, 127})},
		{"UINT16", `{"inputs":[{"name":"x","shape":[2],"datatype":"UINT16","data":[0,65535]}]}`,
			inference.NewTensor("x", []int64{2}, []uint16{0, 65535})},
		{"UINT64 top", `{"inputs":[{"name":"x","shape":[1],"datatype":"UINT64","data":[18446744073709551615]}]}`,
			inference.NewTensor("x", []int64{1}, []uint64{math.MaxUint64})},
		{"BOOL", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"BOOL","data":[[true,false]]}]}`,
			inference.NewTensor("x", []int64{1, 2}, []bool{true, false})},
		{"scalar", `{"inputs":[{"name":"x","shape":[],"datatype":"INT32","data":7}]}`,
			inference.NewTensor("x", []int64{}, []int32{7})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := inference.DecodeInferRequest([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(req.Inputs) != 1 || !reflect.DeepEqual(req.Inputs[0], c.want) {
				t.Errorf("got %+v\nwant %+v", req.Inputs, c.want)
			}
		})
	}
	t.Run("id, parameters and outputs", func(t *testing.T) {
		req, err := inference.DecodeInferRequest([]byte(`{"id":"r1","parameters":{"a":1},
			"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"p":"q"}}],
			"outputs":[{"name":"label"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if req.ID != "r1" || req.Parameters["a"] != 1.0 || req.Inputs[0].Parameters["p"] != "q" ||
			len(req.Outputs) != 1 || req.Outputs[0].Name != "label" {
			t.Errorf("got %+v", req)
		}
	})
}

func TestDecodeInferRequest_errors(t *testing.T) {
	in := func(dt, shape, data string) string {
		return `{"inputs":[{"name":"x","datatype":"` + dt + `","shape":` + shape + `,"data":` + data + `}]}`
	}
	cases := []struct {
		name, body, code, field, msg string
	}{
		{"empty", ``, inference.CodeEmptyBody, "", "empty"},
		{"blank", " \n", inference.CodeEmptyBody, "", "empty"},
		{"truncated", `{"inputs":[`, inference.CodeInvalidJSON, "", "not valid JSON"},
		{"not an object", `[1,2]`, inference.CodeInvalidJSON, "", "JSON object"},
		{"inputs not a list", `{"inputs":{}}`, inference.CodeInvalidJSON, "inputs", "object"},
		{"shape of strings", `{"inputs":[{"name":"x","datatype":"FP32","shape":["a"],"data":[1]}]}`, inference.CodeInvalidJSON, "inputs[0].shape", "not a string"},
		{"fractional dim", in("FP32", "[1.5]", "[1]"), inference.CodeInvalidInput, "inputs[0].shape", "not an integer"},
		{"id not a string", `{"id":5,"inputs":[]}`, inference.CodeInvalidJSON, "id", "must be a string, not a number"},
		{"trailing garbage", `{"inputs":[]} x`, inference.CodeInvalidJSON, "", "more after the end"},
		{"bad escape", `{"id":"\q"}`, inference.CodeInvalidJSON, "", "escape"},
		{"deep nesting", in("FP32", "[1]", strings.Repeat("[", 100)+"1"+strings.Repeat("]", 100)), inference.CodeInvalidJSON, "", "nested too deeply"},
		{"missing comma", in("FP32", "[2]", "[1 2]"), inference.CodeInvalidJSON, "", "expected ','"},
		{"no name", `{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}`, inference.CodeInvalidInput, "inputs[0].name", "required"},
		{"no datatype", `{"inputs":[{"name":"x","shape":[1],"data":[1]}]}`, inference.CodeInvalidInput, "inputs[0].datatype", "required"},
		{"unknown datatype", in("FLOAT", "[1]", "[1]"), inference.CodeInvalidInput, "inputs[0].datatype", `"FLOAT" is not supported`},
		{"FP16", in("FP16", "[1]", "[1]"), inference.CodeInvalidInput, "inputs[0].datatype", "not supported"},
		{"no shape", `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, inference.CodeInvalidInput, "inputs[0].shape", "required"},
		{"negative dim", in("FP32", "[-1]", "[1]"), inference.CodeInvalidInput, "inputs[0].shape", "negative"},
		{"no data", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}`, inference.CodeInvalidInput, "inputs[0].data", "required"},
		{"null data", in("FP32", "[1]", "null"), inference.CodeInvalidInput, "inputs[0].data", "required"},
		{"string in FP32", in("FP32", "[2]", `[1,"abc"]`), inference.CodeInvalidInput, "inputs[0].data", `element 1 is the string "abc"`},
		{"object in data", in("FP32", "[1]", `[{"a":1}]`), inference.CodeInvalidInput, "inputs[0].data", "element 0 is an object"},
		{"INT8 overflow", in("INT8", "[1]", `[300]`), inference.CodeInvalidInput, "inputs[0].data", "300 is out of range for INT8"},
		{"INT32 fraction", in("INT32", "[1]", `[1.5]`), inference.CodeInvalidInput, "inputs[0].data", "not an integer"},
		{"UINT8 negative", in("UINT8", "[1]", `[-1]`), inference.CodeInvalidInput, "inputs[0].data", "out of range for UINT8"},
		{"FP32 overflow", in("FP32", "[1]", `[1e39]`), inference.CodeInvalidInput, "inputs[0].data", "out of range for FP32"},
		{"BOOL as number", in("BOOL", "[1]", `[1]`), inference.CodeInvalidInput, "inputs[0].data", "true or false"},
		{"true in FP32", in("FP32", "[1]", `[true]`), inference.CodeInvalidInput, "inputs[0].data", "element 0 is true; FP32 data holds numbers"},
		{"bad number", in("FP32", "[1]", `[01]`), inference.CodeInvalidJSON, "", "expected ','"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := inference.DecodeInferRequest([]byte(c.body))
			var pe *problem.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *problem.Error", err)
			}
			if pe.Status != 400 || pe.Code != c.code || pe.Field != c.field || !strings.Contains(pe.Message, c.msg) {
				t.Errorf("got %d %s field %q: %s\nwant 400 %s field %q containing %q", pe.Status, pe.Code, pe.Field, pe.Message, c.code, c.field, c.msg)
			}
		})
	}
}

func TestInferResponse_AppendJSON(t *testing.T) {
	resp := &inference.InferResponse{
		ModelName: "m", ModelVersion: "1", ID: `id "quoted" <&>`, Parameters: map[string]any{"k": "v"},
		Outputs: []inference.Tensor{
			inference.NewTensor("f32", []int64{4}, []float32{1.5, float32(math.NaN()), float32(math.Inf(-1)), 1e-30}),
			inference.NewTensor("f64", []int64{1}, []float64{0.1}),
			inference.NewTensor("i8", []int64{2}, []int8{-128, 127}),
			inference.NewTensor("i16", []int64{1}, []int16{-300}),
			inference.NewTensor("i32", []int64{1}, []int32{-70000}),
			inference.NewTensor("i64", []int64{1}, []int64{math.MinInt64}),
			inference.NewTensor("u8", []int64{1}, []uint8{255}),
			inference.NewTensor("u16", []int64{1}, []uint16{65535}),
			inference.NewTensor("u32", []int64{1}, []uint32{math.MaxUint32}),
			inference.NewTensor("u64", []int64{1}, []uint64{math.MaxUint64}),
			inference.NewTensor("b", []int64{2}, []bool{true, false}),
		},
	}
	b := resp.AppendJSON(nil)
	if !json.Valid(b) {
		t.Fatalf("not valid JSON: %s", b)
	}
	got, err := inference.DecodeInferResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	// NaN payload bits may change on the way; compare them by value.
	f, _ := inference.Values[float32](&got.Outputs[0])
	if !math.IsNaN(float64(f[1])) {
		t.Errorf("NaN came back as %v", f[1])
	}
	got.Outputs[0], resp.Outputs[0] = inference.Tensor{}, inference.Tensor{}
	if !reflect.DeepEqual(got, resp) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, resp)
	}
}
