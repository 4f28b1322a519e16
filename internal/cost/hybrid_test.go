package cost

import (
	"testing"
	"time"

	"tandem/internal/manifest"
)

// halfBusy is an instance busy half the time since it became ready.
type halfBusy struct{ since time.Time }

func (h halfBusy) BusyTime(now time.Time) time.Duration { return now.Sub(h.since) / 2 }

// A hybrid deployment's report splits floor and burst tiers, computed by
// hand from the default prices on a stepped clock:
//
//	floor (reserved, by default the on-demand Fargate prices):
//	  $0.04048 per vCPU-hour, $0.004445 per GB-hour, for every second
//	burst (as serverless): $0.0000166667 per GB-second starting or busy,
//	  $0.20 per million requests, its share by busy time
//	one instance is 1 vCPU and 2 GiB.
//
// f1 (floor) starts at 0, ready at 2 s, idle, crashes at 3000 s: 3000 s.
// b1 (burst) starts at 600 s, ready at 605 s, busy half the time, stops
// at 1200 s: 600 s, 5 s starting and 297.5 s busy.
// b2 starts as burst at 600 s, ready at 605 s, idle, becomes floor when f1
// crashes at 3000 s, stops at 3600 s: 2400 s burst (5 s starting), 600 s floor.
// 100 requests, all served by burst (the only busy time), counted at 1100 s.
// floor: 3600 s x (0.04048 + 2 x 0.004445) / 3600 = 0.04937
// burst: (10 + 297.5) s x 2 GB x 0.0000166667 + 100 x 0.20 / 1e6 = 0.0102700
func TestMeter_HybridTiers(t *testing.T) {
	one := 1
	man := &manifest.Manifest{Name: "h", Mode: manifest.Hybrid, Runtime: manifest.Runtime{Command: []string{"x"}}}
	man.Scaling.Min = &one
	man.SetDefaults()
	m := NewMeter(nil, t0)
	s := func(d float64) time.Time { return t0.Add(time.Duration(d * float64(time.Second))) }
	m.Deployment(man, s(0))
	m.InstanceStarting("h", "f1", s(0))
	m.InstanceReady("h", "f1", nil, s(2))
	for _, id := range []string{"b1", "b2"} {
		m.InstanceStarting("h", id, s(600))
		m.InstanceTier("h", id, true, s(600))
	}
	m.InstanceReady("h", "b1", halfBusy{s(605)}, s(605))
	m.InstanceReady("h", "b2", nil, s(605))
	for range 100 {
		m.Requests("h").Add(time.Second, false)
	}
	m.Flush(s(1100)) // as Run does: the requests land beside the busy time
	m.InstanceGone("h", "b1", s(1200))
	m.InstanceGone("h", "f1", s(3000))
	m.InstanceTier("h", "b2", false, s(3000))
	m.InstanceGone("h", "b2", s(3600))
	r, err := m.Report("h", t0, s(3600))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Models) != 1 || r.Models[0].Tiers == nil {
		t.Fatalf("report %+v, want one hybrid model with tiers", r.Models)
	}
	mr := r.Models[0]
	tiers := mr.Tiers
	if !near(tiers.Floor.InstanceSeconds, 3600) || !near(tiers.Burst.InstanceSeconds, 3000) {
		t.Errorf("instance-seconds floor %.3f burst %.3f, want 3600 and 3000", tiers.Floor.InstanceSeconds, tiers.Burst.InstanceSeconds)
	}
	floor := 3600 * (0.04048 + 2*0.004445) / 3600
	burst := (10+297.5)*2*0.0000166667 + 100*0.20/1e6
	if !near(tiers.Floor.Cost, floor) || !near(tiers.Burst.Cost, burst) {
		t.Errorf("cost floor %.7f burst %.7f, want %.7f and %.7f", tiers.Floor.Cost, tiers.Burst.Cost, floor, burst)
	}
	if !near(mr.Cost, floor+burst) {
		t.Errorf("cost %.7f, want the two tiers' sum %.7f", mr.Cost, floor+burst)
	}
}
