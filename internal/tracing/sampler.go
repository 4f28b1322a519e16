package tracing

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// sampler decides, before any span exists, whether a request is traced, so
// that a request that is not costs no span, context or allocation: it goes
// through as if tracing were off, the caller's traceparent (if any) passed
// on untouched. The SDK then samples every span it is asked for.
type sampler struct {
	parentBased bool   // a caller's sampled flag decides for it
	bound       uint64 // traced when a 63-bit draw is below: ratio * 2^63
	all         bool   // ratio 1
}

func newSampler(ratio float64, parentBased bool) sampler {
	s := sampler{parentBased: parentBased, all: ratio >= 1}
	if !s.all {
		s.bound = uint64(ratio * math.Exp2(63))
	}
	return s
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG as
// the specification says; unset is parentbased_always_on.
func samplerFromEnv() (sampler, error) {
	name := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: want a fraction from 0 to 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return newSampler(1, true), nil
	case "always_on":
		return newSampler(1, false), nil
	case "always_off":
		return newSampler(0, false), nil
	case "parentbased_always_off":
		return newSampler(0, true), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		return newSampler(r, name == "parentbased_traceidratio"), err
	}
	return sampler{}, fmt.Errorf("OTEL_TRACES_SAMPLER %q: tandem takes always_on, always_off, traceidratio and their parentbased_ forms", name)
}

// sample decides for a request whose caller sent parent (invalid: none).
// A caller's trace is decided by its trace id, as the SDK's TraceIDRatioBased
// does, so that every service of a trace that samples by ratio agrees.
func (s sampler) sample(parent trace.SpanContext) bool {
	if parent.IsValid() && s.parentBased {
		return parent.IsSampled()
	}
	if s.all {
		return true
	}
	if s.bound == 0 {
		return false
	}
	var x uint64
	if parent.IsValid() {
		tid := parent.TraceID()
		x = binary.BigEndian.Uint64(tid[8:16]) >> 1
	} else {
		x = rand.Uint64() >> 1
	}
	return x < s.bound
}
