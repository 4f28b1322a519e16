package shadow

import (
	"crypto/sha256"
	"hash"
)

// Digest is an io.Writer that hashes what is written to it with SHA-256.
// The gateway feeds the primary's body through one while streaming it to the
// caller. Write does not allocate. A Digest is not safe for concurrent use.
type Digest struct {
	h   hash.Hash
	sum [32]byte // scratch for Sum, so Sum does not allocate
}

// NewDigest returns an empty Digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Write adds p to the digest. It never fails.
func (d *Digest) Write(p []byte) (int, error) { return d.h.Write(p) }

// Sum returns the SHA-256 of everything written so far. It does not change
// the state: more can be written after it.
func (d *Digest) Sum() [32]byte {
	d.h.Sum(d.sum[:0])
	return d.sum
}
