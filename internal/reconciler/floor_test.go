package reconciler

import (
	"testing"
	"time"

	"tandem/internal/manifest"
)

// Tick.Floor holds a serverless deployment up without traffic, is capped
// by scaling.max, and once it drops the idle rules take it back to zero.
func TestCore_TickFloor(t *testing.T) {
	for _, kind := range []Kind{Instances, Replicas} {
		m := testManifest(t, manifest.Serverless, func(m *manifest.Manifest) {
			m.Scaling.IdleTimeout = manifest.Duration(5 * time.Second)
		})
		w := newWorld(t, kind, m, nil)
		tick := func(n int) { w.advance(time.Duration(n) * time.Second) }
		tick(3)
		if w.core.Desired() != 0 {
			t.Fatalf("kind %d: desired %d with no floor", kind, w.core.Desired())
		}
		w.floor = 2
		tick(3)
		if d, r := w.core.Desired(), w.core.View().Decision.Reason; d != 2 || r != ReasonFloor {
			t.Fatalf("kind %d: desired %d (%s) with floor 2, want 2 (%s)", kind, d, r, ReasonFloor)
		}
		if w.ready() != 2 {
			t.Fatalf("kind %d: %d ready under floor 2", kind, w.ready())
		}
		w.floor = 9 // above max (3)
		tick(1)
		if d := w.core.Desired(); d != 3 {
			t.Fatalf("kind %d: desired %d with floor 9 and max 3, want 3", kind, d)
		}
		w.floor = 0
		tick(10)
		if d := w.core.Desired(); d != 0 {
			t.Fatalf("kind %d: desired %d once the floor dropped and idle_timeout passed, want 0", kind, d)
		}
	}
}
