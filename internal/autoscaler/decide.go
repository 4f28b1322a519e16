package autoscaler

import (
	"fmt"
	"math"
	"time"

	"tandem/internal/manifest"
)

// Params are a deployment's scaling settings (from manifest.Scaling, defaults set).
type Params struct {
	Min, Max       int
	Target         float64       // target in-flight requests per instance (>0)
	PanicThreshold float64       // e.g. 2.0: panic when panic-window demand >= 2x current ready size
	StableWindow   time.Duration // e.g. 60s
	PanicWindow    time.Duration // e.g. 6s
	ScaleToZero    bool          // serverless with Min == 0
	IdleTimeout    time.Duration // serverless: go to 0 after this long with no traffic
	// Hybrid keeps the instances above Min (the burst tier) until there
	// has been no overflow beyond the floor for IdleTimeout.
	Hybrid bool
}

// ParamsFrom returns the scaling parameters of m, whose defaults must already
// be set (manifest.SetDefaults). ScaleToZero is on for a serverless
// deployment whose minimum is 0.
func ParamsFrom(m *manifest.Manifest) Params {
	s := m.Scaling
	minimum := s.MinInstances()
	return Params{
		Min:            minimum,
		Max:            s.Max,
		Target:         s.TargetConcurrency,
		PanicThreshold: s.PanicThreshold,
		StableWindow:   s.StableWindow.D(),
		PanicWindow:    s.PanicWindow.D(),
		ScaleToZero:    m.Mode == manifest.Serverless && minimum == 0,
		IdleTimeout:    s.IdleTimeout.D(),
		Hybrid:         m.Mode == manifest.Hybrid,
	}
}

// ParamsOn is ParamsFrom for a deployment on the named backend: a program
// on a fixed port (runtime.port) runs once per machine on processes, so
// there it scales between 0 and 1. The controller and the simulator of
// `tandem recommend` both use it, so they decide alike.
func ParamsOn(m *manifest.Manifest, backendName string) Params {
	p := ParamsFrom(m)
	if m.Runtime.Port != 0 && backendName == manifest.BackendProcess {
		p.Max = 1
		p.Min = min(p.Min, 1)
	}
	return p
}

// WindowBucket is the bucket a deployment's Window uses: a quarter of the
// panic window, between 10ms and 1s.
func WindowBucket(m *manifest.Manifest) time.Duration {
	b := min(time.Second, m.Scaling.PanicWindow.D()/4)
	return max(b, 10*time.Millisecond)
}

// Metrics is what the controller observed, at `now`.
type Metrics struct {
	StableConcurrency float64   // average concurrency (in flight + queued) over the stable window
	PanicConcurrency  float64   // same over the panic window
	Ready             int       // ready instances
	Starting          int       // instances started but not ready yet
	Queued            int       // requests waiting for an instance right now
	InFlight          int       // requests being served right now
	LastActive        time.Time // last moment concurrency (in flight + queued) was > 0
}

// State is carried from one decision to the next by the caller (zero value to start).
type State struct {
	// PanicSince is when panic mode began; zero when not panicking.
	PanicSince time.Time
	// PanicPeak is the largest size (before clamping) asked for during
	// the current panic; 0 when not panicking.
	PanicPeak int
	// Overflow is the last time a hybrid deployment's demand was above
	// what its floor takes (Min x target); zero when never.
	Overflow time.Time
}

// Reasons say which rule decided a Decision. They are constants so that
// Decide does not allocate; Decision.String adds the numbers.
const (
	ReasonStable   = "stable"         // ceil(stable concurrency / target)
	ReasonPanic    = "panic"          // max(ceil(panic concurrency / target), peak, current)
	ReasonQueued   = "queued"         // requests wait with nothing ready: ceil(waiting / target), at least one
	ReasonIdle     = "idle"           // serverless, no traffic for the idle timeout
	ReasonNoDemand = "no demand"      // serverless, no instances and nothing waiting
	ReasonKeepWarm = "not idle yet"   // serverless, keeps one until the idle timeout
	ReasonMin      = "clamped to min" // raised to Params.Min
	ReasonBurst    = "burst kept"     // hybrid: burst instances stay until IdleTimeout without overflow
	ReasonMax      = "clamped to max" // lowered to Params.Max
)

// Decision is what Decide wants the deployment's size to be.
type Decision struct {
	Desired int
	Panic   bool
	Reason  string // short, for status and debug logs: one of the Reason constants; String gives the numbers

	// Wanted is the size before clamping to [Min, Max].
	Wanted int
	// Observed is the concurrency that decided the size: the stable or
	// panic average.
	Observed float64
	// Target is the target concurrency per instance that was used.
	Target float64
	// Idle is how long the deployment had been without traffic, set for
	// ReasonIdle and ReasonKeepWarm.
	Idle time.Duration
}

// String formats d for status and debug logs, for example
// "stable 3.2/1 -> 4", "panic 50.0/1 -> 50", "idle 31s -> 0" or
// "clamped to max 4 (wanted 50)". It allocates; Decide does not call it.
func (d Decision) String() string {
	switch d.Reason {
	case ReasonStable, ReasonPanic:
		return fmt.Sprintf("%s %.1f/%g -> %d", d.Reason, d.Observed, d.Target, d.Desired)
	case ReasonIdle:
		return fmt.Sprintf("idle %s -> 0", d.Idle.Round(time.Second))
	case ReasonKeepWarm:
		return fmt.Sprintf("not idle yet (%s) -> %d", d.Idle.Round(time.Second), d.Desired)
	case ReasonBurst:
		return fmt.Sprintf("burst kept (no overflow for %s) -> %d", d.Idle.Round(time.Second), d.Desired)
	case ReasonMin, ReasonMax:
		return fmt.Sprintf("%s %d (wanted %d)", d.Reason, d.Desired, d.Wanted)
	default:
		return fmt.Sprintf("%s -> %d", d.Reason, d.Desired)
	}
}

const (
	// defaultTarget and defaultPanicThreshold stand in for values that are
	// not positive, so that hand-built Params cannot divide by zero or
	// panic on every tick.
	defaultTarget         = manifest.DefaultTargetConcurrency
	defaultPanicThreshold = manifest.DefaultPanicThreshold
	// maxWanted bounds a size computed from a float, so that absurd inputs
	// cannot overflow int.
	maxWanted = math.MaxInt32
	// ceilSlack absorbs float noise: 2.0000001 requests per target is 2
	// instances, not 3.
	ceilSlack = 1e-6
)

// Decide returns the size a deployment should have at now, given its
// parameters, the metrics observed at now and the state returned by the
// previous call (the zero State for the first call). It is a pure
// function: it does not block, allocate or read a clock, and is safe to
// call from any goroutine.
//
// The rules, in order: the stable window decides (ceil(stable/target)),
// unless panic mode is on, where the size never goes down; a queued
// request means at least one instance; for scale-to-zero deployments,
// an idle timeout with nothing in flight or queued means zero, an empty
// deployment with no demand stays at zero, and one with instances keeps
// at least one until the idle timeout; last, the size is clamped to
// [Min, Max] (Max wins if Max < Min; Max <= 0 means no upper bound).
func Decide(p Params, s State, m Metrics, now time.Time) (Decision, State) {
	target := p.Target
	if !(target > 0) {
		target = defaultTarget
	}
	threshold := p.PanicThreshold
	if !(threshold > 0) {
		threshold = defaultPanicThreshold
	}
	current := max(0, m.Ready) + max(0, m.Starting)
	readyForRatio := max(1, m.Ready)
	over := m.PanicConcurrency/float64(readyForRatio) >= threshold*target*(1-ceilSlack)

	switch {
	case over && s.PanicSince.IsZero():
		s.PanicSince = now
	case !over && !s.PanicSince.IsZero() && now.Sub(s.PanicSince) >= p.StableWindow:
		s = State{Overflow: s.Overflow}
	}

	d := Decision{Target: target}
	if !s.PanicSince.IsZero() {
		want := max(wantFor(m.PanicConcurrency, target), s.PanicPeak, current)
		s.PanicPeak = want
		d.Desired, d.Panic, d.Reason, d.Observed = want, true, ReasonPanic, m.PanicConcurrency
	} else {
		d.Desired, d.Reason, d.Observed = wantFor(m.StableConcurrency, target), ReasonStable, m.StableConcurrency
	}

	if m.Queued > 0 && d.Desired < 1 {
		d.Desired, d.Reason = 1, ReasonQueued
	}
	// Nothing ready: every request waits, and the windows, full of the
	// quiet before, cannot see a burst yet. A queue longer than one
	// instance takes without panicking (threshold x target) sizes the
	// wake-up: 30 queued at target 1 start 30 instances at once (up to
	// Max), instead of one now and the rest a tick or two later. A
	// shorter one waits for the instance on its way: it takes the second
	// request of sporadic traffic as well, and a second start would only
	// cost. (The bound must not depend on what is starting: a decision
	// that changes its own input flaps, starting and retiring by turns.)
	if m.Ready == 0 && float64(m.Queued) > threshold*target {
		if want := wantFor(float64(m.Queued+m.InFlight), target); want > d.Desired {
			d.Desired, d.Reason = want, ReasonQueued
		}
	}

	if p.ScaleToZero {
		demand := m.InFlight > 0 || m.Queued > 0
		idle := now.Sub(m.LastActive) // a zero LastActive reads as idle for ever
		switch {
		case !demand && idle >= p.IdleTimeout:
			// No traffic for the idle timeout ends even a panic: panic
			// guards against scaling down on a noisy signal, and there
			// is no signal left.
			d.Desired, d.Panic, d.Reason, d.Idle = 0, false, ReasonIdle, idle
			s = State{}
		case !demand && current == 0:
			// The stable average of traffic that is over would otherwise
			// start an instance nobody asked for.
			d.Desired, d.Panic, d.Reason = 0, false, ReasonNoDemand
			s = State{}
		case current > 0 && d.Desired < 1:
			d.Desired, d.Reason, d.Idle = 1, ReasonKeepWarm, idle
		}
	}

	if p.Hybrid {
		// The burst tier stops after IdleTimeout without overflow, not as
		// soon as the stable average says so: a burst that pauses for a
		// breath must not pay a second cold start.
		floor := float64(max(p.Min, 0)) * target
		if float64(m.InFlight+m.Queued) > floor*(1+ceilSlack) || m.PanicConcurrency > floor*(1+ceilSlack) {
			s.Overflow = now
		}
		if quiet := now.Sub(s.Overflow); d.Desired < current && current > p.Min && !s.Overflow.IsZero() && quiet < p.IdleTimeout {
			d.Desired, d.Reason, d.Idle = current, ReasonBurst, quiet
		}
	}

	d.Wanted = d.Desired
	if d.Desired < p.Min {
		d.Desired, d.Reason = p.Min, ReasonMin
	}
	if p.Max > 0 && d.Desired > p.Max {
		d.Desired, d.Reason = p.Max, ReasonMax
	}
	return d, s
}

// wantFor returns ceil(concurrency/target), reading NaN and negative
// concurrency as 0 and ignoring float noise just above a whole number.
func wantFor(concurrency, target float64) int {
	if !(concurrency > 0) {
		return 0
	}
	r := concurrency / target
	if !(r < maxWanted) { // also catches +Inf
		return maxWanted
	}
	return int(math.Ceil(r - ceilSlack))
}
