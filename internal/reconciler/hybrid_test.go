package reconciler

import (
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// floors returns the instances the core holds in the floor tier, and in
// the burst tier, among those starting or ready.
func floors(w *world) (floor, burst []string) {
	for _, in := range w.core.View().Instances {
		if in.Phase != PhaseReady && in.Phase != PhaseStarting {
			continue
		}
		if in.Floor {
			floor = append(floor, in.ID)
		} else {
			burst = append(burst, in.ID)
		}
	}
	return
}

// Hybrid min 1, max 3: the floor is one instance, always; a burst adds
// burst-tier instances, which are the ones retired after idle_timeout;
// a crash of the floor instance promotes a burst one at once.
func TestCore_HybridFloorAndBurst(t *testing.T) {
	m := testManifest(t, manifest.Hybrid, func(m *manifest.Manifest) {
		one := 1
		m.Scaling.Min, m.Scaling.Max = &one, 3
		m.Scaling.IdleTimeout = manifest.Duration(5 * time.Second)
		m.Scaling.StableWindow = manifest.Duration(6 * time.Second)
		m.Scaling.PanicWindow = manifest.Duration(2 * time.Second)
	})
	w := newWorld(t, Instances, m, nil)
	w.advance(2 * time.Second)
	if f, b := floors(w); len(f) != 1 || len(b) != 0 || w.ready() != 1 {
		t.Fatalf("at rest: floor %v burst %v ready %d, want one floor instance", f, b, w.ready())
	}
	floorID := ""
	for _, e := range w.effects {
		if s, ok := e.(StartInstance); ok && s.Floor {
			floorID = s.ID
		}
		if a, ok := e.(AddToPool); ok && a.ID == floorID && !a.Floor {
			t.Fatalf("the floor instance entered the pool as burst: %+v", a)
		}
	}
	// A burst: 3 in flight for 4 seconds.
	w.arrive(3)
	w.advance(4 * time.Second)
	f, b := floors(w)
	if len(f) != 1 || len(b) != 2 {
		t.Fatalf("in the burst: floor %v burst %v, want 1 and 2", f, b)
	}
	burst := map[string]bool{b[0]: true, b[1]: true}
	w.finish(2) // back to what the floor takes
	mark := len(w.effects)
	w.advance(3 * time.Second) // under idle_timeout without overflow
	if n := count[Retire](w, mark); n != 0 {
		t.Fatalf("%d retired %s after the burst, want none before idle_timeout", n, 3*time.Second)
	}
	w.finish(1)
	w.advance(10 * time.Second)
	for _, e := range w.effects[mark:] {
		if r, ok := e.(Retire); ok && !burst[r.ID] {
			t.Fatalf("retired %s, a floor instance; burst was %v", r.ID, burst)
		}
	}
	if f, b := floors(w); len(f) != 1 || len(b) != 0 {
		t.Fatalf("after idle_timeout: floor %v burst %v, want the floor alone", f, b)
	}
	w.advance(time.Minute)
	if w.ready() != 1 {
		t.Fatalf("a minute idle: %d ready, want the floor of 1 (never 0)", w.ready())
	}

	// A burst again, then the floor instance crashes: a burst instance
	// takes its place at once, and the replacement starts as burst.
	w.arrive(3)
	w.advance(4 * time.Second)
	f, _ = floors(w)
	mark = len(w.effects)
	w.crash(f[0])
	var promoted string
	for _, e := range w.effects[mark:] {
		if s, ok := e.(SetTier); ok && s.Floor {
			promoted = s.ID
		}
		if s, ok := e.(StartInstance); ok && s.Floor {
			t.Fatalf("the replacement %s started in the floor tier; a ready burst instance should have been promoted", s.ID)
		}
	}
	if promoted == "" {
		t.Fatalf("no burst instance was promoted after the floor crashed: %v", w.effects[mark:])
	}
	if f, _ := floors(w); len(f) != 1 || f[0] != promoted {
		t.Fatalf("floor after the crash %v, want [%s]", f, promoted)
	}
}

// After a restart, adopted instances are sorted into tiers again: the
// floor is whole before anything new starts.
func TestCore_HybridAdoptedFloor(t *testing.T) {
	m := testManifest(t, manifest.Hybrid, func(m *manifest.Manifest) {
		two := 2
		m.Scaling.Min, m.Scaling.Max = &two, 4
	})
	adopted := []backend.Instance{{ID: "a1", Revision: m.Hash(), Addr: "x1"}, {ID: "a2", Revision: m.Hash(), Addr: "x2"}}
	w := newWorld(t, Instances, m, adopted)
	if f, _ := floors(w); len(f) != 2 {
		t.Fatalf("floor after adoption %v, want a1 and a2", f)
	}
	w.advance(3 * time.Second)
	if n := w.starts(0); n != 0 {
		t.Fatalf("%d started after adopting a whole floor, want 0", n)
	}
}
