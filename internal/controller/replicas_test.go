package controller_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/store"
)

func replicaController(t *testing.T, fr *fake.Replicas, dir string) *controller.Controller {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := controller.New(controller.Config{Store: st, ReplicaBackends: map[string]backend.ReplicaBackend{"kubernetes": fr},
		DefaultBackend: "kubernetes", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()); st.Close() })
	return c
}

// Serverless on a replica platform: a request scales 0 -> 1 and waits for
// the watched endpoint; idle goes back to 0; delete removes the objects.
func TestController_ReplicasScaleFromZero(t *testing.T) {
	fr := fake.NewReplicas(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := replicaController(t, fr, t.TempDir())
	ctx := context.Background()
	if _, err := c.Apply(ctx, parse(t, "name: a\nruntime: {image: x}\nscaling: {idle_timeout: 300ms, stable_window: 1s, panic_window: 200ms}\n")); err != nil {
		t.Fatal(err)
	}
	d, _ := c.Lookup("a")
	lease, err := d.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !lease.ColdStart {
		t.Fatal("first request was not a cold start")
	}
	lease.Release()
	waitStatus(t, c, func(s *controller.Status) bool { return s.Ready == 0 && s.Desired == 0 })
	if !slices.Contains(fr.Calls(), "scale a 1") || !slices.Contains(fr.Calls(), "scale a 0") {
		t.Fatalf("calls %v, want scale to 1 then 0", fr.Calls())
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if n, _ := fr.Replicas(ctx, "a"); n != -1 {
		t.Fatalf("objects left after delete: replicas %d", n)
	}
}

// Only the leader changes replicas; a follower still wakes from zero for a
// waiting request, and after a restart the count is adopted, not redone.
func TestController_ReplicasFollowerAndAdoption(t *testing.T) {
	fr := fake.NewReplicas(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	dir := t.TempDir()
	c := replicaController(t, fr, dir)
	ctx := context.Background()
	if _, err := c.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {image: x}\nscaling: {min: 2, max: 3}\n")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(s *controller.Status) bool { return s.Ready == 2 })
	c.Shutdown(ctx)

	fr.SetLeading(false)
	before := len(fr.Calls())
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A second controller on the same platform (another tandem process).
	c2 := controller.New(controller.Config{Store: st, ReplicaBackends: map[string]backend.ReplicaBackend{"kubernetes": fr},
		DefaultBackend: "kubernetes", Tick: 20 * time.Millisecond})
	c2.Start(ctx)
	defer c2.Shutdown(ctx)
	if _, err := c2.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {image: x}\nscaling: {min: 1, max: 1}\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, call := range fr.Calls()[before:] {
		if call == "scale a 1" {
			t.Fatalf("a follower changed replicas: %v", fr.Calls()[before:])
		}
	}
	fr.SetLeading(true)
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(fr.Calls()[before:], "scale a 1"); {
		if time.Now().After(deadline) {
			t.Fatalf("the new leader never applied its decision: %v", fr.Calls()[before:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two tandem processes on one shared platform see the same deployments:
// a deploy to one is followed by the other, and so is a delete.
func TestController_SharedCatalog(t *testing.T) {
	fr := fake.NewReplicas(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	mk := func() *controller.Controller {
		st, err := store.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c := controller.New(controller.Config{Store: st, ReplicaBackends: map[string]backend.ReplicaBackend{"kubernetes": fr},
			DefaultBackend: "kubernetes", Tick: 20 * time.Millisecond, CatalogInterval: 20 * time.Millisecond})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown(context.Background()); st.Close() })
		return c
	}
	a, b := mk(), mk()
	ctx := context.Background()
	if _, err := a.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {image: x}\n")); err != nil {
		t.Fatal(err)
	}
	until(t, "b follows a's deployment", func() bool { _, ok := b.Lookup("a"); return ok })
	waitStatus(t, b, func(s *controller.Status) bool { return s.Ready == 1 })
	if _, err := a.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {image: y}\n")); err != nil {
		t.Fatal(err)
	}
	until(t, "b follows the new revision", func() bool {
		d, _ := b.Lookup("a")
		return d != nil && d.Manifest().Runtime.Image == "y"
	})
	applies := 0
	for _, call := range fr.Calls() {
		if call == "apply a" {
			applies++
		}
	}
	if applies != 2 {
		t.Fatalf("objects applied %d times, want 2 (only by the process that was asked): %v", applies, fr.Calls())
	}
	// A canary runs as its own unit (objects a-<rev>), which b does not
	// follow; once promoted, b follows that unit as the model, and it
	// keeps following it after the old objects are gone.
	z := parse(t, "name: a\nmode: dedicated\nruntime: {image: z}\n")
	ten := 10
	if _, err := a.Deploy(ctx, z, controller.DeployOptions{Canary: &ten}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Promote(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	until(t, "b follows the promoted unit", func() bool {
		d, _ := b.Lookup("a")
		return d != nil && d.Manifest().Runtime.Image == "z"
	})
	until(t, "the old objects are gone", func() bool { n, _ := fr.Replicas(ctx, "a"); return n < 0 })
	time.Sleep(100 * time.Millisecond) // several catalog listings
	if d, ok := b.Lookup("a"); !ok || d.Manifest().Runtime.Image != "z" {
		t.Fatalf("b lost the promoted model: %v %v", ok, d)
	}
	waitStatus(t, b, func(s *controller.Status) bool { return s.Ready == 1 && s.Revision == z.Hash() })
	if err := a.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	until(t, "b forgets the deleted deployment", func() bool { _, ok := b.Lookup("a"); return !ok })
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// The cost meter sees a replica-mode deployment as it sees any other: an
// update changes the size and mode it meters, and a delete, here or
// through the shared catalog, ends its metering. Figures by hand from the
// instants passed to the meter.
func TestController_ReplicasMetered(t *testing.T) {
	fr := fake.NewReplicas(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	prices := cost.DefaultPrices()
	mk := func(meter *cost.Meter) *controller.Controller {
		st, err := store.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c := controller.New(controller.Config{Store: st, ReplicaBackends: map[string]backend.ReplicaBackend{"kubernetes": fr},
			DefaultBackend: "kubernetes", Tick: 20 * time.Millisecond, CatalogInterval: 20 * time.Millisecond, Meter: meter})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown(context.Background()); st.Close() })
		return c
	}
	meter := cost.NewMeter(prices, time.Now())
	a := mk(meter)
	ctx := context.Background()
	if _, err := a.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {image: x}\nresources: {cpu: 1, memory: 1Gi}\nscaling: {min: 2, max: 3}\n")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, func(s *controller.Status) bool { return s.Ready == 2 })
	// Update: 3 instances of 2 vCPU and 4 GiB, billed as serverless.
	if _, err := a.Apply(ctx, parse(t, "name: a\nmode: serverless\nruntime: {image: x}\nresources: {cpu: 2, memory: 4Gi}\nscaling: {min: 3, max: 3}\n")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, func(s *controller.Status) bool { return s.Ready == 3 && s.Mode == manifest.Serverless })
	t1 := time.Now()
	l1 := meter.Live(t1).Models["a"]
	t2 := t1.Add(10 * time.Millisecond)
	l2 := meter.Live(t2).Models["a"]
	secs := t2.Sub(t1).Seconds()
	idle := l2.Idle.Minus(l1.Idle)
	if l2.Mode != manifest.Serverless {
		t.Errorf("metered mode %q after the update, want serverless", l2.Mode)
	}
	if !near(idle.Seconds, 3*secs) || !near(idle.CPU, 3*2*secs) || !near(idle.GB, 3*4*secs) {
		t.Errorf("idle over %.3fs after the update: %+v, want 3 instances of 2 vCPU, 4 GiB", secs, idle)
	}
	floor := l2.Floor.Minus(l1.Floor)
	if !near(floor.Seconds, 3*secs) {
		t.Errorf("floor over %.3fs: %+v, want max(1, min 3) instances", secs, floor)
	}

	// A second process, with its own meter, follows the deployment through
	// the shared catalog; a delete on the first reaches it, and neither
	// meters the deployment afterwards.
	meterB := cost.NewMeter(prices, time.Now())
	b := mk(meterB)
	until(t, "b follows a's deployment", func() bool { _, ok := b.Lookup("a"); return ok })
	waitStatusOf(t, b, func(s *controller.Status) bool { return s.Ready == 3 })
	if err := a.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	until(t, "b forgets the deleted deployment", func() bool { _, ok := b.Lookup("a"); return !ok })
	for _, m := range []*cost.Meter{meter, meterB} {
		var l3, l4 cost.Usage
		// b ends its copy in the background: until it has, the deployment
		// is still metered there.
		until(t, "metering ends", func() bool {
			t3 := time.Now()
			l3 = m.Live(t3).Models["a"]
			l4 = m.Live(t3.Add(time.Hour)).Models["a"]
			return l4.Total() == l3.Total() && l4.Floor == l3.Floor
		})
		if l3.Floor.Seconds == 0 {
			t.Fatalf("nothing metered: %+v", l3)
		}
	}
}

func waitStatusOf(t *testing.T, c *controller.Controller, cond func(*controller.Status) bool) {
	t.Helper()
	until(t, "status", func() bool {
		st, err := c.Status("a")
		return err == nil && cond(st)
	})
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-6*max(1, math.Abs(want)) }
