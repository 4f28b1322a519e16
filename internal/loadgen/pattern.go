// Package loadgen generates traffic: the arrival schedules of tandem's
// load patterns (as traces, so that `tandem recommend` can simulate the
// very requests `tandem bench` sent) and an open-loop runner that sends
// each request at its scheduled time whether or not earlier ones have
// returned, so that slow responses cannot hide latency.
package loadgen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"tandem/internal/trace"
)

// Pattern names a shape of traffic.
type Pattern string

// The patterns. Each averages Spec.Rate requests a second over
// Spec.Duration, except Steps, which climbs to it.
const (
	// Constant sends evenly spaced requests at Rate.
	Constant Pattern = "constant"
	// Steps climbs in four equal steps: Rate/4, Rate/2, 3·Rate/4, Rate.
	Steps Pattern = "steps"
	// Burst packs each quarter's traffic into its first tenth: bursts at
	// ten times Rate separated by silence.
	Burst Pattern = "burst"
	// Sporadic is Poisson arrivals at Rate: at low rates, long idle gaps
	// that a serverless deployment scales to zero in.
	Sporadic Pattern = "sporadic"
	// Sine is a day compressed into Duration: Poisson arrivals whose rate
	// follows Rate·(1 - cos(2πt/Duration)), from zero at night to twice
	// Rate at noon.
	Sine Pattern = "sine"
	// Trace replays a trace file.
	Trace Pattern = "trace"
)

// Patterns lists the generated patterns (Trace aside).
var Patterns = []Pattern{Constant, Steps, Burst, Sporadic, Sine}

// ErrPattern is matched by errors.Is for an unknown pattern or a spec
// that cannot generate one.
var ErrPattern = errors.New("invalid load pattern")

// MaxRequests bounds a generated schedule (about 40 MB of trace).
const MaxRequests = 50_000_000

// Spec says what to generate.
type Spec struct {
	Pattern  Pattern
	Rate     float64 // requests a second, on average
	Duration time.Duration
	// Seed makes the random patterns (Sporadic, Sine) repeatable.
	Seed uint64
}

func (s Spec) String() string {
	return fmt.Sprintf("%s %g/s for %s (seed %d)", s.Pattern, s.Rate, s.Duration, s.Seed)
}

// ParsePattern reads a pattern name.
func ParsePattern(s string) (Pattern, error) {
	p := Pattern(strings.ToLower(strings.TrimSpace(s)))
	if p == Trace {
		return p, nil
	}
	for _, q := range Patterns {
		if p == q {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q (use constant, steps, burst, sporadic, sine or trace)", ErrPattern, s)
}

// Generate returns the arrivals of s as a trace with no paths or payloads
// (the caller's defaults apply). The same Spec always gives the same trace.
func Generate(s Spec) (*trace.Trace, error) {
	if !(s.Rate > 0) || math.IsInf(s.Rate, 0) {
		return nil, fmt.Errorf("%w: rate %v must be a positive number of requests a second", ErrPattern, s.Rate)
	}
	if s.Duration <= 0 {
		return nil, fmt.Errorf("%w: duration %v must be positive", ErrPattern, s.Duration)
	}
	if n := s.Rate * s.Duration.Seconds(); n > MaxRequests {
		return nil, fmt.Errorf("%w: %.0f requests is more than %d", ErrPattern, n, MaxRequests)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x7a6e64656d)) // "tandem"
	var at []time.Duration
	d := s.Duration
	switch s.Pattern {
	case Constant:
		at = even(at, 0, d, s.Rate)
	case Steps:
		for k := 0; k < 4; k++ {
			from, to := d*time.Duration(k)/4, d*time.Duration(k+1)/4
			at = even(at, from, to, s.Rate*float64(k+1)/4)
		}
	case Burst:
		for k := 0; k < 4; k++ {
			from := d * time.Duration(k) / 4
			period := d*time.Duration(k+1)/4 - from
			n := int(math.Round(s.Rate * period.Seconds()))
			if n == 0 {
				continue
			}
			burst := period / 10
			for i := 0; i < n; i++ {
				at = append(at, from+time.Duration(float64(burst)*float64(i)/float64(n)))
			}
		}
	case Sporadic:
		for t := rng.ExpFloat64() / s.Rate; t < d.Seconds(); t += rng.ExpFloat64() / s.Rate {
			at = append(at, seconds(t))
		}
	case Sine:
		// Thinning: candidates at the peak rate, each kept with
		// probability rate(t)/peak.
		peak := 2 * s.Rate
		w := 2 * math.Pi / d.Seconds()
		for t := rng.ExpFloat64() / peak; t < d.Seconds(); t += rng.ExpFloat64() / peak {
			if rng.Float64()*peak < s.Rate*(1-math.Cos(w*t)) {
				at = append(at, seconds(t))
			}
		}
	default:
		return nil, fmt.Errorf("%w: %q cannot be generated", ErrPattern, s.Pattern)
	}
	tr := &trace.Trace{Requests: make([]trace.Request, len(at))}
	for i, a := range at {
		tr.Requests[i].At = a
	}
	return tr, nil
}

// even appends evenly spaced arrivals at rate over [from, to).
func even(at []time.Duration, from, to time.Duration, rate float64) []time.Duration {
	n := int(math.Round(rate * (to - from).Seconds()))
	for i := 0; i < n; i++ {
		at = append(at, from+seconds(float64(i)/rate))
	}
	return at
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }
