package manifest

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestCache_Parse(t *testing.T) {
	const base = "name: m\nruntime: {command: [x]}\n"
	m, err := Parse([]byte(base+"cache: {}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := m.Cache; c == nil || c.TTL.D() != DefaultCacheTTL || c.MaxBytes != DefaultCacheMaxBytes {
		t.Fatalf("defaults: %+v", m.Cache)
	}
	m, err = Parse([]byte(base+"cache: {ttl: 1m, max_bytes: 1Mi, paths: [/predict]}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := m.Cache; c.TTL.D() != time.Minute || c.MaxBytes != 1<<20 || !c.HasPath("/predict") || c.HasPath("/other") {
		t.Fatalf("parsed: %+v", c)
	}
	if m, _ := Parse([]byte(base), ""); m.Cache != nil {
		t.Fatal("cache on without a cache block")
	}
	_, err = Parse([]byte(base+"cache: {ttl: -1s, max_bytes: -1, paths: [predict, '/a?b', /c, /c]}\n"), "")
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("want *Error, got %v", err)
	}
	var fields []string
	for _, p := range perr.Problems {
		fields = append(fields, p.Field)
	}
	want := []string{"cache.max_bytes", "cache.ttl", "cache.paths[0]", "cache.paths[1]", "cache.paths[3]"}
	if !slices.Equal(fields, want) {
		t.Fatalf("problems at %v, want %v (%v)", fields, want, err)
	}
}
