package inference_test

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"tandem/internal/inference"
	"tandem/internal/problem"
)

func TestInferRequest_AppendBinary(t *testing.T) {
	req := &inference.InferRequest{
		ID:         "b1",
		Parameters: map[string]any{"k": "v"},
		Inputs: []inference.Tensor{
			inference.NewTensor("x", []int64{2, 2}, []float32{1, 2, 3, 4}),
			{Name: "m", Datatype: inference.Bool, Shape: []int64{2}, Parameters: map[string]any{"p": 1.0}, Raw: []byte{1, 0}},
		},
		Outputs: []inference.RequestedOutput{{Name: "y"}},
	}
	body, n := req.AppendBinary(nil, true)
	if !strings.Contains(string(body[:n]), `"binary_data_output":true`) || len(body)-n != 16+2 {
		t.Fatalf("header %s, %d binary bytes", body[:n], len(body)-n)
	}
	got, err := inference.DecodeInferRequestBinary(body, n)
	if err != nil {
		t.Fatal(err)
	}
	if got.Parameters[inference.ParamBinaryDataOutput] != true {
		t.Errorf("parameters %v", got.Parameters)
	}
	delete(got.Parameters, inference.ParamBinaryDataOutput)
	if !reflect.DeepEqual(got, req) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, req)
	}
}

func TestInferResponse_AppendWith(t *testing.T) {
	resp := &inference.InferResponse{ModelName: "m", ID: "r", Outputs: []inference.Tensor{
		inference.NewTensor("label", []int64{2}, []int64{3, 4}),
		inference.NewTensor("probabilities", []int64{2, 2}, []float32{0.25, 0.75, 0.5, 0.5}),
	}}
	for _, c := range []struct {
		name   string
		binary func(string) bool
		header bool
	}{
		{"json", nil, false},
		{"none binary", func(string) bool { return false }, false},
		{"one binary", func(n string) bool { return n == "probabilities" }, true},
		{"all binary", func(string) bool { return true }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, n := resp.AppendWith(nil, c.binary)
			if (n >= 0) != c.header {
				t.Fatalf("header length %d", n)
			}
			got, err := inference.DecodeInferResponseBinary(b, n)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, resp) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, resp)
			}
		})
	}
}

// TestBinaryOutputs checks the binary tensor data extension's rules: an
// output's own binary_data, true or false, wins over the request's
// binary_data_output; outputs that say nothing follow the request.
func TestBinaryOutputs(t *testing.T) {
	out := func(name string, binary any) inference.RequestedOutput {
		if binary == nil {
			return inference.RequestedOutput{Name: name}
		}
		return inference.RequestedOutput{Name: name, Parameters: map[string]any{"binary_data": binary}}
	}
	all := map[string]any{"binary_data_output": true}
	none := map[string]any{"binary_data_output": false}
	cases := []struct {
		name   string
		params map[string]any
		outs   []inference.RequestedOutput
		binary []string // of a, b, c: which go in binary; nil: the answer is all JSON
	}{
		{"plain", nil, nil, nil},
		{"binary_data_output", all, nil, []string{"a", "b", "c"}},
		{"binary_data_output false", none, nil, nil},
		{"one output", nil, []inference.RequestedOutput{out("a", true), out("b", nil)}, []string{"a"}},
		{"outputs say false", nil, []inference.RequestedOutput{out("a", false)}, nil},
		{"output false wins over request true", all, []inference.RequestedOutput{out("a", false), out("b", nil)}, []string{"b", "c"}},
		{"every output false", all, []inference.RequestedOutput{out("a", false), out("b", false), out("c", false)}, []string{}},
		{"output true wins over request false", none, []inference.RequestedOutput{out("a", true), out("b", nil)}, []string{"a"}},
		{"not a bool: ignored", all, []inference.RequestedOutput{out("a", "false")}, []string{"a", "b", "c"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := inference.BinaryOutputs(&inference.InferRequest{Parameters: c.params, Outputs: c.outs})
			if c.binary == nil {
				if f != nil {
					t.Errorf("asks for binary: a=%v b=%v c=%v", f("a"), f("b"), f("c"))
				}
				return
			}
			if f == nil {
				t.Fatalf("nil, want %v in binary", c.binary)
			}
			var got []string
			for _, n := range []string{"a", "b", "c"} {
				if f(n) {
					got = append(got, n)
				}
			}
			if !slices.Equal(got, c.binary) && len(got)+len(c.binary) > 0 {
				t.Errorf("binary %v, want %v", got, c.binary)
			}
		})
	}
}

func TestDecodeInferRequestBinary_errors(t *testing.T) {
	header := func(size int, extra string) string {
		return `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}` + extra + `}]}`
	}
	cases := []struct {
		name, header, bin, field, msg string
		headerLen                     int
	}{
		{"header longer than body", header(8, ""), "", "", "has only", 1000},
		{"size beyond the data", header(16, ""), "12345678", "inputs[0].parameters.binary_data_size", "does not fit", -2},
		{"data left over", header(8, ""), "1234567890", "", "add up to 8", -2},
		{"not whole elements", header(6, ""), "123456", "inputs[0].parameters.binary_data_size", "whole number", -2},
		{"data and binary", header(8, `,"data":[1,2]`), "12345678", "inputs[0].data", "must be absent", -2},
		{"negative size", header(-8, ""), "12345678", "inputs[0].parameters.binary_data_size", "does not fit", -2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := c.headerLen
			if n == -2 {
				n = len(c.header)
			}
			_, err := inference.DecodeInferRequestBinary([]byte(c.header+c.bin), n)
			var pe *problem.Error
			if !errors.As(err, &pe) || pe.Status != 400 || pe.Field != c.field || !strings.Contains(pe.Message, c.msg) {
				t.Errorf("err = %v (field %q), want field %q containing %q", err, fieldOf(pe), c.field, c.msg)
			}
		})
	}
}

func fieldOf(pe *problem.Error) string {
	if pe == nil {
		return ""
	}
	return pe.Field
}
