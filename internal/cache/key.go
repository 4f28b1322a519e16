package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Key identifies a cached answer: a SHA-256 digest of the request's parts
// (Request.Key), so that memory is spent on answers, not on keys.
type Key [sha256.Size]byte

// String returns the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Request is what a cached answer depends on.
type Request struct {
	// Revision is the deployment's manifest hash: a new revision misses.
	Revision string
	// Caller is who asked (a tenant, or a digest of the credentials the
	// instance would see); "" is anyone. Callers never share entries.
	Caller string
	// Method and Target (the escaped path and the query) of the request.
	Method, Target string
	// Header holds name, value pairs of the request headers the answer
	// depends on, in a fixed order.
	Header []string
	// Body is the request's body. A JSON body counts by CanonicalJSON:
	// member order and whitespace between tokens do not make another key.
	// Any other body counts by its bytes.
	Body []byte
	// JSONPrefix, when > 0, says that only the first JSONPrefix bytes of
	// Body are JSON and the rest is binary data (the v2 protocol's binary
	// data extension, Inference-Header-Content-Length).
	JSONPrefix int
}

// Key returns the digest of r.
func (r *Request) Key() Key {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	str := func(s string) { field([]byte(s)) }
	str(r.Revision)
	str(r.Caller)
	str(r.Method)
	str(r.Target)
	for _, s := range r.Header {
		str(s)
	}
	str("\x00body")
	body, rest := r.Body, []byte(nil)
	if r.JSONPrefix > 0 && r.JSONPrefix <= len(body) {
		body, rest = body[:r.JSONPrefix], body[r.JSONPrefix:]
	}
	bp := bufPool.Get().(*[]byte)
	if c, ok := appendCanonical((*bp)[:0], body); ok && len(body) > 0 {
		h.Write([]byte{'j'})
		field(c)
		*bp = c
	} else {
		h.Write([]byte{'r'})
		field(body)
		*bp = c[:0]
	}
	if cap(*bp) <= 1<<20 {
		bufPool.Put(bp)
	}
	field(rest)
	var k Key
	h.Sum(k[:0])
	return k
}

// CanonicalJSON returns b's JSON text with each object's members ordered
// by key and without whitespace between tokens, and true; or false when b
// is not a JSON text. Tokens keep their bytes: 1.0 and 1, or "\u0031" and
// "1", stay apart (another key, never a wrong answer). Of an object's
// duplicate keys, their order is kept, so the last still counts last.
func CanonicalJSON(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	return appendCanonical(nil, b)
}
