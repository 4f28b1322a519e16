package autoscaler

import (
	"testing"
	"time"
)

// A hybrid deployment keeps its floor always and its burst instances until
// IdleTimeout has passed without demand above the floor.
func TestDecide_HybridKeepsBurstUntilIdle(t *testing.T) {
	p := Params{Min: 1, Max: 3, Target: 1, PanicThreshold: 2, StableWindow: 10 * time.Second, PanicWindow: 2 * time.Second,
		IdleTimeout: 5 * time.Second, Hybrid: true}
	t0 := time.Unix(1000, 0)
	var s State
	var d Decision
	step := func(at time.Duration, m Metrics) Decision {
		d, s = Decide(p, s, m, t0.Add(at))
		return d
	}
	// At rest: the floor.
	if d := step(0, Metrics{Ready: 1}); d.Desired != 1 {
		t.Fatalf("at rest: %v, want 1", d)
	}
	// A burst of 3 in flight: 3.
	if d := step(time.Second, Metrics{Ready: 1, InFlight: 3, StableConcurrency: 3, PanicConcurrency: 1.9}); d.Desired != 3 {
		t.Fatalf("burst: %v, want 3", d)
	}
	// Demand falls to what the floor takes (1 in flight): the stable
	// average says 1, but the burst tier stays until 5s without overflow.
	for _, at := range []time.Duration{2 * time.Second, 4 * time.Second, 5500 * time.Millisecond} {
		if d := step(at, Metrics{Ready: 3, InFlight: 1, StableConcurrency: 1, PanicConcurrency: 1}); d.Desired != 3 || d.Reason != ReasonBurst {
			t.Fatalf("%s after the burst: %v, want 3 (burst kept)", at, d)
		}
	}
	// 5s after the last overflow (at 1s): back to the floor, never 0.
	if d := step(6*time.Second, Metrics{Ready: 3, StableConcurrency: 0.5, PanicConcurrency: 0.2}); d.Desired != 1 {
		t.Fatalf("after idle_timeout: %v, want 1", d)
	}
	if d := step(time.Hour, Metrics{Ready: 1}); d.Desired != 1 {
		t.Fatalf("an hour idle: %v, want the floor of 1", d)
	}
	// Without Hybrid the same inputs scale down at once.
	p.Hybrid, s = false, State{}
	step(time.Second, Metrics{Ready: 1, InFlight: 3, StableConcurrency: 3, PanicConcurrency: 1.9})
	if d := step(2*time.Second, Metrics{Ready: 3, InFlight: 1, StableConcurrency: 1, PanicConcurrency: 1}); d.Desired != 1 {
		t.Fatalf("dedicated after the burst: %v, want 1", d)
	}
}
