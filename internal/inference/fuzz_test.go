package inference_test

import (
	"testing"

	"tandem/internal/inference"
)

var fuzzModel = &inference.ModelMetadata{
	Name: "digits",
	Inputs: []inference.TensorMetadata{
		{Name: "input", Datatype: inference.FP32, Shape: []int64{-1, 4}},
		{Name: "ids", Datatype: inference.Int64, Shape: []int64{-1}},
	},
	Outputs: []inference.TensorMetadata{{Name: "label", Datatype: inference.Int64, Shape: []int64{-1}}},
}

// FuzzDecodeInferRequest runs the v2 JSON decoder and the validator on any
// input: they must never panic, a request they accept must encode to JSON
// that decodes to the same tensors, and validation must hold for it.
func FuzzDecodeInferRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"inputs":[]}`, `[`, `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"ids","shape":[1],"datatype":"INT64","data":[7]}]}`,
		`{"id":"x","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,"NaN"]]},{"name":"ids","shape":[2],"datatype":"INT64","data":[1e3,-2]}],"outputs":[{"name":"label"}]}`,
		`{"inputs":[{"name":"ids","shape":[3],"datatype":"UINT8","data":[0,255,256]}]}`,
		`{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[true,"x"]}]}`,
		`{"inputs":[{"name":"input","shape":[9223372036854775807,9223372036854775807],"datatype":"FP32","data":[1]}]}`,
		`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[1,2,{"a":[3]},4]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := inference.DecodeInferRequest(body)
		if err != nil {
			return
		}
		verr := inference.Validate(req, fuzzModel)
		again, err := inference.DecodeInferRequest(req.AppendJSON(nil))
		if err != nil {
			t.Fatalf("re-decoding an accepted request: %v\n%s", err, req.AppendJSON(nil))
		}
		if len(again.Inputs) != len(req.Inputs) {
			t.Fatalf("inputs changed: %d, then %d", len(req.Inputs), len(again.Inputs))
		}
		for i := range req.Inputs {
			a, b := req.Inputs[i], again.Inputs[i]
			if a.Name != b.Name || a.Datatype != b.Datatype || len(a.Raw) != len(b.Raw) || len(a.Shape) != len(b.Shape) {
				t.Fatalf("input %d changed: %+v, then %+v", i, a, b)
			}
		}
		if (inference.Validate(again, fuzzModel) == nil) != (verr == nil) {
			t.Fatalf("validation changed on the round trip: %v", verr)
		}
	})
}

// FuzzDecodeInferRequestBinary runs the decoder of the binary data
// extension on any body and header length: it must never panic.
func FuzzDecodeInferRequestBinary(f *testing.F) {
	req := &inference.InferRequest{Inputs: []inference.Tensor{
		inference.NewTensor("input", []int64{1, 4}, []float32{1, 2, 3, 4}),
		inference.NewTensor("ids", []int64{1}, []int64{7}),
	}}
	body, n := req.AppendBinary(nil, true)
	f.Add(body, n)
	f.Add(body, n-1)
	f.Add(body, len(body))
	f.Add([]byte(`{"inputs":[]}`), 0)
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		if headerLen > len(body)+8 {
			headerLen = len(body) + 8
		}
		req, err := inference.DecodeInferRequestBinary(body, headerLen)
		if err != nil {
			return
		}
		inference.Validate(req, fuzzModel)
		again, n := req.AppendBinary(nil, false)
		if _, err := inference.DecodeInferRequestBinary(again, n); err != nil {
			t.Fatalf("re-decoding an accepted request: %v", err)
		}
	})
}
