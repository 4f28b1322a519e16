package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/cost"
)

// tierOf returns the instances of a status by tier.
func tierOf(st *controller.Status, tier string) []controller.InstanceStatus {
	var out []controller.InstanceStatus
	for _, in := range st.Instances {
		if in.Tier == tier && (in.State == "ready" || in.State == "starting") {
			out = append(out, in)
		}
	}
	return out
}

// Hybrid min 1, max 3: exactly one (floor) instance at rest; a burst
// scales to 3 and the balancer fills the floor before the burst
// instances; after idle_timeout without overflow it is back to the floor,
// never 0; a crash of tandem keeps the floor warm (adopted); `tandem cost`
// shows the two tiers.
func TestHybrid_FloorAndBurst(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", fakeManifest(t, "hy", "hybrid", nil,
		"min: 1\nmax: 3\ntarget_concurrency: 1\ncontainer_concurrency: 1\nidle_timeout: 2s\nstable_window: 3s\npanic_window: 1s\nmax_queue: 100",
		"startup: 20s\nrequest: 30s"))
	st := s.waitFor("the floor", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "hy")
	time.Sleep(1500 * time.Millisecond) // idle: nothing more starts
	st = s.status("hy")
	if len(st.Instances) != 1 || len(tierOf(st, "floor")) != 1 {
		t.Fatalf("at rest: %+v, want exactly one floor instance", st.Instances)
	}
	floorID := st.Instances[0].ID
	floorPid := pidsOf(t, s, "hy", 1)

	// A burst of 3 concurrent requests, twice: it scales to 3.
	wave := func() []reply {
		var wg sync.WaitGroup
		out := make([]reply, 3)
		for i := range out {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i] = s.call("GET", "/models/hy/sleep?d=1500ms", "")
			}()
		}
		wg.Wait()
		return out
	}
	for i, r := range wave() {
		if r.code != 200 {
			t.Fatalf("burst request %d: %v", i, r)
		}
	}
	s.waitFor("3 ready", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 3 }, "hy")
	st = s.status("hy")
	if f, b := tierOf(st, "floor"), tierOf(st, "burst"); len(f) != 1 || f[0].ID != floorID || len(b) != 2 {
		t.Fatalf("in the burst: floor %+v burst %+v, want the first instance as floor and two burst", f, b)
	}
	// Warm now: one request alone goes to the floor although two burst
	// instances are idle; three at once give the floor one and the
	// overflow to the burst tier.
	if r := s.call("GET", "/models/hy/sleep?d=10ms", ""); r.header.Get("X-Pid") != floorPid {
		t.Fatalf("a lone request was served by pid %s, want the floor's %s", r.header.Get("X-Pid"), floorPid)
	}
	onFloor := 0
	for _, r := range wave() {
		if r.code != 200 {
			t.Fatalf("second wave: %v", r)
		}
		if r.header.Get("X-Pid") == floorPid {
			onFloor++
		}
	}
	if onFloor != 1 {
		t.Fatalf("%d of 3 concurrent requests on the floor instance, want 1 (container_concurrency 1, the rest overflow to burst)", onFloor)
	}

	// No overflow: back to the floor after idle_timeout, and never 0.
	s.waitFor("back to the floor", 30*time.Second, func(st *controller.Status) bool {
		return len(st.Instances) == 1 && st.Ready == 1
	}, "hy")
	for range 6 {
		st = s.status("hy")
		if st.Ready != 1 || st.Instances[0].ID != floorID || st.Instances[0].Tier != "floor" {
			t.Fatalf("at rest after the burst: %+v, want the floor instance %s alone", st.Instances, floorID)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// A crash of tandem: the floor instance is adopted, still the floor.
	s.restart(syscall.SIGKILL)
	st = s.waitFor("the floor after a crash restart", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "hy")
	if st.Instances[0].ID != floorID || st.Instances[0].Tier != "floor" {
		t.Fatalf("after the restart (mode %s): %+v, want the adopted floor instance %s", st.Mode, st.Instances, floorID)
	}

	out, err := s.tandem("cost", "hy", "-o", "json")
	if err != nil {
		t.Fatalf("tandem cost: %v\n%s", err, out)
	}
	var rep cost.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("cost -o json: %v\n%s", err, out)
	}
	if len(rep.Models) != 1 || rep.Models[0].Tiers == nil {
		t.Fatalf("cost report %s, want hy with tiers", out)
	}
	tiers := rep.Models[0].Tiers
	if tiers.Floor.InstanceSeconds <= 0 || tiers.Burst.InstanceSeconds <= 0 || tiers.Floor.Cost <= 0 || tiers.Burst.Cost <= 0 {
		t.Errorf("tiers %+v: want floor and burst instance time and cost", tiers)
	}
	if !strings.Contains(out, `"tiers"`) {
		t.Errorf("no tiers in %s", out)
	}
}

// The burst tier on Docker while the floor runs as a process: the burst
// instances are containers, the floor is not; after the burst only the
// floor is left, and no container stays behind.
func TestHybrid_BurstOnDocker(t *testing.T) {
	needDocker(t, "tandem-fakemodel:test")
	s := startServer(t, "")
	m := fakeManifest(t, "hyd", "hybrid", nil,
		"min: 1\nmax: 3\ntarget_concurrency: 1\ncontainer_concurrency: 1\nidle_timeout: 2s\nstable_window: 3s\npanic_window: 1s\nmax_queue: 100",
		"startup: 60s\nrequest: 30s\ngrace: 3s")
	m += "burst:\n  backend: docker\n  image: tandem-fakemodel:test\n  network: host\n"
	s.deploy("", m)
	s.waitFor("the floor", 20*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "hyd")
	if n := len(managedContainers(t, "hyd")); n != 0 {
		t.Fatalf("%d containers at rest, want 0 (the floor is a process)", n)
	}
	var wg sync.WaitGroup
	replies := make([]reply, 3)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = s.call("GET", "/models/hyd/sleep?d=2s", "")
		}()
	}
	st := s.waitFor("3 ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 3 }, "hyd")
	wg.Wait()
	for i, r := range replies {
		if r.code != 200 {
			t.Errorf("request %d: %v", i, r)
		}
	}
	for _, in := range st.Instances {
		switch in.Tier {
		case "floor":
			if in.Backend != "" {
				t.Errorf("floor instance %s on %s, want the deployment's process backend", in.ID, in.Backend)
			}
		case "burst":
			if in.Backend != "docker" {
				t.Errorf("burst instance %s on %q, want docker", in.ID, in.Backend)
			}
		}
	}
	if n := len(managedContainers(t, "hyd")); n != 2 {
		t.Fatalf("%d containers in the burst, want 2 (the burst tier)", n)
	}
	s.waitFor("back to the floor", 60*time.Second, func(st *controller.Status) bool {
		return len(st.Instances) == 1 && st.Ready == 1 && st.Instances[0].Tier == "floor"
	}, "hyd")
	deadline := time.Now().Add(30 * time.Second)
	for len(managedContainers(t, "hyd")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("burst containers still running after the burst: %v", managedContainers(t, "hyd"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
