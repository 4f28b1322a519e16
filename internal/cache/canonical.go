package cache

import (
	"bytes"
	"slices"
	"sync"
)

// maxDepth bounds the nesting canonical follows; deeper bodies count by
// their bytes.
const maxDepth = 512

// canonicalizer writes a JSON text's tokens as they are, less the
// whitespace between them, with each object's members ordered by their
// raw key bytes. It parses exactly as much as that needs: a body it takes
// for JSON and one it does not both make sound keys, because equal output
// can only come from texts that differ by whitespace and member order.
type canonicalizer struct {
	in      []byte
	pos     int
	out     []byte
	members []member // a stack shared by the objects being read
	tmp     []byte
}

type member struct{ start, keyEnd, end int }

var canonPool = sync.Pool{New: func() any { return new(canonicalizer) }}

// appendCanonical appends b's canonical form to dst; ok is false when b
// is not a JSON text.
func appendCanonical(dst, b []byte) (out []byte, ok bool) {
	c := canonPool.Get().(*canonicalizer)
	c.in, c.pos, c.out = b, 0, dst
	ok = c.value(0)
	if ok {
		c.space()
		ok = c.pos == len(c.in)
	}
	out = c.out
	c.in, c.out = nil, nil
	c.members = c.members[:0]
	canonPool.Put(c)
	return out, ok
}

func (c *canonicalizer) space() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value(depth int) bool {
	if depth > maxDepth {
		return false
	}
	c.space()
	if c.pos >= len(c.in) {
		return false
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object(depth)
	case ch == '[':
		return c.array(depth)
	case ch == '"':
		return c.str()
	case ch == '-' || ch >= '0' && ch <= '9':
		start := c.pos
		for c.pos < len(c.in) && numberByte(c.in[c.pos]) {
			c.pos++
		}
		c.out = append(c.out, c.in[start:c.pos]...)
		return true
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
				c.pos += len(lit)
				c.out = append(c.out, lit...)
				return true
			}
		}
		return false
	}
}

func (c *canonicalizer) str() bool {
	start := c.pos
	c.pos++
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case '\\':
			c.pos += 2
		case '"':
			c.pos++
			c.out = append(c.out, c.in[start:c.pos]...)
			return true
		default:
			c.pos++
		}
	}
	return false
}

func (c *canonicalizer) array(depth int) bool {
	c.pos++
	c.out = append(c.out, '[')
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return true
	}
	for {
		if !c.value(depth + 1) {
			return false
		}
		c.space()
		if c.pos >= len(c.in) {
			return false
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return true
		default:
			return false
		}
	}
}

func (c *canonicalizer) object(depth int) bool {
	c.pos++
	c.out = append(c.out, '{')
	base := len(c.members)
	defer func() { c.members = c.members[:base] }()
	c.space()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return true
	}
	for {
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return false
		}
		m := member{start: len(c.out)}
		if !c.str() {
			return false
		}
		m.keyEnd = len(c.out)
		c.space()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return false
		}
		c.pos++
		c.out = append(c.out, ':')
		if !c.value(depth + 1) {
			return false
		}
		m.end = len(c.out)
		c.members = append(c.members, m)
		c.space()
		if c.pos >= len(c.in) {
			return false
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case '}':
			c.pos++
			c.sortMembers(c.members[base:])
			c.out = append(c.out, '}')
			return true
		default:
			return false
		}
	}
}

// sortMembers orders an object's members, written at the end of c.out
// and separated by commas, by their raw keys.
func (c *canonicalizer) sortMembers(ms []member) {
	key := func(m member) []byte { return c.out[m.start:m.keyEnd] }
	if slices.IsSortedFunc(ms, func(a, b member) int { return bytes.Compare(key(a), key(b)) }) {
		return
	}
	from, to := ms[0].start, ms[len(ms)-1].end
	c.tmp = append(c.tmp[:0], c.out[from:to]...)
	src := c.tmp
	slices.SortStableFunc(ms, func(a, b member) int {
		return bytes.Compare(src[a.start-from:a.keyEnd-from], src[b.start-from:b.keyEnd-from])
	})
	w := c.out[:from]
	for i, m := range ms {
		if i > 0 {
			w = append(w, ',')
		}
		w = append(w, src[m.start-from:m.end-from]...)
	}
	c.out = w[:to]
}

func numberByte(ch byte) bool {
	return ch >= '0' && ch <= '9' || ch == '.' || ch == 'e' || ch == 'E' || ch == '-' || ch == '+'
}
