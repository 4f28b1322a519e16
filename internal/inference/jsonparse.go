package inference

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"

	"tandem/internal/problem"
)

// parser reads v2 JSON in one pass, straight into tensors: a tensor's data
// is parsed as it is scanned (or, when its datatype comes after it, scanned
// once and parsed once), never kept as generic values. Small parts that
// need no speed (parameters, requested outputs) go through encoding/json.
// It is a parser of outside input: FuzzDecodeInferRequest exercises it.
type parser struct {
	b   []byte
	i   int
	bin []byte // the binary section of the binary data extension
	off int    // how much of bin the tensors took so far
}

// maxDepth bounds nesting, so that "[[[[..." cannot exhaust the stack.
const maxDepth = 64

// syntaxError is malformed JSON at an offset.
func (p *parser) syntaxError(msg string) error {
	return problem.New(http.StatusBadRequest, CodeInvalidJSON,
		fmt.Sprintf("the request body is not valid JSON (at byte %d: %s)", p.i, msg))
}

// kindError is a well-formed value of the wrong kind for its field.
func (p *parser) kindError(field, want string) error {
	if p.i >= len(p.b) {
		return p.syntaxError("unexpected end of input")
	}
	got := kindName(p.b[p.i])
	if field == "" {
		return problem.New(http.StatusBadRequest, CodeInvalidJSON, fmt.Sprintf("the request body must be a JSON object, not %s", got))
	}
	return problem.New(http.StatusBadRequest, CodeInvalidJSON, fmt.Sprintf("must be %s, not %s", want, got)).WithField(field)
}

func invalidField(field, msg string) error {
	return problem.New(http.StatusBadRequest, CodeInvalidInput, msg).WithField(field)
}

func kindName(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "true or false"
	case 'n':
		return "null"
	}
	return "a number"
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (p *parser) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) end() error {
	if p.peek() != 0 {
		return p.syntaxError("more after the end of the JSON value")
	}
	return nil
}

// object reads an object, calling fn with each key with p at its value;
// fn must consume the value.
func (p *parser) object(field string, fn func(key string) error) error {
	if p.peek() != '{' {
		return p.kindError(field, "an object")
	}
	p.i++
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.syntaxError("expected a quoted key")
		}
		key, err := p.str()
		if err != nil {
			return err
		}
		if p.peek() != ':' {
			return p.syntaxError("expected ':' after a key")
		}
		p.i++
		p.ws()
		if err := fn(key); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.syntaxError("expected ',' or '}' in an object")
		}
	}
}

// array reads an array, calling fn with each index with p at the element.
func (p *parser) array(field string, fn func(i int) error) error {
	if p.peek() != '[' {
		return p.kindError(field, "an array")
	}
	p.i++
	if p.peek() == ']' {
		p.i++
		return nil
	}
	for i := 0; ; i++ {
		p.ws()
		if err := fn(i); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.syntaxError("expected ',' or ']' in an array")
		}
	}
}

// str reads a string at p.
func (p *parser) str() (string, error) {
	start := p.i
	p.i++
	escaped := false
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !escaped {
				s := p.b[start+1 : p.i-1]
				if !utf8.Valid(s) {
					return string([]rune(string(s))), nil // invalid bytes become U+FFFD, as encoding/json does
				}
				return string(s), nil
			}
			var s string
			if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
				p.i = start
				return "", p.syntaxError("invalid string escape")
			}
			return s, nil
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return "", p.syntaxError("control character in a string")
		default:
			p.i++
		}
	}
	return "", p.syntaxError("unterminated string")
}

// stringField reads a string value for field.
func (p *parser) stringField(field string) (string, error) {
	if p.peek() != '"' {
		return "", p.kindError(field, "a string")
	}
	return p.str()
}

// number scans a JSON number and returns its text.
func (p *parser) number() ([]byte, error) {
	start := p.i
	b := p.b
	i := p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		p.i = i
		return nil, p.syntaxError("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			p.i = i
			return nil, p.syntaxError("invalid number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			p.i = i
			return nil, p.syntaxError("invalid number")
		}
	}
	p.i = i
	return b[start:i], nil
}

// literal reads true, false or null.
func (p *parser) literal() (string, error) {
	for _, lit := range []string{"true", "false", "null"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return lit, nil
		}
	}
	return "", p.syntaxError("invalid value")
}

// skip reads any value, checking its syntax.
func (p *parser) skip(depth int) error {
	if depth > maxDepth {
		return p.syntaxError("nested too deeply")
	}
	switch c := p.peek(); {
	case c == '{':
		return p.object("?", func(string) error { return p.skip(depth + 1) })
	case c == '[':
		return p.array("?", func(int) error { return p.skip(depth + 1) })
	case c == '"':
		_, err := p.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := p.number()
		return err
	case c == 0:
		return p.syntaxError("unexpected end of input")
	default:
		_, err := p.literal()
		return err
	}
}

// raw reads any value and returns its text.
func (p *parser) raw() ([]byte, error) {
	p.ws()
	start := p.i
	if err := p.skip(0); err != nil {
		return nil, err
	}
	return p.b[start:p.i], nil
}

// params reads a parameters object.
func (p *parser) params(field string) (map[string]any, error) {
	if p.peek() == 'n' {
		_, err := p.literal()
		return nil, err
	}
	if p.peek() != '{' {
		return nil, p.kindError(field, "an object")
	}
	b, err := p.raw()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, p.syntaxError(err.Error())
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func (p *parser) request() (*InferRequest, error) {
	req := &InferRequest{}
	err := p.object("", func(key string) error {
		var err error
		switch key {
		case "id":
			req.ID, err = p.stringField("id")
		case "parameters":
			req.Parameters, err = p.params("parameters")
		case "inputs":
			req.Inputs, err = p.tensors("inputs")
		case "outputs":
			err = p.array("outputs", func(i int) error {
				f := fmt.Sprintf("outputs[%d]", i)
				var o RequestedOutput
				err := p.object(f, func(key string) error {
					var err error
					switch key {
					case "name":
						o.Name, err = p.stringField(f + ".name")
					case "parameters":
						o.Parameters, err = p.params(f + ".parameters")
					default:
						err = p.skip(0)
					}
					return err
				})
				req.Outputs = append(req.Outputs, o)
				return err
			})
		default:
			err = p.skip(0)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	if err := p.binaryConsumed(); err != nil {
		return nil, err
	}
	return req, nil
}

func (p *parser) response() (*InferResponse, error) {
	resp := &InferResponse{}
	err := p.object("", func(key string) error {
		var err error
		switch key {
		case "model_name":
			resp.ModelName, err = p.stringField(key)
		case "model_version":
			resp.ModelVersion, err = p.stringField(key)
		case "id":
			resp.ID, err = p.stringField(key)
		case "parameters":
			resp.Parameters, err = p.params(key)
		case "outputs":
			resp.Outputs, err = p.tensors(key)
		default:
			err = p.skip(0)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	if err := p.binaryConsumed(); err != nil {
		return nil, err
	}
	return resp, nil
}

func (p *parser) binaryConsumed() error {
	if p.off != len(p.bin) {
		return problem.New(http.StatusBadRequest, CodeInvalidInput,
			fmt.Sprintf("the binary data has %d bytes, but the tensors' binary_data_size add up to %d", len(p.bin), p.off))
	}
	return nil
}

func (p *parser) tensors(field string) ([]Tensor, error) {
	var ts []Tensor
	err := p.array(field, func(i int) error {
		t, err := p.tensor(fmt.Sprintf("%s[%d]", field, i))
		ts = append(ts, t)
		return err
	})
	return ts, err
}

func (p *parser) tensor(field string) (Tensor, error) {
	var t Tensor
	var pending []byte // the data's text, in case the datatype was not known
	var hinted Datatype
	hasData := false
	err := p.object(field, func(key string) error {
		var err error
		switch key {
		case "name":
			t.Name, err = p.stringField(field + ".name")
		case "datatype":
			var s string
			s, err = p.stringField(field + ".datatype")
			t.Datatype = Datatype(s)
		case "shape":
			t.Shape = []int64{}
			err = p.array(field+".shape", func(j int) error {
				c := p.peek()
				if c != '-' && (c < '0' || c > '9') {
					return p.kindError(field+".shape", "an array of integers")
				}
				tok, err := p.number()
				if err != nil {
					return err
				}
				d, err := strconv.ParseInt(string(tok), 10, 64)
				if err != nil {
					return invalidField(field+".shape", fmt.Sprintf("dimension %d (%s) is not an integer", j, tok))
				}
				if d < 0 {
					return invalidField(field+".shape", fmt.Sprintf("dimension %d is %d; dimensions must not be negative", j, d))
				}
				t.Shape = append(t.Shape, d)
				return nil
			})
		case "parameters":
			t.Parameters, err = p.params(field + ".parameters")
		case "data":
			if p.peek() == 'n' { // null: as if absent
				_, err = p.literal()
				return err
			}
			hasData = true
			dt := t.Datatype
			if dt == "" {
				// Clients that sort keys send "data" before "datatype": look
				// ahead for it, as a hint checked when the key is read.
				dt = p.datatypeAhead()
				hinted = dt
			}
			start := p.i
			if dt.Supported() {
				t.Raw, err = p.data(dt, field+".data", t.Shape)
				if err != nil && hinted != "" { // a wrong guess, or bad data: read it again below
					t.Raw, p.i = nil, start
					err = p.skip(0)
				}
			} else {
				err = p.skip(0)
			}
			pending = p.b[start:p.i]
		default:
			err = p.skip(0)
		}
		return err
	})
	if err != nil {
		return t, err
	}
	switch {
	case t.Name == "":
		return t, invalidField(field+".name", "required")
	case t.Datatype == "":
		return t, invalidField(field+".datatype", "required")
	case !t.Datatype.Supported():
		return t, invalidField(field+".datatype", fmt.Sprintf("datatype %q is not supported (use one of %v)", string(t.Datatype), SupportedDatatypes))
	case t.Shape == nil:
		return t, invalidField(field+".shape", "required")
	}
	if size, ok := t.Parameters[ParamBinaryDataSize]; ok {
		if hasData {
			return t, invalidField(field+".data", "must be absent when parameters.binary_data_size is given")
		}
		n, ok := size.(float64)
		if !ok || n < 0 || n != float64(int64(n)) || p.off+int(n) > len(p.bin) {
			return t, invalidField(field+".parameters.binary_data_size",
				fmt.Sprintf("%v does not fit the %d bytes of binary data left", size, len(p.bin)-p.off))
		}
		t.Raw = p.bin[p.off : p.off+int(n) : p.off+int(n)]
		p.off += int(n)
		delete(t.Parameters, ParamBinaryDataSize)
		if len(t.Parameters) == 0 {
			t.Parameters = nil
		}
		if len(t.Raw)%t.Datatype.Size() != 0 {
			return t, invalidField(field+".parameters.binary_data_size",
				fmt.Sprintf("%d bytes is not a whole number of %s elements", len(t.Raw), t.Datatype))
		}
		return t, nil
	}
	if !hasData {
		return t, invalidField(field+".data", "required")
	}
	if pending != nil && (t.Raw == nil || hinted != "" && hinted != t.Datatype) {
		sub := &parser{b: pending}
		var err error
		if t.Raw, err = sub.data(t.Datatype, field+".data", t.Shape); err != nil {
			return t, err
		}
	}
	return t, nil
}

var datatypeKey = []byte(`"datatype"`)

// datatypeAhead finds the next "datatype" key after p and returns its
// value, or "" if there is none. It is a guess (the key might belong to
// another object, or sit inside a string): callers check it.
func (p *parser) datatypeAhead() Datatype {
	k := bytes.Index(p.b[p.i:], datatypeKey)
	if k < 0 {
		return ""
	}
	q := &parser{b: p.b, i: p.i + k + len(datatypeKey)}
	if q.peek() != ':' {
		return ""
	}
	q.i++
	if q.peek() != '"' {
		return ""
	}
	s, err := q.str()
	if err != nil {
		return ""
	}
	return Datatype(s)
}

// data reads a tensor's data (a flat or nested array, or one value) as dt.
func (p *parser) data(dt Datatype, field string, shape []int64) ([]byte, error) {
	var hint int
	// Preallocate only what the body could hold (no JSON number is shorter
	// than a byte per 8 bytes of output), dividing so nothing can overflow.
	if n, ok := Elements(shape); ok && n > 0 && dt.Size() > 0 && n <= int64(len(p.b)-p.i)*8/int64(dt.Size()) {
		hint = int(n) * dt.Size()
	}
	d := dataReader{p: p, dt: dt, field: field, out: make([]byte, 0, hint)}
	if err := d.value(0); err != nil {
		return nil, err
	}
	return d.out, nil
}

type dataReader struct {
	p     *parser
	dt    Datatype
	field string
	out   []byte
	n     int // elements so far
}

func (d *dataReader) value(depth int) error {
	p := d.p
	if depth > maxDepth {
		return p.syntaxError("nested too deeply")
	}
	switch c := p.peek(); {
	case c == '[':
		return p.array(d.field, func(int) error { return d.value(depth + 1) })
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		num, ok := p.scanNumber()
		if !ok {
			return p.syntaxError("invalid number")
		}
		var fast bool
		if d.out, fast = num.append(d.out, d.dt); !fast {
			var err error
			if d.out, err = appendElement(d.out, p.b[start:p.i], d.dt); err != nil {
				return invalidField(d.field, fmt.Sprintf("element %d: %v", d.n, err))
			}
		}
	case c == '"':
		s, err := p.str()
		if err != nil {
			return err
		}
		var ok bool
		if d.out, ok = appendSpecialFloat(d.out, s, d.dt); !ok {
			return invalidField(d.field, fmt.Sprintf("element %d is the string %q; %s data holds %s", d.n, s, d.dt, kindOf(d.dt)))
		}
	case c == '{':
		return invalidField(d.field, fmt.Sprintf("element %d is an object; %s data holds %s", d.n, d.dt, kindOf(d.dt)))
	case c == 0:
		return p.syntaxError("unexpected end of input")
	default:
		lit, err := p.literal()
		if err != nil {
			return err
		}
		switch {
		case d.dt == Bool && lit == "true":
			d.out = append(d.out, 1)
		case d.dt == Bool && lit == "false":
			d.out = append(d.out, 0)
		default:
			return invalidField(d.field, fmt.Sprintf("element %d is %s; %s data holds %s", d.n, lit, d.dt, kindOf(d.dt)))
		}
	}
	d.n++
	return nil
}

// decimal is a JSON number read as mant * 10^exp, when it has at most 19
// significant digits.
type decimal struct {
	mant     uint64
	exp      int
	neg      bool
	exact    bool // mant and exp hold the number (else: too many digits)
	integral bool // written without a fraction or exponent
}

// scanNumber reads a JSON number at p, computing its decimal as it goes.
func (p *parser) scanNumber() (decimal, bool) {
	b, i := p.b, p.i
	var d decimal
	d.exact, d.integral = true, true
	if i < len(b) && b[i] == '-' {
		d.neg = true
		i++
	}
	digits := 0
	addDigit := func(c byte) {
		if d.mant < 1e18 {
			d.mant = d.mant*10 + uint64(c-'0')
		} else {
			d.exact = false
		}
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			addDigit(b[i])
			digits++
			i++
		}
	default:
		p.i = i
		return d, false
	}
	if i < len(b) && b[i] == '.' {
		d.integral = false
		i++
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			addDigit(b[i])
			d.exp--
			n++
			i++
		}
		if n == 0 {
			p.i = i
			return d, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		d.integral = false
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		n, e := 0, 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if e < 10000 {
				e = e*10 + int(b[i]-'0')
			}
			n++
			i++
		}
		if n == 0 {
			p.i = i
			return d, false
		}
		if eneg {
			e = -e
		}
		d.exp += e
	}
	p.i = i
	return d, true
}

var (
	pow10f32 = [...]float32{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}
	pow10f64 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
		1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}
)

// append encodes d as dt when that is exact and cheap: the fast paths of
// strconv (a mantissa and a power of ten that are both exact in the float
// type, so one multiply or divide rounds correctly), and integers in range.
// It returns false to leave the number to strconv.
func (d decimal) append(dst []byte, dt Datatype) ([]byte, bool) {
	if !d.exact {
		return dst, false
	}
	le := binary.LittleEndian
	switch dt {
	case FP32:
		var f float32
		switch {
		case d.mant < 1<<24 && d.exp >= -10 && d.exp <= 10:
			f = float32(d.mant)
			if d.exp < 0 {
				f /= pow10f32[-d.exp]
			} else {
				f *= pow10f32[d.exp]
			}
		case d.mant < 1<<53 && d.exp >= -22 && d.exp <= 22:
			// Round to float64 (exact, as below), then to float32. The two
			// roundings agree unless the float64 lands exactly on a midpoint
			// between float32s: those go to strconv.
			g := float64(d.mant)
			if d.exp < 0 {
				g /= pow10f64[-d.exp]
			} else {
				g *= pow10f64[d.exp]
			}
			if g < 0x1p-126 || g > math.MaxFloat32 || math.Float64bits(g)&(1<<29-1) == 1<<28 {
				return dst, false
			}
			f = float32(g)
		default:
			return dst, false
		}
		if d.neg {
			f = -f
		}
		return le.AppendUint32(dst, math.Float32bits(f)), true
	case FP64:
		if d.mant >= 1<<53 || d.exp < -22 || d.exp > 22 {
			return dst, false
		}
		f := float64(d.mant)
		if d.exp < 0 {
			f /= pow10f64[-d.exp]
		} else {
			f *= pow10f64[d.exp]
		}
		if d.neg {
			f = -f
		}
		return le.AppendUint64(dst, math.Float64bits(f)), true
	case Int8, Int16, Int32, Int64:
		if !d.integral || d.mant > math.MaxInt64 {
			return dst, false
		}
		v := int64(d.mant)
		if d.neg {
			v = -v
		}
		bits := dt.Size() * 8
		if v < minInt(bits) || v > maxInt(bits) {
			return dst, false // strconv words the range error
		}
		switch bits {
		case 8:
			return append(dst, byte(int8(v))), true
		case 16:
			return le.AppendUint16(dst, uint16(int16(v))), true
		case 32:
			return le.AppendUint32(dst, uint32(int32(v))), true
		}
		return le.AppendUint64(dst, uint64(v)), true
	case Uint8, Uint16, Uint32, Uint64:
		if !d.integral || (d.neg && d.mant != 0) {
			return dst, false
		}
		bits := dt.Size() * 8
		if bits < 64 && d.mant >= 1<<bits {
			return dst, false
		}
		switch bits {
		case 8:
			return append(dst, byte(d.mant)), true
		case 16:
			return le.AppendUint16(dst, uint16(d.mant)), true
		case 32:
			return le.AppendUint32(dst, uint32(d.mant)), true
		}
		return le.AppendUint64(dst, d.mant), true
	}
	return dst, false
}
