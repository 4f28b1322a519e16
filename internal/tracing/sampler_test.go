package tracing

import (
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestSamplerFromEnv(t *testing.T) {
	tests := []struct {
		sampler, arg string
		want         sampler
		err          bool
	}{
		{"", "", newSampler(1, true), false},
		{"parentbased_always_on", "", newSampler(1, true), false},
		{"always_on", "", newSampler(1, false), false},
		{"always_off", "", newSampler(0, false), false},
		{"parentbased_always_off", "", newSampler(0, true), false},
		{"traceidratio", "0.25", newSampler(0.25, false), false},
		{"parentbased_traceidratio", "0.01", newSampler(0.01, true), false},
		{"parentbased_traceidratio", "", newSampler(1, true), false},
		{"traceidratio", "2", sampler{}, true},
		{"traceidratio", "x", sampler{}, true},
		{"jaeger_remote", "", sampler{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.sampler+"/"+tc.arg, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_SAMPLER", tc.sampler)
			t.Setenv("OTEL_TRACES_SAMPLER_ARG", tc.arg)
			got, err := samplerFromEnv()
			if (err != nil) != tc.err || (!tc.err && got != tc.want) {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func spanContext(n uint64, sampled bool) trace.SpanContext {
	var tid trace.TraceID
	for i := range 8 {
		tid[8+i] = byte(n >> (56 - 8*i))
	}
	tid[0] = 1
	var f trace.TraceFlags
	if sampled {
		f = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1}, TraceFlags: f, Remote: true})
}

func TestSampler_Sample(t *testing.T) {
	low, high := spanContext(1<<60, false), spanContext(1<<63|1<<62, false) // x = 2^59, and above 2^62
	tests := []struct {
		s      sampler
		parent trace.SpanContext
		want   bool
	}{
		{newSampler(0.01, true), spanContext(0, true), true}, // a sampled caller decides
		{newSampler(1, true), spanContext(0, false), false},  // so does one that did not sample
		{newSampler(0, false), spanContext(0, true), false},  // not parent-based: the ratio decides
		{newSampler(0.25, false), low, true},                 // 2^59 < 0.25 * 2^63
		{newSampler(0.25, false), high, false},               // by the trace id, as TraceIDRatioBased
		{newSampler(1, false), trace.SpanContext{}, true},    // a root, always
		{newSampler(0, true), trace.SpanContext{}, false},    // never
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := tc.s.sample(tc.parent); got != tc.want {
				t.Fatalf("sample = %v, want %v", got, tc.want)
			}
		})
	}
	// Roots at 1%: about 1 in 100.
	s, n := newSampler(0.01, true), 0
	for range 100000 {
		if s.sample(trace.SpanContext{}) {
			n++
		}
	}
	if n < 700 || n > 1300 {
		t.Fatalf("%d of 100000 roots sampled at 1%%", n)
	}
}
