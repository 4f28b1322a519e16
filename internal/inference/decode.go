package inference

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"unsafe"

	"tandem/internal/problem"
)

// Codes of the errors this package answers with.
const (
	CodeInvalidJSON  = "invalid_json"
	CodeEmptyBody    = "empty_body"
	CodeInvalidInput = "invalid_input"
	CodeBodyTooLarge = "body_too_large"
)

// HeaderBinaryLength is the header of the v2 binary tensor data extension
// (Triton's): the body is a JSON header of this many bytes, followed by the
// raw data of the tensors whose parameters give a "binary_data_size".
const HeaderBinaryLength = "Inference-Header-Content-Length"

// Parameters of the binary tensor data extension.
const (
	ParamBinaryDataSize   = "binary_data_size"
	ParamBinaryDataOutput = "binary_data_output" // request: every output in binary
	ParamBinaryData       = "binary_data"        // requested output: this one in binary
)

// DecodeInferRequest parses a v2 JSON inference request. The data of each
// input may be flat or nested; it is flattened into Tensor.Raw. It checks
// what needs no model (JSON syntax, datatypes, that every element fits its
// datatype); Validate checks the request against the model. Every error is a
// *problem.Error with status 400 that names the field.
func DecodeInferRequest(body []byte) (*InferRequest, error) {
	return DecodeInferRequestBinary(body, -1)
}

// DecodeInferRequestBinary parses a request in the binary tensor data
// extension: a JSON header of headerLen bytes, then the raw data of the
// inputs that give a binary_data_size, in order. A negative headerLen means
// the whole body is JSON.
func DecodeInferRequestBinary(body []byte, headerLen int) (*InferRequest, error) {
	js, bin, err := splitBinary(body, headerLen)
	if err != nil {
		return nil, err
	}
	if isBlank(js) {
		return nil, problem.New(http.StatusBadRequest, CodeEmptyBody,
			`the request body is empty; send a v2 inference request such as {"inputs": [{"name": ..., "shape": [...], "datatype": "FP32", "data": [...]}]}`)
	}
	p := &parser{b: js, bin: bin}
	req, err := p.request()
	if err != nil {
		return nil, err
	}
	return req, nil
}

// DecodeInferResponse parses a v2 JSON inference response.
func DecodeInferResponse(body []byte) (*InferResponse, error) {
	return DecodeInferResponseBinary(body, -1)
}

// DecodeInferResponseBinary parses a response in the binary tensor data
// extension (see DecodeInferRequestBinary).
func DecodeInferResponseBinary(body []byte, headerLen int) (*InferResponse, error) {
	js, bin, err := splitBinary(body, headerLen)
	if err != nil {
		return nil, err
	}
	p := &parser{b: js, bin: bin}
	resp, err := p.response()
	if err != nil {
		return nil, fmt.Errorf("decoding v2 inference response: %w", err)
	}
	return resp, nil
}

func splitBinary(body []byte, headerLen int) (js, bin []byte, err error) {
	if headerLen < 0 {
		return body, nil, nil
	}
	if headerLen > len(body) {
		return nil, nil, problem.New(http.StatusBadRequest, CodeInvalidJSON,
			fmt.Sprintf("%s is %d, but the body has only %d bytes", HeaderBinaryLength, headerLen, len(body)))
	}
	return body[:headerLen], body[headerLen:], nil
}

// ParseBinaryLength reads the Inference-Header-Content-Length header: -1
// when absent.
func ParseBinaryLength(v string) (int, error) {
	if v == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, problem.New(http.StatusBadRequest, CodeInvalidJSON,
			fmt.Sprintf("%s must be a byte count, not %q", HeaderBinaryLength, v))
	}
	return n, nil
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func kindOf(dt Datatype) string {
	switch dt {
	case Bool:
		return "true or false"
	case FP32, FP64:
		return "numbers"
	}
	return "integers"
}

// appendSpecialFloat accepts "NaN", "Inf" and "-Inf" (which JSON numbers
// cannot write) for FP32 and FP64.
func appendSpecialFloat(dst []byte, s string, dt Datatype) ([]byte, bool) {
	var v float64
	switch s {
	case "NaN":
		v = math.NaN()
	case "Inf", "+Inf", "Infinity":
		v = math.Inf(1)
	case "-Inf", "-Infinity":
		v = math.Inf(-1)
	default:
		return dst, false
	}
	switch dt {
	case FP32:
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(v))), true
	case FP64:
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v)), true
	}
	return dst, false
}

var errNotBool = errors.New("BOOL data holds true or false")

func appendElement(dst, tok []byte, dt Datatype) ([]byte, error) {
	// The string does not outlive this call (errors copy what they quote).
	s := unsafe.String(unsafe.SliceData(tok), len(tok))
	le := binary.LittleEndian
	switch dt {
	case Bool:
		switch s {
		case "true":
			return append(dst, 1), nil
		case "false":
			return append(dst, 0), nil
		}
		return dst, fmt.Errorf("%q: %w", string(tok), errNotBool)
	case FP32:
		v, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return dst, numError(tok, dt, err)
		}
		return le.AppendUint32(dst, math.Float32bits(float32(v))), nil
	case FP64:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return dst, numError(tok, dt, err)
		}
		return le.AppendUint64(dst, math.Float64bits(v)), nil
	case Int8, Int16, Int32, Int64:
		bits := dt.Size() * 8
		v, err := strconv.ParseInt(s, 10, bits)
		if err != nil {
			if v, err = integralFloat(s, err, float64(minInt(bits)), float64(maxInt(bits))); err != nil {
				return dst, numError(tok, dt, err)
			}
		}
		switch bits {
		case 8:
			return append(dst, byte(int8(v))), nil
		case 16:
			return le.AppendUint16(dst, uint16(int16(v))), nil
		case 32:
			return le.AppendUint32(dst, uint32(int32(v))), nil
		}
		return le.AppendUint64(dst, uint64(v)), nil
	case Uint8, Uint16, Uint32, Uint64:
		bits := dt.Size() * 8
		v, err := strconv.ParseUint(s, 10, bits)
		if err != nil {
			f, ferr := integralFloat(s, err, 0, math.Ldexp(1, bits)-1)
			if ferr != nil {
				return dst, numError(tok, dt, ferr)
			}
			v = uint64(f)
		}
		switch bits {
		case 8:
			return append(dst, byte(v)), nil
		case 16:
			return le.AppendUint16(dst, uint16(v)), nil
		case 32:
			return le.AppendUint32(dst, uint32(v)), nil
		}
		return le.AppendUint64(dst, v), nil
	}
	return dst, fmt.Errorf("datatype %s is not supported", dt)
}

func minInt(bits int) int64 { return -1 << (bits - 1) }
func maxInt(bits int) int64 { return 1<<(bits-1) - 1 }

var (
	errNotNumber  = errors.New("not a number")
	errNotInteger = errors.New("not an integer")
	errRange      = errors.New("out of range")
)

// integralFloat accepts integers written as floats (3.0, 1e3) within
// [lo, hi]; parseErr is the integer parser's error.
func integralFloat(s string, parseErr error, lo, hi float64) (int64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if errors.Is(parseErr, strconv.ErrRange) {
			return 0, errRange
		}
		return 0, errNotNumber
	}
	if f != math.Trunc(f) {
		return 0, errNotInteger
	}
	if f < lo || f > hi {
		return 0, errRange
	}
	if f >= math.MaxInt64 { // only reached for UINT64 near its top; callers convert
		return 0, errRange
	}
	return int64(f), nil
}

func numError(tok []byte, dt Datatype, err error) error {
	switch {
	case errors.Is(err, strconv.ErrRange), errors.Is(err, errRange):
		return fmt.Errorf("%s is out of range for %s", tok, dt)
	case errors.Is(err, errNotInteger):
		return fmt.Errorf("%s is not an integer; %s data holds integers", tok, dt)
	}
	return fmt.Errorf("%q is not a number; %s data holds %s", string(tok), dt, kindOf(dt))
}
