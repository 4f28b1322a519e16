package inference

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Datatype is a v2 tensor element type, such as "FP32".
type Datatype string

// The v2 datatypes. tandem's JSON decoder and built-in runtime handle the
// fixed-size numeric types and BOOL; FP16, BF16 and BYTES are named so that
// metadata can describe them.
const (
	Bool   Datatype = "BOOL"
	Uint8  Datatype = "UINT8"
	Uint16 Datatype = "UINT16"
	Uint32 Datatype = "UINT32"
	Uint64 Datatype = "UINT64"
	Int8   Datatype = "INT8"
	Int16  Datatype = "INT16"
	Int32  Datatype = "INT32"
	Int64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	BF16   Datatype = "BF16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	Bytes  Datatype = "BYTES"
)

// Size returns the bytes one element takes in Tensor.Raw, or 0 for a
// datatype tandem does not carry (FP16, BF16, BYTES, anything unknown).
func (d Datatype) Size() int {
	switch d {
	case Bool, Uint8, Int8:
		return 1
	case Uint16, Int16:
		return 2
	case Uint32, Int32, FP32:
		return 4
	case Uint64, Int64, FP64:
		return 8
	}
	return 0
}

// Supported reports whether tandem can decode, validate and carry tensors of
// this datatype.
func (d Datatype) Supported() bool { return d.Size() > 0 }

// SupportedDatatypes lists the datatypes for which Supported is true.
var SupportedDatatypes = []Datatype{Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, FP32, FP64}

// ModelMetadata describes a model as the v2 model metadata endpoint does.
// tandem caches it at deploy time, so answering it never wakes a model.
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// TensorMetadata describes one input or output. A -1 in Shape is a
// dimension of any size.
type TensorMetadata struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// Input returns the input called name, or nil.
func (m *ModelMetadata) Input(name string) *TensorMetadata { return find(m.Inputs, name) }

// Output returns the output called name, or nil.
func (m *ModelMetadata) Output(name string) *TensorMetadata { return find(m.Outputs, name) }

func find(ts []TensorMetadata, name string) *TensorMetadata {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// Batchable reports whether requests to this model can be stacked along
// their first dimension: every input and output has a variable first
// dimension.
func (m *ModelMetadata) Batchable() bool {
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return false
	}
	for _, ts := range [][]TensorMetadata{m.Inputs, m.Outputs} {
		for _, t := range ts {
			if len(t.Shape) == 0 || t.Shape[0] != -1 {
				return false
			}
		}
	}
	return true
}

// Clone returns a deep copy of m.
func (m *ModelMetadata) Clone() *ModelMetadata {
	c := *m
	c.Versions = slices.Clone(m.Versions)
	c.Inputs = cloneTensorMetadata(m.Inputs)
	c.Outputs = cloneTensorMetadata(m.Outputs)
	return &c
}

func cloneTensorMetadata(ts []TensorMetadata) []TensorMetadata {
	out := make([]TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: slices.Clone(t.Shape)}
	}
	return out
}

// String describes the tensor as in error messages: input (FP32 [-1,64]).
func (t TensorMetadata) String() string {
	return fmt.Sprintf("%s (%s %s)", t.Name, t.Datatype, FormatShape(t.Shape))
}

// FormatShape writes a shape as [-1,64].
func FormatShape(s []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// InferRequest is a v2 inference request.
type InferRequest struct {
	ID         string
	Parameters map[string]any
	Inputs     []Tensor
	// Outputs, when not empty, names the outputs to return.
	Outputs []RequestedOutput
}

// RequestedOutput names one output a request wants back.
type RequestedOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// InferResponse is a v2 inference response.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   map[string]any
	Outputs      []Tensor
}

// Tensor is one input or output with its data.
type Tensor struct {
	Name       string
	Datatype   Datatype
	Shape      []int64
	Parameters map[string]any
	// Raw holds the elements flat, in row-major order, little-endian, each
	// Datatype.Size() bytes (BOOL: one byte, 0 or 1). That is the layout of
	// the gRPC raw contents and of ONNX Runtime's buffers, so tensors move
	// between them without conversion.
	Raw []byte
}

// Len returns the number of elements in Raw.
func (t *Tensor) Len() int {
	if s := t.Datatype.Size(); s > 0 {
		return len(t.Raw) / s
	}
	return 0
}

// Elements returns the number of elements Shape calls for, and false when
// a dimension is negative or the product overflows.
func Elements(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}
