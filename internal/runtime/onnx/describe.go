package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"tandem/internal/inference"
)

// ErrNotONNX is returned by Describe for a file that is not an ONNX model.
var ErrNotONNX = errors.New("not an ONNX model")

// ErrUnsupported is returned for a model whose inputs tandem cannot feed.
var ErrUnsupported = errors.New("unsupported by tandem's ONNX runtime")

// Describe reads an ONNX model's inputs and outputs (names, v2 datatypes,
// shapes with -1 for dynamic dimensions) from the file alone. It parses the
// ONNX protobuf in Go: it neither loads ONNX Runtime nor starts a process,
// so the controller can call it at deploy time, cheaply and safely, for
// metadata that never wakes a model. Inputs that have an initializer (a
// default) are left out, as ONNX Runtime does; outputs that are not tensors
// of a supported datatype are left out, as the runtime does not serve them.
// A model with an input it cannot feed is an error wrapping ErrUnsupported.
func Describe(path string) (*inference.ModelMetadata, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	md, err := describeBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	md.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return md, nil
}

// valueInfo is an ONNX ValueInfoProto, reduced to what metadata needs.
type valueInfo struct {
	name     string
	tensor   bool  // the type is a (dense) tensor
	elemType int64 // TensorProto.DataType
	shape    []int64
	hasShape bool
}

// Field numbers from onnx.proto.
const (
	modelGraph        = 7
	graphInitializer  = 5
	graphInput        = 11
	graphOutput       = 12
	tensorProtoName   = 8
	valueInfoName     = 1
	valueInfoType     = 2
	typeTensorType    = 1
	tensorElemType    = 1
	tensorShape       = 2
	shapeDim          = 1
	dimValue          = 1
	dimParam          = 2
	maxDescribeFields = 1 << 20
)

func describeBytes(data []byte) (*inference.ModelMetadata, error) {
	var graph []byte
	err := eachField(data, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == modelGraph && typ == protowire.BytesType {
			graph = v
		}
		return nil
	})
	if err != nil || graph == nil {
		return nil, fmt.Errorf("%w: no graph found", ErrNotONNX)
	}
	var inputs, outputs []valueInfo
	initializers := map[string]bool{}
	err = eachField(graph, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case graphInput, graphOutput:
			vi, err := parseValueInfo(v)
			if err != nil {
				return err
			}
			if num == graphInput {
				inputs = append(inputs, vi)
			} else {
				outputs = append(outputs, vi)
			}
		case graphInitializer:
			return eachField(v, func(n protowire.Number, t protowire.Type, b []byte, _ uint64) error {
				if n == tensorProtoName && t == protowire.BytesType {
					initializers[string(b)] = true
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotONNX, err)
	}
	md := &inference.ModelMetadata{Platform: inference.Platform, Versions: []string{inference.DefaultVersion}}
	for _, vi := range inputs {
		if initializers[vi.name] {
			continue
		}
		dt := datatypeOfONNX(vi.elemType)
		if !vi.tensor || !dt.Supported() {
			return nil, fmt.Errorf("input %q is %s: %w (it feeds tensors of %v)", vi.name, vi.describe(), ErrUnsupported, inference.SupportedDatatypes)
		}
		md.Inputs = append(md.Inputs, inference.TensorMetadata{Name: vi.name, Datatype: dt, Shape: vi.shapeOrNil()})
	}
	for _, vi := range outputs {
		dt := datatypeOfONNX(vi.elemType)
		if !vi.tensor || !dt.Supported() {
			continue
		}
		md.Outputs = append(md.Outputs, inference.TensorMetadata{Name: vi.name, Datatype: dt, Shape: vi.shapeOrNil()})
	}
	if len(md.Inputs) == 0 {
		return nil, fmt.Errorf("%w: the graph has no inputs", ErrUnsupported)
	}
	if len(md.Outputs) == 0 {
		return nil, fmt.Errorf("%w: none of the graph's outputs is a tensor of a supported datatype", ErrUnsupported)
	}
	return md, nil
}

func (vi valueInfo) describe() string {
	if !vi.tensor {
		return "not a tensor"
	}
	if dt := datatypeOfONNX(vi.elemType); dt != "" {
		return "a tensor of " + string(dt)
	}
	return fmt.Sprintf("a tensor of ONNX element type %d", vi.elemType)
}

// shapeOrNil returns the shape; a tensor without a shape has unknown rank,
// which metadata writes as an empty shape.
func (vi valueInfo) shapeOrNil() []int64 {
	if !vi.hasShape {
		return []int64{}
	}
	return vi.shape
}

func parseValueInfo(b []byte) (valueInfo, error) {
	var vi valueInfo
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case valueInfoName:
			vi.name = string(v)
		case valueInfoType:
			return eachField(v, func(n protowire.Number, t protowire.Type, tb []byte, _ uint64) error {
				if n != typeTensorType || t != protowire.BytesType {
					return nil
				}
				vi.tensor = true
				return eachField(tb, func(n protowire.Number, t protowire.Type, fb []byte, u uint64) error {
					switch {
					case n == tensorElemType && t == protowire.VarintType:
						vi.elemType = int64(u)
					case n == tensorShape && t == protowire.BytesType:
						vi.hasShape = true
						return eachField(fb, func(n protowire.Number, t protowire.Type, db []byte, _ uint64) error {
							if n == shapeDim && t == protowire.BytesType {
								vi.shape = append(vi.shape, parseDim(db))
							}
							return nil
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return vi, err
}

// parseDim returns a dimension's value, or -1 when it is symbolic or absent.
func parseDim(b []byte) int64 {
	d := int64(-1)
	eachField(b, func(n protowire.Number, t protowire.Type, _ []byte, u uint64) error {
		if n == dimValue && t == protowire.VarintType && int64(u) >= 0 {
			d = int64(u)
		}
		return nil
	})
	return d
}

// eachField calls fn for each field of a protobuf message: v is the payload
// of a length-delimited field, u the value of a varint or fixed field.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error) error {
	for n := 0; len(b) > 0; n++ {
		if n > maxDescribeFields {
			return errors.New("too many fields")
		}
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return protowire.ParseError(k)
		}
		b = b[k:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.VarintType:
			u, k = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, k = protowire.ConsumeFixed32(b)
			u = uint64(x)
		case protowire.Fixed64Type:
			u, k = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, k = protowire.ConsumeBytes(b)
		default:
			k = protowire.ConsumeFieldValue(num, typ, b)
		}
		if k < 0 {
			return protowire.ParseError(k)
		}
		b = b[k:]
		if err := fn(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

// datatypeOfONNX maps ONNX's TensorProto.DataType to a v2 datatype ("" if
// there is none).
func datatypeOfONNX(t int64) inference.Datatype {
	switch t {
	case 1:
		return inference.FP32
	case 2:
		return inference.Uint8
	case 3:
		return inference.Int8
	case 4:
		return inference.Uint16
	case 5:
		return inference.Int16
	case 6:
		return inference.Int32
	case 7:
		return inference.Int64
	case 8:
		return inference.Bytes
	case 9:
		return inference.Bool
	case 10:
		return inference.FP16
	case 11:
		return inference.FP64
	case 12:
		return inference.Uint32
	case 13:
		return inference.Uint64
	case 16:
		return inference.BF16
	}
	return ""
}
