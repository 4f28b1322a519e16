package inference_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"tandem/internal/inference"
	"tandem/internal/problem"
)

var twoInputs = &inference.ModelMetadata{
	Name: "m",
	Inputs: []inference.TensorMetadata{
		{Name: "x", Datatype: inference.FP32, Shape: []int64{-1, 3}},
		{Name: "mask", Datatype: inference.Bool, Shape: []int64{-1}},
	},
	Outputs: []inference.TensorMetadata{{Name: "y", Datatype: inference.FP32, Shape: []int64{-1}}},
}

func TestValidate(t *testing.T) {
	x := func(shape []int64, n int) inference.Tensor {
		return inference.NewTensor("x", shape, make([]float32, n))
	}
	mask := inference.NewTensor("mask", []int64{2}, []bool{true, false})
	cases := []struct {
		name     string
		req      inference.InferRequest
		field    string
		msg      string
		expected any
		received any
	}{
		{name: "ok", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{2, 3}, 6), mask}, Outputs: []inference.RequestedOutput{{Name: "y"}}}},
		{name: "no inputs", req: inference.InferRequest{}, field: "inputs", msg: "no inputs given; the model takes x (FP32 [-1,3]), mask (BOOL [-1])"},
		{name: "unknown name", req: inference.InferRequest{Inputs: []inference.Tensor{inference.NewTensor("z", []int64{1}, []float32{1})}},
			field: "inputs[0].name", msg: `no input "z"`, expected: []string{"x", "mask"}, received: "z"},
		{name: "twice", req: inference.InferRequest{Inputs: []inference.Tensor{mask, mask}}, field: "inputs[1].name", msg: "given twice"},
		{name: "datatype", req: inference.InferRequest{Inputs: []inference.Tensor{inference.NewTensor("x", []int64{1, 3}, []float64{1, 2, 3}), mask}},
			field: "inputs[0].datatype", msg: `input "x" is FP32, not FP64`, expected: inference.FP32, received: inference.FP64},
		{name: "rank", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{3}, 3), mask}},
			field: "inputs[0].shape", msg: "shape [3] does not match", expected: []int64{-1, 3}, received: []int64{3}},
		{name: "fixed dimension", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{1, 4}, 4), mask}},
			field: "inputs[0].shape", msg: `shape [1,4] does not match input "x"'s shape [-1,3]`, expected: []int64{-1, 3}, received: []int64{1, 4}},
		{name: "element count", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{2, 3}, 5), mask}},
			field: "inputs[0].data", msg: "has 5 elements; shape [2,3] needs 6", expected: int64(6), received: int64(5)},
		{name: "missing input", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{1, 3}, 3)}},
			field: "inputs", msg: "missing input mask (BOOL [-1])"},
		{name: "unknown output", req: inference.InferRequest{Inputs: []inference.Tensor{x([]int64{1, 3}, 3), mask}, Outputs: []inference.RequestedOutput{{Name: "label"}}},
			field: "outputs[0].name", msg: `no output "label"`, expected: []string{"y"}, received: "label"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := inference.Validate(&c.req, twoInputs)
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var pe *problem.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *problem.Error", err)
			}
			if pe.Status != 400 || pe.Code != inference.CodeInvalidInput || pe.Field != c.field || !strings.Contains(pe.Message, c.msg) {
				t.Errorf("got %d %s %q: %s\nwant field %q containing %q", pe.Status, pe.Code, pe.Field, pe.Message, c.field, c.msg)
			}
			if c.expected != nil {
				want := inference.Mismatch{Expected: c.expected, Received: c.received}
				if !reflect.DeepEqual(pe.Details, want) {
					t.Errorf("details %#v, want %#v", pe.Details, want)
				}
			}
		})
	}
}
