package controller_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/store"
)

func route(t *testing.T, c *controller.Controller, name string, h http.Header) *controller.Deployment {
	t.Helper()
	d, _, err := c.Route(name, h)
	if err != nil {
		t.Fatalf("route %s: %v", name, err)
	}
	return d
}

// A canary gets its share of untagged requests; tags, header routes and a
// sticky header pick their revision; promote and rollback move all of it.
func TestTraffic_CanaryTagsRoutesPromote(t *testing.T) {
	c, _ := newController(t, fake.New(http.NotFoundHandler()))
	ctx := context.Background()
	v1 := parse(t, "name: a\nruntime: {command: [one]}\n")
	v2 := parse(t, "name: a\nruntime: {command: [two]}\n")
	if _, err := c.Apply(ctx, v1); err != nil {
		t.Fatal(err)
	}
	twenty := 20
	if _, err := c.Deploy(ctx, v2, controller.DeployOptions{Canary: &twenty, Tag: "next",
		Routes: []controller.HeaderRoute{{Header: "x-variant", Value: "b"}}}); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	got := 0
	for range n {
		if route(t, c, "a", http.Header{}).Revision() == v2.Hash() {
			got++
		}
	}
	// Binomial: mean 1000, sd 28.3; 5 sd either side.
	if mean, sd := n*0.2, math.Sqrt(n*0.2*0.8); math.Abs(float64(got)-mean) > 5*sd {
		t.Fatalf("canary got %d of %d, want 20%% (%.0f ± %.0f)", got, n, mean, 5*sd)
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		want string
	}{
		{"a@next", nil, v2.Hash()},
		{"a@" + v1.Hash()[:6], nil, v1.Hash()},
		{"a", http.Header{"X-Tandem-Revision": {"next"}}, v2.Hash()},
		{"a", http.Header{"X-Variant": {"b"}}, v2.Hash()},
	} {
		for range 50 {
			if rev := route(t, c, tc.name, tc.h).Revision(); rev != tc.want {
				t.Fatalf("%s %v went to %s, want %s", tc.name, tc.h, rev, tc.want)
			}
		}
	}
	if _, _, err := c.Route("a@nope", nil); err == nil {
		t.Fatal("unknown tag routed")
	}
	// Sticky: each user always on one revision, and both revisions used.
	if err := c.ChangeTraffic(ctx, "a", controller.TrafficChange{StickyHeader: "X-User"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for u := range 200 {
		h := http.Header{"X-User": {fmt.Sprint("user-", u)}}
		first := route(t, c, "a", h).Revision()
		for range 5 {
			if rev := route(t, c, "a", h).Revision(); rev != first {
				t.Fatalf("user %d moved from %s to %s", u, first, rev)
			}
		}
		seen[first] = true
	}
	if len(seen) != 2 {
		t.Fatalf("sticky users on %d revisions, want 2", len(seen))
	}
	revs, err := c.Revisions("a")
	if err != nil || len(revs) != 2 || revs[0].Revision != v2.Hash() || revs[0].Percent != 20 || revs[1].Percent != 80 || !revs[1].Main {
		t.Fatalf("revisions = %+v, %v", revs, err)
	}
	if _, err := c.Promote(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if rev := route(t, c, "a", nil).Revision(); rev != v2.Hash() {
			t.Fatalf("after promote a request went to %s", rev)
		}
	}
	if d, _ := c.Lookup("a"); d.Revision() != v2.Hash() {
		t.Fatalf("main after promote runs %s", d.Revision())
	}
	// Canary again, then roll back: all to the main one, the canary failed.
	if _, err := c.Deploy(ctx, v1, controller.DeployOptions{Canary: &twenty}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rollback(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if rev := route(t, c, "a", nil).Revision(); rev != v2.Hash() {
			t.Fatalf("after rollback a request went to %s", rev)
		}
	}
	revs, _ = c.Revisions("a")
	for _, r := range revs {
		if r.Revision == v1.Hash() && r.Failed == "" {
			t.Fatalf("rolled back revision not marked: %+v", r)
		}
	}
	// A deploy's route may name another revision (by prefix): its unit is
	// started from the store.
	v3 := parse(t, "name: a\nruntime: {command: [three]}\n")
	if _, err := c.Deploy(ctx, v3, controller.DeployOptions{Tag: "three",
		Routes: []controller.HeaderRoute{{Header: "X-Old", Value: "1", Revision: v1.Hash()[:6]}}}); err != nil {
		t.Fatal(err)
	}
	if rev := route(t, c, "a", http.Header{"X-Old": {"1"}}).Revision(); rev != v1.Hash() {
		t.Fatalf("route to a named revision went to %s", rev)
	}
	if rev := route(t, c, "a@three", nil).Revision(); rev != v3.Hash() {
		t.Fatalf("tag three went to %s", rev)
	}
	// A deploy whose route names no revision is refused and changes
	// nothing of the traffic.
	before, _ := c.Traffic("a")
	v4 := parse(t, "name: a\nruntime: {command: [four]}\n")
	if _, err := c.Deploy(ctx, v4, controller.DeployOptions{Canary: &twenty,
		Routes: []controller.HeaderRoute{{Header: "X-Old", Value: "2", Revision: "ffffffff"}}}); err == nil {
		t.Fatal("a route to an unknown revision was taken")
	}
	after, _ := c.Traffic("a")
	if fmt.Sprint(after.Traffic.Split, after.Traffic.Routes, after.Traffic.Tags) != fmt.Sprint(before.Traffic.Split, before.Traffic.Routes, before.Traffic.Tags) {
		t.Fatalf("a refused deploy changed the traffic: %+v -> %+v", before.Traffic, after.Traffic)
	}
}

// The traffic survives a restart, and old revisions without traffic are
// collected beyond the retention count.
func TestTraffic_RestartAndRetention(t *testing.T) {
	dir := t.TempDir()
	open := func() (*controller.Controller, func()) {
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		fb := fake.New(http.NotFoundHandler())
		c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
			DefaultBackend: "process", Tick: 20 * time.Millisecond, Retention: 2})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return c, func() { c.Shutdown(context.Background()); st.Close() }
	}
	c, stop := open()
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.Apply(ctx, parse(t, fmt.Sprintf("name: a\nruntime: {command: [v%d]}\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	canary := parse(t, "name: a\nruntime: {command: [canary]}\n")
	half := 50
	if _, err := c.Deploy(ctx, canary, controller.DeployOptions{Canary: &half}); err != nil {
		t.Fatal(err)
	}
	revs, _ := c.Revisions("a")
	if len(revs) != 4 { // main v4, the canary, and 2 kept
		t.Fatalf("%d revisions kept, want 4: %+v", len(revs), revs)
	}
	stop()
	c, stop = open()
	defer stop()
	seen := map[string]bool{}
	for range 200 {
		seen[route(t, c, "a", nil).Revision()] = true
	}
	if len(seen) != 2 || !seen[canary.Hash()] {
		t.Fatalf("after restart requests went to %v", seen)
	}
}

// A progressive rollout whose revision answers 500 is rolled back with the
// reason; a healthy one is promoted.
func TestTraffic_ProgressiveRollout(t *testing.T) {
	c, _ := newController(t, fake.New(http.NotFoundHandler()))
	ctx := context.Background()
	if _, err := c.Apply(ctx, parse(t, "name: a\nruntime: {command: [one]}\n")); err != nil {
		t.Fatal(err)
	}
	const ro = "rollout: {steps: [50, 100], interval: 1s, failures: 1, min_requests: 5, max_error_rate: '1%'}\n"
	bad := parse(t, "name: a\nruntime: {command: [bad]}\n"+ro)
	if _, err := c.Apply(ctx, bad); err != nil {
		t.Fatal(err)
	}
	feed := func(status int) {
		for range 20 {
			d := route(t, c, "a", http.Header{"X-Tandem-Revision": {"next"}})
			_ = d
		}
	}
	_ = feed
	var u *controller.Deployment
	for _, d := range c.Units("a") {
		if d.Revision() == bad.Hash() {
			u = d
		}
	}
	if u == nil {
		t.Fatal("no unit for the rollout's revision")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ts, err := c.Traffic("a")
		if err != nil {
			t.Fatal(err)
		}
		if p := ts.Traffic.Rollout; p.State.Phase == "failed" {
			if ts.Traffic.Split[bad.Hash()] != 0 || p.State.Reason == "" {
				t.Fatalf("failed rollout left %+v", ts.Traffic)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout never failed: %+v", ts.Traffic.Rollout.State)
		}
		for range 10 {
			u.Stats.Observe(500, time.Millisecond, false)
		}
		time.Sleep(100 * time.Millisecond)
	}
	good := parse(t, "name: a\nruntime: {command: [good]}\n"+ro)
	if _, err := c.Apply(ctx, good); err != nil {
		t.Fatal(err)
	}
	for _, d := range c.Units("a") {
		if d.Revision() == good.Hash() {
			u = d
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		if d, _ := c.Lookup("a"); d.Revision() == good.Hash() {
			break
		}
		if time.Now().After(deadline) {
			ts, _ := c.Traffic("a")
			t.Fatalf("healthy rollout not promoted: %+v", ts.Traffic.Rollout.State)
		}
		for range 10 {
			u.Stats.Observe(200, time.Millisecond, false)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkRoute is what routing costs a request: the plain lookup of a
// model with no plan, and a canary split with a header route and a sticky
// header.
func BenchmarkRoute(b *testing.B) {
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(http.NotFoundHandler())},
		DefaultBackend: "process", Tick: time.Hour})
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	ctx := context.Background()
	for _, y := range []string{"name: plain\nruntime: {command: [x]}\n", "name: split\nruntime: {command: [x]}\n"} {
		m, _ := manifest.Parse([]byte(y), "")
		if _, err := c.Apply(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	m2, _ := manifest.Parse([]byte("name: split\nruntime: {command: [y]}\n"), "")
	twenty := 20
	if _, err := c.Deploy(ctx, m2, controller.DeployOptions{Canary: &twenty, StickyHeader: "X-User",
		Routes: []controller.HeaderRoute{{Header: "X-Variant", Value: "b"}}}); err != nil {
		b.Fatal(err)
	}
	h := http.Header{"X-User": {"user-42"}}
	for _, name := range []string{"plain", "split"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.Route(name, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// /metrics has each running revision's share and counters, and the
// model's instance gauges sum its revisions.
func TestTraffic_Metrics(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := metrics.New()
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(http.NotFoundHandler())},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: m})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	ctx := context.Background()
	v1 := parse(t, "name: a\nmode: dedicated\nruntime: {command: [one]}\n")
	v2 := parse(t, "name: a\nmode: dedicated\nruntime: {command: [two]}\n")
	if _, err := c.Apply(ctx, v1); err != nil {
		t.Fatal(err)
	}
	thirty := 30
	if _, err := c.Deploy(ctx, v2, controller.DeployOptions{Canary: &thirty}); err != nil {
		t.Fatal(err)
	}
	for _, u := range c.Units("a") {
		u.Stats.Observe(200, time.Millisecond, false)
		if u.Revision() == v2.Hash() {
			u.Stats.Observe(503, time.Millisecond, true)
		}
	}
	got := map[string]float64{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range mt.GetLabel() {
					if l.GetName() == "revision" || l.GetName() == "state" {
						key += "/" + l.GetValue()
					}
				}
				switch {
				case mt.GetCounter() != nil:
					got[key] = mt.GetCounter().GetValue()
				case mt.GetGauge() != nil:
					got[key] = mt.GetGauge().GetValue()
				}
			}
		}
		if got["tandem_instances/ready"] == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for key, want := range map[string]float64{
		"tandem_revision_traffic_percent/" + v1.Hash():   70,
		"tandem_revision_traffic_percent/" + v2.Hash():   30,
		"tandem_revision_requests_total/" + v1.Hash():    1,
		"tandem_revision_requests_total/" + v2.Hash():    2,
		"tandem_revision_errors_total/" + v2.Hash():      1,
		"tandem_revision_cold_starts_total/" + v2.Hash(): 1,
		"tandem_instances/ready":                         2, // one per revision
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}

// A revision being retired when tandem stops is stopped with the rest: no
// instance is left behind.
func TestTraffic_ShutdownStopsRetiringUnits(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fb := fake.New(http.NotFoundHandler())
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Apply(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {command: [one]}\n")); err != nil {
		t.Fatal(err)
	}
	half := 50
	if _, err := c.Deploy(ctx, parse(t, "name: a\nmode: dedicated\nruntime: {command: [two]}\n"), controller.DeployOptions{Canary: &half}); err != nil {
		t.Fatal(err)
	}
	until(t, "two instances", func() bool { l, _ := fb.List(ctx); return len(l) == 2 })
	if err := c.Rollback(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// The canary's unit waits a second before it stops; tandem stops now.
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := fb.List(ctx); len(l) != 0 {
		t.Fatalf("instances left after shutdown: %+v", l)
	}
}
