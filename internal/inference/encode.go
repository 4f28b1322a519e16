package inference

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends r as a v2 JSON inference request.
func (r *InferRequest) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if r.ID != "" {
		dst = append(dst, `"id":`...)
		dst = appendString(dst, r.ID)
		dst = append(dst, ',')
	}
	if len(r.Parameters) > 0 {
		dst = append(dst, `"parameters":`...)
		dst = appendAny(dst, r.Parameters)
		dst = append(dst, ',')
	}
	dst = append(dst, `"inputs":`...)
	dst = appendTensors(dst, r.Inputs)
	if len(r.Outputs) > 0 {
		dst = append(dst, `,"outputs":`...)
		dst = appendAny(dst, r.Outputs)
	}
	return append(dst, '}')
}

// AppendJSON appends r as a v2 JSON inference response.
func (r *InferResponse) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, r.ModelName)
	if r.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendString(dst, r.ModelVersion)
	}
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, r.ID)
	}
	if len(r.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendAny(dst, r.Parameters)
	}
	dst = append(dst, `,"outputs":`...)
	dst = appendTensors(dst, r.Outputs)
	return append(dst, '}')
}

// MarshalJSON writes r as a v2 JSON inference request.
func (r *InferRequest) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// MarshalJSON writes r as a v2 JSON inference response.
func (r *InferResponse) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

func appendTensors(dst []byte, ts []Tensor) []byte {
	dst = append(dst, '[')
	for i := range ts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTensor(dst, &ts[i])
	}
	return append(dst, ']')
}

func appendTensor(dst []byte, t *Tensor) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, t.Name)
	dst = append(dst, `,"datatype":`...)
	dst = appendString(dst, string(t.Datatype))
	dst = append(dst, `,"shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	dst = append(dst, ']')
	if len(t.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendAny(dst, t.Parameters)
	}
	dst = append(dst, `,"data":`...)
	dst = appendRaw(dst, t.Datatype, t.Raw)
	return append(dst, '}')
}

// appendRaw writes the elements of raw as a flat JSON array. Non-finite
// floats, which JSON numbers cannot write, are written as the strings
// "NaN", "Inf" and "-Inf" (the decoder reads them back).
func appendRaw(dst []byte, dt Datatype, raw []byte) []byte {
	le := binary.LittleEndian
	size := dt.Size()
	dst = append(dst, '[')
	if size == 0 {
		return append(dst, ']')
	}
	n := len(raw) / size
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		b := raw[i*size:]
		switch dt {
		case Bool:
			if b[0] != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case Uint8:
			dst = strconv.AppendUint(dst, uint64(b[0]), 10)
		case Uint16:
			dst = strconv.AppendUint(dst, uint64(le.Uint16(b)), 10)
		case Uint32:
			dst = strconv.AppendUint(dst, uint64(le.Uint32(b)), 10)
		case Uint64:
			dst = strconv.AppendUint(dst, le.Uint64(b), 10)
		case Int8:
			dst = strconv.AppendInt(dst, int64(int8(b[0])), 10)
		case Int16:
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(b))), 10)
		case Int32:
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(b))), 10)
		case Int64:
			dst = strconv.AppendInt(dst, int64(le.Uint64(b)), 10)
		case FP32:
			dst = appendFloat(dst, float64(math.Float32frombits(le.Uint32(b))), 32)
		case FP64:
			dst = appendFloat(dst, math.Float64frombits(le.Uint64(b)), 64)
		}
	}
	return append(dst, ']')
}

func appendFloat(dst []byte, v float64, bits int) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(dst, `"Inf"`...)
	case math.IsInf(v, -1):
		return append(dst, `"-Inf"`...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, bits)
}

// appendString writes s as a JSON string.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

func appendAny(dst []byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// AppendBinary appends r in the binary tensor data extension: a JSON header
// in which each input gives its parameters.binary_data_size instead of
// data, then the inputs' raw data in order. It returns the header's length
// (the Inference-Header-Content-Length). With binaryOutput, the request
// asks for every output in binary too.
func (r *InferRequest) AppendBinary(dst []byte, binaryOutput bool) ([]byte, int) {
	start := len(dst)
	dst = append(dst, '{')
	if r.ID != "" {
		dst = append(dst, `"id":`...)
		dst = appendString(dst, r.ID)
		dst = append(dst, ',')
	}
	params := r.Parameters
	if binaryOutput {
		params = withParam(params, ParamBinaryDataOutput, true)
	}
	if len(params) > 0 {
		dst = append(dst, `"parameters":`...)
		dst = appendAny(dst, params)
		dst = append(dst, ',')
	}
	dst = append(dst, `"inputs":[`...)
	for i := range r.Inputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTensorHeader(dst, &r.Inputs[i])
	}
	dst = append(dst, ']')
	if len(r.Outputs) > 0 {
		dst = append(dst, `,"outputs":`...)
		dst = appendAny(dst, r.Outputs)
	}
	dst = append(dst, '}')
	n := len(dst) - start
	for i := range r.Inputs {
		dst = append(dst, r.Inputs[i].Raw...)
	}
	return dst, n
}

// AppendWith appends r as JSON, except that the outputs for which binary
// returns true go in the binary tensor data extension. It returns the JSON
// header's length, or -1 when no output is binary (plain JSON). A nil
// binary means none.
func (r *InferResponse) AppendWith(dst []byte, binary func(name string) bool) ([]byte, int) {
	if binary == nil {
		return r.AppendJSON(dst), -1
	}
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, r.ModelName)
	if r.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendString(dst, r.ModelVersion)
	}
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, r.ID)
	}
	if len(r.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendAny(dst, r.Parameters)
	}
	dst = append(dst, `,"outputs":[`...)
	someBinary := false
	for i := range r.Outputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		if t := &r.Outputs[i]; binary(t.Name) {
			dst = appendTensorHeader(dst, t)
			someBinary = true
		} else {
			dst = appendTensor(dst, t)
		}
	}
	dst = append(dst, "]}"...)
	if !someBinary {
		return dst, -1
	}
	n := len(dst) - start
	for i := range r.Outputs {
		if binary(r.Outputs[i].Name) {
			dst = append(dst, r.Outputs[i].Raw...)
		}
	}
	return dst, n
}

// BinaryOutputs returns which outputs req asks for in binary, or nil when
// none. An output's own parameters.binary_data (true or false) wins; an
// output that does not say follows the request's
// parameters.binary_data_output (binary tensor data extension).
func BinaryOutputs(req *InferRequest) func(name string) bool {
	all := req.Parameters[ParamBinaryDataOutput] == true
	var own map[string]bool
	some := all
	for _, o := range req.Outputs {
		b, ok := o.Parameters[ParamBinaryData].(bool)
		if !ok {
			continue
		}
		if own == nil {
			own = map[string]bool{}
		}
		own[o.Name] = b
		some = some || b
	}
	switch {
	case !some:
		return nil
	case own == nil:
		return func(string) bool { return true }
	}
	return func(name string) bool {
		if b, ok := own[name]; ok {
			return b
		}
		return all
	}
}

// appendTensorHeader writes a tensor with parameters.binary_data_size in
// place of its data.
func appendTensorHeader(dst []byte, t *Tensor) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, t.Name)
	dst = append(dst, `,"datatype":`...)
	dst = appendString(dst, string(t.Datatype))
	dst = append(dst, `,"shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	dst = append(dst, `],"parameters":`...)
	if len(t.Parameters) > 0 {
		dst = appendAny(dst, withParam(t.Parameters, ParamBinaryDataSize, len(t.Raw)))
	} else {
		dst = append(dst, `{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(len(t.Raw)), 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func withParam(ps map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(ps)+1)
	for key, val := range ps {
		out[key] = val
	}
	out[k] = v
	return out
}
