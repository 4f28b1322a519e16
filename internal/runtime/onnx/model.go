package onnx

import (
	"errors"
	"fmt"
	"net/http"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"tandem/internal/inference"
	"tandem/internal/problem"
)

// Model is an ONNX model loaded into ONNX Runtime. Infer is safe for
// concurrent use (ONNX Runtime sessions are).
type Model struct {
	meta    *inference.ModelMetadata
	session *ort.DynamicAdvancedSession
	inTypes []ort.TensorElementDataType
}

// Load loads the model at path with threads intra-op threads (0 means 1).
func Load(path string, threads int) (*Model, error) {
	if err := initialize(); err != nil {
		return nil, err
	}
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	m := &Model{meta: &inference.ModelMetadata{Platform: inference.Platform, Versions: []string{inference.DefaultVersion}}}
	var inNames, outNames []string
	for _, in := range ins {
		dt := datatypeOfORT(in.DataType)
		if in.OrtValueType != ort.ONNXTypeTensor || !dt.Supported() {
			return nil, fmt.Errorf("%s: input %q is %s: %w", path, in.Name, in.String(), ErrUnsupported)
		}
		m.meta.Inputs = append(m.meta.Inputs, inference.TensorMetadata{Name: in.Name, Datatype: dt, Shape: []int64(in.Dimensions)})
		m.inTypes = append(m.inTypes, in.DataType)
		inNames = append(inNames, in.Name)
	}
	for _, out := range outs {
		dt := datatypeOfORT(out.DataType)
		if out.OrtValueType != ort.ONNXTypeTensor || !dt.Supported() {
			continue // not served; Describe leaves it out too
		}
		m.meta.Outputs = append(m.meta.Outputs, inference.TensorMetadata{Name: out.Name, Datatype: dt, Shape: []int64(out.Dimensions)})
		outNames = append(outNames, out.Name)
	}
	if len(outNames) == 0 {
		return nil, fmt.Errorf("%s: %w: none of the outputs is a tensor of a supported datatype", path, ErrUnsupported)
	}
	for _, ts := range [][]inference.TensorMetadata{m.meta.Inputs, m.meta.Outputs} {
		for i := range ts {
			if ts[i].Shape == nil { // a scalar, or a rank ONNX does not know
				ts[i].Shape = []int64{}
			}
		}
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if threads < 1 {
		threads = 1
	}
	if err := opts.SetIntraOpNumThreads(threads); err != nil {
		return nil, err
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	// Spinning threads burn CPU between requests; small machines need it back.
	if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
		return nil, err
	}
	m.session, err = ort.NewDynamicAdvancedSession(path, inNames, outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	return m, nil
}

// Metadata returns the model's inputs and outputs as ONNX Runtime reads
// them. The caller must not change it.
func (m *Model) Metadata() *inference.ModelMetadata { return m.meta }

// Close frees the session.
func (m *Model) Close() error { return m.session.Destroy() }

// ErrInference wraps ONNX Runtime's errors from running the model.
var ErrInference = errors.New("inference failed")

// Infer runs a request that Validate accepted against Metadata. The
// outputs are the requested ones, or all, in the order of the metadata.
func (m *Model) Infer(req *inference.InferRequest) ([]inference.Tensor, error) {
	inputs := make([]ort.Value, len(m.meta.Inputs))
	defer destroy(inputs)
	for i, want := range m.meta.Inputs {
		t := findInput(req, want.Name)
		if t == nil {
			return nil, problem.New(http.StatusBadRequest, inference.CodeInvalidInput, fmt.Sprintf("missing input %q", want.Name)).WithField("inputs")
		}
		if len(t.Raw) == 0 {
			return nil, problem.New(http.StatusBadRequest, inference.CodeInvalidInput,
				fmt.Sprintf("input %q has no elements (shape %s); ONNX Runtime needs at least one", t.Name, inference.FormatShape(t.Shape))).WithField("inputs")
		}
		v, err := ort.NewCustomDataTensor(ort.NewShape(t.Shape...), t.Raw, m.inTypes[i])
		if err != nil {
			return nil, fmt.Errorf("%w: input %q: %v", ErrInference, t.Name, err)
		}
		inputs[i] = v
	}
	outputs := make([]ort.Value, len(m.meta.Outputs))
	defer destroy(outputs)
	if err := m.session.Run(inputs, outputs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInference, err)
	}
	var res []inference.Tensor
	for i, meta := range m.meta.Outputs {
		if !wanted(req, meta.Name) {
			continue
		}
		t, err := toTensor(meta, outputs[i])
		if err != nil {
			return nil, err
		}
		res = append(res, t)
	}
	return res, nil
}

func findInput(req *inference.InferRequest, name string) *inference.Tensor {
	for i := range req.Inputs {
		if req.Inputs[i].Name == name {
			return &req.Inputs[i]
		}
	}
	return nil
}

func wanted(req *inference.InferRequest, name string) bool {
	if len(req.Outputs) == 0 {
		return true
	}
	for _, o := range req.Outputs {
		if o.Name == name {
			return true
		}
	}
	return false
}

func destroy(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

// toTensor copies nothing: ONNX Runtime's outputs were already copied into
// Go memory by onnxruntime_go, and the tensor takes that memory as bytes.
func toTensor(meta inference.TensorMetadata, v ort.Value) (inference.Tensor, error) {
	t := inference.Tensor{Name: meta.Name, Datatype: meta.Datatype, Shape: []int64(v.GetShape().Clone())}
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[float64]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[int8]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[int16]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[int32]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[int64]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[uint8]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[uint16]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[uint32]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[uint64]:
		t.Raw = asBytes(x.GetData())
	case *ort.Tensor[bool]:
		t.Raw = asBytes(x.GetData())
	default:
		return t, fmt.Errorf("%w: output %q came back as %T", ErrInference, meta.Name, v)
	}
	if t.Raw == nil {
		t.Raw = []byte{}
	}
	return t, nil
}

// asBytes views a slice of fixed-size numbers as its bytes (native byte
// order, little-endian on every platform ONNX Runtime ships for).
func asBytes[T any](d []T) []byte {
	if len(d) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), len(d)*int(unsafe.Sizeof(d[0])))
}

func datatypeOfORT(t ort.TensorElementDataType) inference.Datatype {
	return datatypeOfONNX(int64(t)) // ORT's enum is ONNX's TensorProto.DataType
}
