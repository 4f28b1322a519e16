package controller_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/fake"
	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/store"
)

func newController(t *testing.T, fb *fake.Backend) (*controller.Controller, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := controller.New(controller.Config{Store: st, Backends: map[string]backend.Backend{"process": fb},
		DefaultBackend: "process", Tick: 20 * time.Millisecond})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	return c, dir
}

func parse(t *testing.T, y string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(y), "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestController_ApplyResults(t *testing.T) {
	c, _ := newController(t, fake.New(http.NotFoundHandler()))
	ctx := context.Background()
	m := parse(t, "name: a\nruntime: {command: [x]}\n")
	for i, want := range []controller.Result{controller.Created, controller.Unchanged} {
		if got, err := c.Apply(ctx, m); err != nil || got != want {
			t.Fatalf("apply #%d = %v %v, want %v", i, got, err, want)
		}
	}
	if got, _ := c.Apply(ctx, parse(t, "name: a\nruntime: {command: [y]}\n")); got != controller.Updated {
		t.Fatalf("changed manifest: %v, want updated", got)
	}
	_, err := c.Apply(ctx, parse(t, "name: a\nbackend: docker\nruntime: {image: x}\n"))
	if !errors.Is(err, controller.ErrBackendUnavailable) {
		t.Fatalf("unknown backend: %v", err)
	}
	if err := c.Delete(ctx, "nope"); !errors.Is(err, controller.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Lookup("a"); ok {
		t.Fatal("deleted deployment still routed")
	}
}

// A start that fails answers the waiting request at once with the reason.
func TestController_StartFailureFailsWaiters(t *testing.T) {
	fb := fake.New(http.NotFoundHandler())
	fb.StartErr = errors.New("image tandem-nope:latest not found")
	c, _ := newController(t, fb)
	if _, err := c.Apply(context.Background(), parse(t, "name: a\nruntime: {command: [x]}\ntimeouts: {startup: 1h}\n")); err != nil {
		t.Fatal(err)
	}
	d, _ := c.Lookup("a")
	_, err := d.Pool.Acquire(context.Background())
	pe := problem.From(err)
	if pe.Status != 502 || !strings.Contains(pe.Message, "tandem-nope") {
		t.Fatalf("waiting request got %d %q, want a 502 naming the failure", pe.Status, pe.Message)
	}
	// Status is published once the loop has handled the failure.
	waitStatus(t, c, func(s *controller.Status) bool { return strings.Contains(s.LastError, "tandem-nope") })
}

// A crash of a ready instance is replaced, and counted.
func TestController_CrashReplaced(t *testing.T) {
	fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c, _ := newController(t, fb)
	if _, err := c.Apply(context.Background(), parse(t, "name: a\nmode: dedicated\nruntime: {command: [x]}\n")); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, c, func(s *controller.Status) bool { return s.Ready == 1 })
	fb.Crash(st.Instances[0].ID)
	st = waitStatus(t, c, func(s *controller.Status) bool {
		return s.Ready == 1 && s.Restarts == 1 && s.Instances[0].ID != st.Instances[0].ID
	})
	if n := len(fb.Calls()); n != 2 {
		t.Fatalf("backend calls %v, want two starts", fb.Calls())
	}
}

// Requests waiting for an instance that crashes wait for its replacement
// instead of failing with the crash (the in-flight request does fail).
func TestController_WaitersOutliveACrash(t *testing.T) {
	release := make(chan struct{})
	fb := fake.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	c, _ := newController(t, fb)
	y := "name: a\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 1, max: 1, container_concurrency: 1}\ntimeouts: {startup: 1h}\n"
	if _, err := c.Apply(context.Background(), parse(t, y)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, c, func(s *controller.Status) bool { return s.Ready == 1 })
	d, _ := c.Lookup("a")
	busy, err := d.Pool.Acquire(context.Background()) // the only slot
	if err != nil {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	go func() {
		l, err := d.Pool.Acquire(context.Background())
		if err == nil {
			if l.Instance == busy.Instance {
				err = errors.New("leased the crashed instance")
			}
			l.Release()
		}
		waiter <- err
	}()
	for d.Pool.Queued() == 0 {
		time.Sleep(time.Millisecond)
	}
	fb.Crash(st.Instances[0].ID)
	if err := <-waiter; err != nil {
		t.Fatalf("the waiting request failed with the crash: %v", err)
	}
	busy.Release()
	close(release)
	waitStatus(t, c, func(s *controller.Status) bool {
		return s.Restarts == 1 && strings.Contains(s.LastError, "replacing it")
	})
}

func waitStatus(t *testing.T, c *controller.Controller, cond func(*controller.Status) bool) *controller.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status("a")
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
