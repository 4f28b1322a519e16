package autoscaler

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"tandem/internal/manifest"
)

// never is a lastActive offset meaning "no activity ever" (zero LastActive).
const never = time.Duration(math.MinInt64)

func serverless(maxN int) Params {
	return Params{
		Min: 0, Max: maxN, Target: 1, PanicThreshold: 2,
		StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second,
		ScaleToZero: true, IdleTimeout: 30 * time.Second,
	}
}

func dedicated(minN, maxN int) Params {
	p := serverless(maxN)
	p.Min, p.ScaleToZero = minN, false
	return p
}

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

func TestDecide(t *testing.T) {
	// A step is one tick of a stepped clock: what the controller saw at
	// t0+at, and what Decide must answer. State carries over between steps.
	type step struct {
		at               time.Duration
		stable, panic    float64
		ready, starting  int
		queued, inFlight int
		lastActive       time.Duration // offset from t0, or never
		want             int
		wantPanic        bool
		wantReason       string
		wantPanicSince   time.Duration // checked when wantPanic; offset from t0
	}
	tests := []struct {
		name  string
		p     Params
		steps []step
	}{
		{
			name: "stable scale-up",
			p:    dedicated(1, 10),
			steps: []step{
				{at: 0, stable: 1, panic: 1, ready: 1, inFlight: 1, want: 1, wantReason: ReasonStable},
				{at: sec(1), stable: 3.2, panic: 1.9, ready: 1, inFlight: 3, want: 4, wantReason: ReasonStable},
				{at: sec(2), stable: 3.2, panic: 3.5, ready: 2, starting: 2, inFlight: 3, want: 4, wantReason: ReasonStable},
				{at: sec(3), stable: 4, panic: 4, ready: 4, inFlight: 4, want: 4, wantReason: ReasonStable},
			},
		},
		{
			name: "scale-down after traffic falls",
			p:    dedicated(1, 10),
			steps: []step{
				{at: 0, stable: 4, panic: 4, ready: 4, inFlight: 4, want: 4, wantReason: ReasonStable},
				{at: sec(10), stable: 2.5, panic: 1, ready: 4, inFlight: 1, want: 3, wantReason: ReasonStable},
				{at: sec(20), stable: 1.5, panic: 1, ready: 3, inFlight: 1, want: 2, wantReason: ReasonStable},
				{at: sec(30), stable: 0.4, panic: 0, ready: 2, want: 1, wantReason: ReasonStable},
			},
		},
		{
			name: "float noise does not add an instance",
			p:    dedicated(1, 10),
			steps: []step{
				{at: 0, stable: 2.0000001, panic: 2, ready: 2, inFlight: 2, want: 2, wantReason: ReasonStable},
				{at: sec(1), stable: 2.01, panic: 2, ready: 2, inFlight: 2, want: 3, wantReason: ReasonStable},
			},
		},
		{
			name: "target above one",
			p:    func() Params { p := dedicated(1, 10); p.Target = 4; return p }(),
			steps: []step{
				{at: 0, stable: 9, panic: 9, ready: 3, inFlight: 9, want: 3, wantReason: ReasonStable},
				{at: sec(1), stable: 9, panic: 24, ready: 3, inFlight: 24, want: 6, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: sec(1)},
			},
		},
		{
			name: "panic on a burst, no scale-down while panicking, exit after the stable window",
			p:    serverless(100),
			steps: []step{
				{at: 0, stable: 1, panic: 1, ready: 1, inFlight: 1, lastActive: 0, want: 1, wantReason: ReasonStable},
				// 50 concurrent at size 1: 50/1 >= 2*1.
				{at: sec(1), stable: 1.8, panic: 50, ready: 1, inFlight: 1, queued: 49, lastActive: sec(1), want: 50, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: sec(1)},
				// Demand falls but panic holds the size: the peak decides.
				{at: sec(5), stable: 3, panic: 10, ready: 20, starting: 30, inFlight: 10, lastActive: sec(5), want: 50, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: sec(1)},
				// Current size above the peak is kept too.
				{at: sec(10), stable: 3, panic: 2, ready: 50, starting: 5, inFlight: 2, lastActive: sec(10), want: 55, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: sec(1)},
				// A second burst while panicking raises the peak but does not restart panic.
				{at: sec(20), stable: 5, panic: 120, ready: 50, inFlight: 50, queued: 70, lastActive: sec(20), want: 100, wantPanic: true, wantReason: ReasonMax, wantPanicSince: sec(1)},
				{at: sec(40), stable: 6, panic: 3, ready: 100, inFlight: 3, lastActive: sec(40), want: 100, wantPanic: true, wantReason: ReasonMax, wantPanicSince: sec(1)},
				// 59s after panic began: still panicking.
				{at: sec(60), stable: 6, panic: 3, ready: 100, inFlight: 3, lastActive: sec(60), want: 100, wantPanic: true, wantReason: ReasonMax, wantPanicSince: sec(1)},
				// A stable window after it began and under the threshold: stable decides.
				{at: sec(61), stable: 5.5, panic: 3, ready: 100, inFlight: 3, lastActive: sec(61), want: 6, wantReason: ReasonStable},
			},
		},
		{
			name: "panic lasts while still over the threshold",
			p:    dedicated(1, 10),
			steps: []step{
				{at: 0, stable: 1, panic: 8, ready: 1, inFlight: 8, want: 8, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: 0},
				{at: sec(70), stable: 8, panic: 30, ready: 8, inFlight: 30, want: 10, wantPanic: true, wantReason: ReasonMax, wantPanicSince: 0},
				{at: sec(71), stable: 8, panic: 8, ready: 10, inFlight: 8, want: 8, wantReason: ReasonStable},
			},
		},
		{
			name: "panic counts starting instances as current",
			p:    dedicated(1, 10),
			steps: []step{
				{at: 0, stable: 1, panic: 6, ready: 1, starting: 6, inFlight: 1, queued: 5, want: 7, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: 0},
			},
		},
		{
			name: "clamped to max 4 for 50 concurrent",
			p:    serverless(4),
			steps: []step{
				{at: 0, stable: 0.9, panic: 50, ready: 1, inFlight: 1, queued: 49, lastActive: 0, want: 4, wantPanic: true, wantReason: ReasonMax, wantPanicSince: 0},
				{at: sec(1), stable: 1.7, panic: 50, ready: 4, inFlight: 4, queued: 46, lastActive: sec(1), want: 4, wantPanic: true, wantReason: ReasonMax, wantPanicSince: 0},
				{at: sec(61), stable: 50, panic: 50, ready: 4, inFlight: 4, queued: 46, lastActive: sec(61), want: 4, wantPanic: true, wantReason: ReasonMax, wantPanicSince: 0},
			},
		},
		{
			name: "stable demand above max is clamped",
			p:    dedicated(1, 4),
			steps: []step{
				{at: 0, stable: 7, panic: 7, ready: 4, inFlight: 7, want: 4, wantReason: ReasonMax},
			},
		},
		{
			name: "idle timeout to zero and not before",
			p:    serverless(4),
			steps: []step{
				{at: 0, stable: 0.5, panic: 1, ready: 1, inFlight: 1, lastActive: 0, want: 1, wantReason: ReasonStable},
				{at: sec(10), stable: 0.2, panic: 0, ready: 1, lastActive: sec(1), want: 1, wantReason: ReasonStable},
				// The stable average is 0 but the idle timeout has not passed.
				{at: sec(30.9), stable: 0, panic: 0, ready: 1, lastActive: sec(1), want: 1, wantReason: ReasonKeepWarm},
				// The idle timeout wins over a stable average that is not 0 yet.
				{at: sec(31), stable: 0.01, panic: 0, ready: 1, lastActive: sec(1), want: 0, wantReason: ReasonIdle},
				// Draining: still idle, still 0.
				{at: sec(32), stable: 0.01, panic: 0, ready: 1, lastActive: sec(1), want: 0, wantReason: ReasonIdle},
				// At zero, the leftover average starts nothing.
				{at: sec(40), stable: 0.01, panic: 0, lastActive: sec(1), want: 0, wantReason: ReasonIdle},
			},
		},
		{
			name: "requests in flight hold off the idle timeout",
			p:    serverless(4),
			steps: []step{
				// LastActive is stale but a request is in flight.
				{at: sec(100), stable: 0, panic: 0, ready: 1, inFlight: 1, lastActive: sec(1), want: 1, wantReason: ReasonKeepWarm},
			},
		},
		{
			name: "idle timeout ends a panic",
			p:    serverless(10),
			steps: []step{
				{at: 0, stable: 0.5, panic: 8, ready: 1, inFlight: 8, lastActive: 0, want: 8, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: 0},
				{at: sec(20), stable: 0.6, panic: 0, ready: 8, lastActive: sec(2), want: 8, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: 0},
				{at: sec(32), stable: 0.6, panic: 0, ready: 8, lastActive: sec(2), want: 0, wantReason: ReasonIdle},
			},
		},
		{
			name: "no instances and no demand stays at zero",
			p:    serverless(4),
			steps: []step{
				{at: 0, lastActive: never, want: 0, wantReason: ReasonIdle},
				// An instance that crashed left an average and a recent LastActive behind.
				{at: sec(10), stable: 0.4, panic: 0.2, lastActive: sec(9), want: 0, wantReason: ReasonNoDemand},
			},
		},
		{
			name: "queued request wakes from zero",
			p:    serverless(4),
			steps: []step{
				{at: 0, lastActive: never, want: 0, wantReason: ReasonIdle},
				// The windows have not seen the request yet.
				{at: sec(1), queued: 1, lastActive: sec(1), want: 1, wantReason: ReasonQueued},
				{at: sec(2), stable: 0.02, panic: 0.2, starting: 1, queued: 1, lastActive: sec(2), want: 1, wantReason: ReasonStable},
				{at: sec(3), stable: 0.03, panic: 0.3, ready: 1, inFlight: 1, lastActive: sec(3), want: 1, wantReason: ReasonStable},
			},
		},
		{
			name: "two queued at zero panic up to two",
			p:    serverless(4),
			steps: []step{
				{at: 0, stable: 0.1, panic: 2, queued: 2, lastActive: 0, want: 2, wantPanic: true, wantReason: ReasonPanic, wantPanicSince: 0},
			},
		},
		{
			name: "dedicated never below min",
			p:    dedicated(2, 4),
			steps: []step{
				{at: 0, stable: 0, panic: 0, ready: 2, lastActive: never, want: 2, wantReason: ReasonMin},
				{at: sec(3600), stable: 0, panic: 0, ready: 2, lastActive: never, want: 2, wantReason: ReasonMin},
				{at: sec(3601), stable: 0, panic: 0, lastActive: never, want: 2, wantReason: ReasonMin},
				{at: sec(3602), stable: 3, panic: 3, ready: 2, inFlight: 3, want: 3, wantReason: ReasonStable},
			},
		},
		{
			name: "a minimum of one keeps one warm",
			p:    dedicated(1, 4),
			steps: []step{
				{at: sec(100), lastActive: 0, ready: 1, want: 1, wantReason: ReasonMin},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s State
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				m := Metrics{
					StableConcurrency: st.stable,
					PanicConcurrency:  st.panic,
					Ready:             st.ready,
					Starting:          st.starting,
					Queued:            st.queued,
					InFlight:          st.inFlight,
				}
				if st.lastActive != never {
					m.LastActive = t0.Add(st.lastActive)
				}
				var d Decision
				d, s = Decide(tt.p, s, m, now)
				if d.Desired != st.want || d.Panic != st.wantPanic || d.Reason != st.wantReason {
					t.Fatalf("step %d (t0+%v): got %d panic=%v reason=%q (%s), want %d panic=%v reason=%q",
						i, st.at, d.Desired, d.Panic, d.Reason, d, st.want, st.wantPanic, st.wantReason)
				}
				switch {
				case st.wantPanic && !s.PanicSince.Equal(t0.Add(st.wantPanicSince)):
					t.Fatalf("step %d: PanicSince = t0+%v, want t0+%v", i, s.PanicSince.Sub(t0), st.wantPanicSince)
				case st.wantPanic && s.PanicPeak < d.Desired:
					t.Fatalf("step %d: PanicPeak = %d, below the size %d asked for", i, s.PanicPeak, d.Desired)
				case !st.wantPanic && s != (State{}):
					t.Fatalf("step %d: not panicking but State = %+v, want zero", i, s)
				}
			}
		})
	}
}

func TestDecide_panicPeakTracksTheMax(t *testing.T) {
	p := dedicated(1, 100)
	var s State
	var peaks []int
	for i, panic := range []float64{10, 30, 5, 20} {
		m := Metrics{StableConcurrency: 1, PanicConcurrency: panic, Ready: 1}
		_, s = Decide(p, s, m, t0.Add(time.Duration(i)*time.Second))
		peaks = append(peaks, s.PanicPeak)
	}
	want := []int{10, 30, 30, 30}
	for i := range want {
		if peaks[i] != want[i] {
			t.Fatalf("PanicPeak after each step = %v, want %v", peaks, want)
		}
	}
}

// TestDecide_desiredWithinBounds is a property test: for random inputs,
// including nonsense ones, the size is within [Min, Max], a panic never
// scales down, and a queued request always gets an instance.
func TestDecide_desiredWithinBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 42))
	floats := func() float64 {
		switch rng.IntN(10) {
		case 0:
			return 0
		case 1:
			return math.NaN()
		case 2:
			return -rng.Float64() * 10
		case 3:
			return rng.Float64() * 1e12
		case 4:
			return math.Inf(1)
		case 5:
			return float64(rng.IntN(10)) // whole numbers
		default:
			return rng.Float64() * 100
		}
	}
	durations := func() time.Duration { return time.Duration(rng.Int64N(int64(2 * time.Minute))) }
	for range 2000 {
		minN := rng.IntN(5)
		p := Params{
			Min:            minN,
			Max:            minN + rng.IntN(20),
			Target:         floats(),
			PanicThreshold: floats(),
			StableWindow:   durations(),
			PanicWindow:    durations(),
			IdleTimeout:    durations(),
		}
		p.ScaleToZero = p.Min == 0 && rng.IntN(2) == 0
		var s State
		now := t0
		for range 50 {
			now = now.Add(time.Duration(rng.Int64N(int64(10 * time.Second))))
			m := Metrics{
				StableConcurrency: floats(),
				PanicConcurrency:  floats(),
				Ready:             rng.IntN(30) - 2,
				Starting:          rng.IntN(10) - 1,
				Queued:            rng.IntN(4) * rng.IntN(2),
				InFlight:          rng.IntN(4) * rng.IntN(2),
				LastActive:        now.Add(-durations()),
			}
			if rng.IntN(10) == 0 {
				m.LastActive = time.Time{}
			}
			var d Decision
			d, s = Decide(p, s, m, now)
			if d.Desired < p.Min || (p.Max > 0 && d.Desired > p.Max) {
				t.Fatalf("Decide(%+v, %+v) = %+v: outside [%d, %d]", p, m, d, p.Min, p.Max)
			}
			current := max(0, m.Ready) + max(0, m.Starting)
			if d.Panic && d.Desired < min(p.Max, current) {
				t.Fatalf("Decide(%+v, %+v) = %+v: scaled down below %d while panicking", p, m, d, current)
			}
			if m.Queued > 0 && d.Desired < 1 {
				t.Fatalf("Decide(%+v, %+v) = %+v: a queued request got no instance", p, m, d)
			}
			if d.Reason == "" {
				t.Fatalf("Decide(%+v, %+v) = %+v: no reason", p, m, d)
			}
		}
	}
}

func TestDecide_allocs(t *testing.T) {
	p := serverless(4)
	var s State
	now := t0
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		i++
		m := Metrics{StableConcurrency: float64(i % 7), PanicConcurrency: float64(i % 13), Ready: i % 5, LastActive: t0}
		_, s = Decide(p, s, m, now)
	})
	if allocs != 0 {
		t.Fatalf("Decide allocates %v times per call, want 0", allocs)
	}
}

// TestDecide_withWindow runs Decide the way the controller will: a Window
// fed on each tick of a stepped clock, averages into Metrics, the State
// carried over. A burst of 50 concurrent requests against max 4 must reach
// 4 and never more, and the deployment must go back to 0 once the idle
// timeout has passed after the burst, not before.
func TestDecide_withWindow(t *testing.T) {
	p := serverless(4)
	p.StableWindow, p.PanicWindow, p.IdleTimeout = 6*time.Second, 600*time.Millisecond, 3*time.Second
	const tick = 100 * time.Millisecond
	w := NewWindow(tick, p.StableWindow)
	var (
		s          State
		size       int
		lastActive time.Time
		maxSize    int
		zeroAt     time.Duration = -1
	)
	burstEnd := 5 * time.Second
	for now := t0; now.Sub(t0) <= 20*time.Second; now = now.Add(tick) {
		concurrency := 0
		if el := now.Sub(t0); el > 0 && el <= burstEnd {
			concurrency = 50
		}
		if concurrency > 0 {
			lastActive = now
		}
		w.Record(now, tick, float64(concurrency))
		inFlight := min(concurrency, size*int(p.Target))
		m := Metrics{
			StableConcurrency: w.Average(now, p.StableWindow),
			PanicConcurrency:  w.Average(now, p.PanicWindow),
			Ready:             size, // instances start at once here
			InFlight:          inFlight,
			Queued:            concurrency - inFlight,
			LastActive:        lastActive,
		}
		var d Decision
		d, s = Decide(p, s, m, now)
		size = d.Desired
		maxSize = max(maxSize, size)
		el := now.Sub(t0)
		if el > 0 && el <= burstEnd && size != 4 {
			t.Fatalf("t0+%v: size %d during the burst (%s), want 4", el, size, d)
		}
		if el > burstEnd && el < burstEnd+p.IdleTimeout && size == 0 {
			t.Fatalf("t0+%v: size 0 before the idle timeout (%s)", el, d)
		}
		if size == 0 && zeroAt < 0 && el > burstEnd {
			zeroAt = el
		}
		if zeroAt >= 0 && size != 0 {
			t.Fatalf("t0+%v: size %d after going to zero at t0+%v (%s)", el, size, zeroAt, d)
		}
	}
	if maxSize != 4 {
		t.Fatalf("largest size %d, want 4", maxSize)
	}
	if want := burstEnd + p.IdleTimeout; zeroAt != want {
		t.Fatalf("went to zero at t0+%v, want t0+%v", zeroAt, want)
	}
}

func TestParamsFrom(t *testing.T) {
	tests := []struct {
		name string
		m    manifest.Manifest
		want Params
	}{
		{
			name: "serverless defaults",
			m:    manifest.Manifest{Name: "iris", Mode: manifest.Serverless},
			want: Params{
				Min: 0, Max: manifest.DefaultMax, Target: manifest.DefaultTargetConcurrency,
				PanicThreshold: manifest.DefaultPanicThreshold,
				StableWindow:   manifest.DefaultStableWindow, PanicWindow: manifest.DefaultPanicWindow,
				ScaleToZero: true, IdleTimeout: manifest.DefaultIdleTimeout,
			},
		},
		{
			name: "dedicated defaults",
			m:    manifest.Manifest{Name: "iris", Mode: manifest.Dedicated},
			want: Params{
				Min: 1, Max: manifest.DefaultMax, Target: manifest.DefaultTargetConcurrency,
				PanicThreshold: manifest.DefaultPanicThreshold,
				StableWindow:   manifest.DefaultStableWindow, PanicWindow: manifest.DefaultPanicWindow,
				ScaleToZero: false, IdleTimeout: manifest.DefaultIdleTimeout,
			},
		},
		{
			name: "serverless with a minimum does not scale to zero",
			m: manifest.Manifest{Name: "iris", Mode: manifest.Serverless, Scaling: manifest.Scaling{
				Min: func() *int { n := 2; return &n }(), Max: 8, TargetConcurrency: 3,
				StableWindow: manifest.Duration(10 * time.Second), IdleTimeout: manifest.Duration(5 * time.Second),
			}},
			want: Params{
				Min: 2, Max: 8, Target: 3, PanicThreshold: manifest.DefaultPanicThreshold,
				StableWindow: 10 * time.Second, PanicWindow: manifest.DefaultPanicWindow,
				ScaleToZero: false, IdleTimeout: 5 * time.Second,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m
			m.SetDefaults()
			if got := ParamsFrom(&m); got != tt.want {
				t.Fatalf("ParamsFrom = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecision_String(t *testing.T) {
	tests := []struct {
		d    Decision
		want string
	}{
		{Decision{Desired: 4, Reason: ReasonStable, Observed: 3.2, Target: 1, Wanted: 4}, "stable 3.2/1 -> 4"},
		{Decision{Desired: 50, Panic: true, Reason: ReasonPanic, Observed: 50, Target: 1, Wanted: 50}, "panic 50.0/1 -> 50"},
		{Decision{Desired: 0, Reason: ReasonIdle, Idle: 31 * time.Second}, "idle 31s -> 0"},
		{Decision{Desired: 4, Panic: true, Reason: ReasonMax, Wanted: 50}, "clamped to max 4 (wanted 50)"},
		{Decision{Desired: 1, Reason: ReasonKeepWarm, Idle: 12 * time.Second}, "not idle yet (12s) -> 1"},
		{Decision{Desired: 1, Reason: ReasonQueued}, "queued -> 1"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.d.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	p := serverless(4)
	var s State
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		i++
		m := Metrics{StableConcurrency: float64(i % 7), PanicConcurrency: float64(i % 13), Ready: i % 5, LastActive: t0}
		_, s = Decide(p, s, m, now)
	}
}

// With nothing ready, a queue longer than threshold x target sizes the
// wake-up, whatever is already starting (a bound that moved with what is
// starting made the decision flap: start 3, retire 2, start 2, ...); a
// shorter queue waits for one instance.
func TestDecide_QueueSizesWakeUp(t *testing.T) {
	p := Params{Max: 3, Target: 1, PanicThreshold: 2, StableWindow: time.Minute, PanicWindow: 6 * time.Second, ScaleToZero: true, IdleTimeout: time.Minute}
	now := time.Unix(1000, 0)
	for _, tc := range []struct{ queued, starting, want int }{
		{1, 0, 1}, {2, 0, 1}, {2, 1, 1}, {3, 0, 3}, {3, 1, 3}, {3, 3, 3}, {30, 0, 3}, {30, 3, 3},
	} {
		d, _ := Decide(p, State{}, Metrics{Queued: tc.queued, Starting: tc.starting, LastActive: now}, now)
		if d.Desired != tc.want {
			t.Errorf("queued %d, starting %d: desired %d (%s), want %d", tc.queued, tc.starting, d.Desired, d, tc.want)
		}
	}
}
