package controller_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/metrics"
	"tandem/internal/prewarm"
	"tandem/internal/store"
)

// A scheduled window raises the running floor at its start and lowers it
// at its end, on a stepped clock: status, the gauge and the events say
// so, and the instances follow.
func TestController_PrewarmWindow(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var clock atomic.Int64
	set := func(s string) {
		at, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		clock.Store(at.UnixNano())
	}
	set("2026-12-07T08:59:00Z") // a Monday
	mx := metrics.New()
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(http.NotFoundHandler())},
		DefaultBackend: "process", Tick: 20 * time.Millisecond, Metrics: mx,
		Clock: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	m := parse(t, "name: a\nruntime: {command: [x]}\nscaling: {max: 3, idle_timeout: 1s}\nprewarm: [{cron: '0 9 * * 1-5', min: 2, for: 8h}]\n")
	if _, err := c.Apply(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	d, _ := c.Lookup("a")
	waitFor := func(what string, ok func(*controller.Status) bool) *controller.Status {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := d.Status()
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v, prewarm %+v", what, s, s.Prewarm)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	gauge := func() float64 {
		t.Helper()
		mfs, err := mx.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "tandem_prewarm_floor" {
				for _, m := range mf.GetMetric() {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no tandem_prewarm_floor series")
		return 0
	}

	time.Sleep(100 * time.Millisecond) // several ticks before the window
	if s := d.Status(); s.Desired != 0 || s.Ready+s.Starting != 0 || s.Prewarm.Floor != 0 {
		t.Fatalf("before the window: desired %d, %d instances, floor %d", s.Desired, s.Ready+s.Starting, s.Prewarm.Floor)
	}
	if g := gauge(); g != 0 {
		t.Fatalf("gauge %v before the window", g)
	}

	set("2026-12-07T09:00:00Z")
	s := waitFor("window start: 2 ready", func(s *controller.Status) bool { return s.Ready == 2 && s.Prewarm != nil && s.Prewarm.Floor == 2 })
	if s.Desired != 2 || s.Prewarm.Until == nil || !s.Prewarm.Until.Equal(time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)) {
		t.Fatalf("in the window: desired %d, until %v", s.Desired, s.Prewarm.Until)
	}
	if len(s.Prewarm.Events) != 1 || s.Prewarm.Events[0].From != 0 || s.Prewarm.Events[0].To != 2 || !strings.Contains(s.Prewarm.Events[0].Reason, `window "0 9 * * 1-5"`) {
		t.Fatalf("events %+v", s.Prewarm.Events)
	}
	if g := gauge(); g != 2 {
		t.Fatalf("gauge %v in the window, want 2", g)
	}

	set("2026-12-07T16:59:59Z")
	time.Sleep(100 * time.Millisecond)
	if s := d.Status(); s.Ready != 2 || s.Prewarm.Floor != 2 {
		t.Fatalf("a second before the end: %d ready, floor %d", s.Ready, s.Prewarm.Floor)
	}

	set("2026-12-07T17:00:00Z")
	s = waitFor("window end: back to zero", func(s *controller.Status) bool { return s.Prewarm.Floor == 0 && s.Ready+s.Starting+s.Draining == 0 })
	if ev := s.Prewarm.Events; len(ev) != 2 || ev[1].From != 2 || ev[1].To != 0 || !strings.HasPrefix(ev[1].Reason, "ended: window") {
		t.Fatalf("events %+v", ev)
	}
	if g := gauge(); g != 0 {
		t.Fatalf("gauge %v after the window", g)
	}
}

// The predictive learner reads the deployment's history from the store (as
// after a restart) and raises the floor lead ahead of the next burst.
func TestController_PrewarmPredictiveFromStoredHistory(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Six bursts of 20s, 5 minutes apart; the last began at 10:25, so the
	// next is due at 10:30.
	base := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	var h prewarm.History
	for i := range 6 {
		s := base.Add(time.Duration(i) * 5 * time.Minute)
		h.Episodes = append(h.Episodes, prewarm.Episode{Start: s, End: s.Add(20 * time.Second)})
	}
	if err := st.PutJSON("prewarm-history", "p", h); err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(base.Add(29 * time.Minute).UnixNano()) // 10:29: 60s before the burst
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fake.New(http.NotFoundHandler())},
		DefaultBackend: "process", Tick: 20 * time.Millisecond,
		Clock: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	if _, err := c.Apply(context.Background(), parse(t, "name: p\nruntime: {command: [x]}\nscaling: {idle_timeout: 1s}\nprewarm: [{predictive: true, lead: 30s}]\n")); err != nil {
		t.Fatal(err)
	}
	d, _ := c.Lookup("p")
	time.Sleep(100 * time.Millisecond)
	s := d.Status()
	if s.Prewarm == nil || s.Prewarm.Floor != 0 || s.Prewarm.NextBurst == nil || !s.Prewarm.NextBurst.Equal(base.Add(30*time.Minute)) || s.Prewarm.Period != "5m0s" {
		t.Fatalf("a minute before the burst: %+v", s.Prewarm)
	}
	clock.Store(base.Add(29*time.Minute + 30*time.Second).UnixNano()) // lead before it
	deadline := time.Now().Add(10 * time.Second)
	for s = d.Status(); s.Ready != 1 || s.Prewarm.Floor != 1; s = d.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("30s before the burst: ready %d, %+v", s.Ready, s.Prewarm)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(s.Prewarm.Reason, "predictive: a burst every 5m0s, next expected at 10:30:00") {
		t.Fatalf("reason %q", s.Prewarm.Reason)
	}
}
