package manifest

import (
	"fmt"
	"strings"
	"time"
)

// Cache turns on the gateway's response cache for a deployment: successful
// answers to cacheable requests are kept and served again without an
// instance (docs/cache.md). `cache: {}` turns it on with the defaults.
type Cache struct {
	// TTL is how long a kept answer is served.
	TTL Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// MaxBytes bounds the memory the cache holds; least recently used
	// answers are evicted.
	MaxBytes ByteSize `yaml:"max_bytes,omitempty" json:"max_bytes,omitempty"`
	// Paths are the pass-through POST paths (after /models/{name}) whose
	// answers may be kept, such as /predict. GETs always may.
	Paths []string `yaml:"paths,omitempty" json:"paths,omitempty"`
}

// Cache defaults.
const (
	DefaultCacheTTL      = 5 * time.Minute
	DefaultCacheMaxBytes = 64 << 20
)

// HasPath reports whether path is one of Paths.
func (c *Cache) HasPath(path string) bool {
	for _, p := range c.Paths {
		if p == path {
			return true
		}
	}
	return false
}

func (c *Cache) setDefaults() {
	if c == nil {
		return
	}
	if c.TTL == 0 {
		c.TTL = Duration(DefaultCacheTTL)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultCacheMaxBytes
	}
}

func (c *Cache) validate() []Problem {
	if c == nil {
		return nil
	}
	var probs []Problem
	bad := func(field, msg string, args ...any) {
		probs = append(probs, Problem{Field: field, Message: fmt.Sprintf(msg, args...)})
	}
	if c.TTL < 0 {
		bad("cache.ttl", "must not be negative")
	}
	if c.MaxBytes < 0 {
		bad("cache.max_bytes", "must not be negative")
	}
	seen := map[string]bool{}
	for i, p := range c.Paths {
		field := fmt.Sprintf("cache.paths[%d]", i)
		switch {
		case !strings.HasPrefix(p, "/"):
			bad(field, "%q must be a path starting with / (the part after /models/{name})", p)
		case strings.ContainsAny(p, "?#"):
			bad(field, "%q must be a path without a query or fragment", p)
		case seen[p]:
			bad(field, "%q is given twice", p)
		}
		seen[p] = true
	}
	return probs
}
