package inference

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Element is a Go type that maps to a v2 datatype.
type Element interface {
	bool | uint8 | uint16 | uint32 | uint64 | int8 | int16 | int32 | int64 | float32 | float64
}

// DatatypeOf returns the v2 datatype of T.
func DatatypeOf[T Element]() Datatype {
	var z T
	switch any(z).(type) {
	case bool:
		return Bool
	case uint8:
		return Uint8
	case uint16:
		return Uint16
	case uint32:
		return Uint32
	case uint64:
		return Uint64
	case int8:
		return Int8
	case int16:
		return Int16
	case int32:
		return Int32
	case int64:
		return Int64
	case float32:
		return FP32
	}
	return FP64
}

// NewTensor returns a tensor holding values.
func NewTensor[T Element](name string, shape []int64, values []T) Tensor {
	dt := DatatypeOf[T]()
	raw := make([]byte, 0, len(values)*dt.Size())
	le := binary.LittleEndian
	for _, v := range values {
		switch x := any(v).(type) {
		case bool:
			if x {
				raw = append(raw, 1)
			} else {
				raw = append(raw, 0)
			}
		case uint8:
			raw = append(raw, x)
		case int8:
			raw = append(raw, byte(x))
		case uint16:
			raw = le.AppendUint16(raw, x)
		case int16:
			raw = le.AppendUint16(raw, uint16(x))
		case uint32:
			raw = le.AppendUint32(raw, x)
		case int32:
			raw = le.AppendUint32(raw, uint32(x))
		case uint64:
			raw = le.AppendUint64(raw, x)
		case int64:
			raw = le.AppendUint64(raw, uint64(x))
		case float32:
			raw = le.AppendUint32(raw, math.Float32bits(x))
		case float64:
			raw = le.AppendUint64(raw, math.Float64bits(x))
		}
	}
	return Tensor{Name: name, Datatype: dt, Shape: shape, Raw: raw}
}

// Values returns the elements of t as T, which must match t's datatype.
func Values[T Element](t *Tensor) ([]T, error) {
	if want := DatatypeOf[T](); t.Datatype != want {
		return nil, fmt.Errorf("tensor %q is %s, not %s", t.Name, t.Datatype, want)
	}
	size := t.Datatype.Size()
	out := make([]T, len(t.Raw)/size)
	le := binary.LittleEndian
	for i := range out {
		b := t.Raw[i*size:]
		var v any
		switch t.Datatype {
		case Bool:
			v = b[0] != 0
		case Uint8:
			v = b[0]
		case Int8:
			v = int8(b[0])
		case Uint16:
			v = le.Uint16(b)
		case Int16:
			v = int16(le.Uint16(b))
		case Uint32:
			v = le.Uint32(b)
		case Int32:
			v = int32(le.Uint32(b))
		case Uint64:
			v = le.Uint64(b)
		case Int64:
			v = int64(le.Uint64(b))
		case FP32:
			v = math.Float32frombits(le.Uint32(b))
		case FP64:
			v = math.Float64frombits(le.Uint64(b))
		}
		out[i] = v.(T)
	}
	return out, nil
}
