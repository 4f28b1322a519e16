// Package backendtest is the behaviour suite every backend passes: local
// processes, Docker and Kubernetes run the same tests against the real
// engine, with cmd/fakemodel as the instance program.
//
// A backend's own test calls Run with a Harness that knows how to build the
// backend and a manifest for the fake model server:
//
//	func TestBackend(t *testing.T) {
//		backendtest.Run(t, backendtest.Harness{New: ..., Manifest: ...})
//	}
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Harness tells the suite how to build a backend and what to run on it.
type Harness struct {
	// New returns a backend over dataDir; calling it twice with one
	// dataDir simulates a tandem restart. The suite closes what New returns.
	New func(t *testing.T, dataDir string) backend.Backend
	// Manifest returns a valid manifest (defaults set) for the fake model
	// server with extra env (the FAKE_* knobs of cmd/fakemodel) and, when
	// memory > 0, that memory limit.
	Manifest func(t *testing.T, name string, env map[string]string, memory manifest.ByteSize) *manifest.Manifest
	// SupportsMemoryLimit tells whether the OOM case must run.
	SupportsMemoryLimit bool
}

// Bounds on waiting. They only bound failures: a passing test never waits
// them out, and no test asserts how long anything took.
const (
	readyWithin = 30 * time.Second
	exitWithin  = 30 * time.Second
	// longGrace is a grace period no graceful stop may need.
	longGrace = 2 * time.Minute
	// shortGrace is how long a program that ignores SIGTERM is given.
	shortGrace = 300 * time.Millisecond
)

// Run runs every behaviour test against the backend h builds.
func Run(t *testing.T, h Harness) {
	if h.New == nil || h.Manifest == nil {
		t.Fatal("backendtest: Harness.New and Harness.Manifest are required")
	}
	s := &suite{h: h}
	t.Run("StartServesHealth", s.startServesHealth)
	t.Run("WaitReportsCrash", s.waitReportsCrash)
	t.Run("ExitAtOnce", s.exitAtOnce)
	t.Run("StopIsGraceful", s.stopIsGraceful)
	t.Run("StopKillsAfterGrace", s.stopKillsAfterGrace)
	t.Run("StopUnknownID", s.stopUnknownID)
	t.Run("RecoverAfterRestart", s.recoverAfterRestart)
	t.Run("Logs", s.logs)
	t.Run("OOM", s.oom)
	t.Run("MissingProgram", s.missingProgram)
}

type suite struct {
	h Harness
	n atomic.Int64
}

// newBackend builds a backend and closes it when the test ends (after the
// instances it started have been stopped: cleanups run last-in first-out).
func (s *suite) newBackend(t *testing.T, dataDir string) backend.Backend {
	t.Helper()
	b := s.h.New(t, dataDir)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// spec returns a spec for the fake model server with a fresh id.
func (s *suite) spec(t *testing.T, env map[string]string, memory manifest.ByteSize) backend.Spec {
	t.Helper()
	n := s.n.Add(1)
	name := fmt.Sprintf("bt-%d-%d", time.Now().UnixNano()%1e6, n)
	m := s.h.Manifest(t, name, env, memory)
	return backend.Spec{
		ID:         fmt.Sprintf("%s-i%d", name, n),
		Deployment: m.Name,
		Revision:   m.Hash(),
		Manifest:   m,
		Env:        map[string]string{"TANDEM_INSTANCE_TEST": "1"},
	}
}

// start starts spec on b and stops it when the test ends.
func start(t *testing.T, b backend.Backend, spec backend.Spec) backend.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyWithin)
	defer cancel()
	inst, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start(%s): %v", spec.ID, err)
	}
	stopAtEnd(t, b, spec.ID)
	if inst.ID != spec.ID {
		t.Errorf("Start returned id %q, want %q", inst.ID, spec.ID)
	}
	if inst.Addr == "" {
		t.Fatalf("Start(%s) returned no address", spec.ID)
	}
	return inst
}

func stopAtEnd(t *testing.T, b backend.Backend, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
		defer cancel()
		if err := b.Stop(ctx, id, time.Second); err != nil {
			t.Errorf("cleanup: Stop(%s): %v", id, err)
		}
	})
}

var client = &http.Client{Timeout: 5 * time.Second}

// get sends one request to the instance and returns status and body.
func get(method, addr, path string) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitHealthy polls GET /health until it answers 200.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	var last string
	for time.Now().Before(deadline) {
		code, body, err := get(http.MethodGet, addr, "/health")
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("status %d %q, err %v", code, body, err)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered GET /health with 200 (last: %s)", addr, last)
}

// waitExit receives the one Exit from ch and checks that ch is then closed.
func waitExit(t *testing.T, ch <-chan backend.Exit) backend.Exit {
	t.Helper()
	select {
	case ex, ok := <-ch:
		if !ok {
			t.Fatal("Wait channel closed without an Exit")
		}
		select {
		case extra, ok := <-ch:
			if ok {
				t.Errorf("Wait channel delivered a second Exit: %+v", extra)
			}
		case <-time.After(exitWithin):
			t.Error("Wait channel not closed after its Exit")
		}
		return ex
	case <-time.After(exitWithin):
		t.Fatal("no Exit arrived")
	}
	return backend.Exit{}
}

func mustWait(t *testing.T, b backend.Backend, id string) <-chan backend.Exit {
	t.Helper()
	ch, err := b.Wait(id)
	if err != nil {
		t.Fatalf("Wait(%s): %v", id, err)
	}
	return ch
}

// killedBy reports whether ex says the instance died of sig, either as a
// signal name (processes) or as the shell convention 128+n (containers).
func killedBy(ex backend.Exit, name string, num int) bool {
	return ex.Signal == name || ex.Code == 128+num
}

// describe writes every field of an Exit (its String method hides some).
func describe(ex backend.Exit) string {
	return fmt.Sprintf("%q (code %d, signal %q, oom %v, err %v)", ex.String(), ex.Code, ex.Signal, ex.OOM, ex.Err)
}

func listed(t *testing.T, b backend.Backend, id string) bool {
	t.Helper()
	insts, err := b.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, i := range insts {
		if i.ID == id {
			return true
		}
	}
	return false
}

func (s *suite) startServesHealth(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, nil, 0)
	inst := start(t, b, spec)
	if inst.Deployment != spec.Deployment || inst.Revision != spec.Revision {
		t.Errorf("Start returned deployment %q revision %q, want %q %q", inst.Deployment, inst.Revision, spec.Deployment, spec.Revision)
	}
	if len(inst.Phases) == 0 {
		t.Error("Start reported no phases")
	}
	waitHealthy(t, inst.Addr)
	if !listed(t, b, spec.ID) {
		t.Errorf("List does not include %s", spec.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	if err := b.Stop(ctx, spec.ID, longGrace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if listed(t, b, spec.ID) {
		t.Errorf("List still includes %s after Stop", spec.ID)
	}
}

func (s *suite) waitReportsCrash(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, nil, 0)
	inst := start(t, b, spec)
	waitHealthy(t, inst.Addr)
	ch := mustWait(t, b, spec.ID)
	_, _, _ = get(http.MethodPost, inst.Addr, "/crash") // the answer dies with it
	ex := waitExit(t, ch)
	if ex.Code != 2 || ex.Signal != "" || ex.OOM || ex.Err != nil {
		t.Errorf("Exit = %s, want code 2", describe(ex))
	}
	if ex.At.IsZero() {
		t.Error("Exit.At is zero")
	}
	// A second Wait after the end still tells how it ended.
	if again := waitExit(t, mustWait(t, b, spec.ID)); again.Code != 2 {
		t.Errorf("second Wait: Exit = %s, want code 2", describe(again))
	}
}

func (s *suite) exitAtOnce(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, map[string]string{"FAKE_EXIT_AT_ONCE": "3"}, 0)
	start(t, b, spec)
	ex := waitExit(t, mustWait(t, b, spec.ID))
	if ex.Code != 3 || ex.Signal != "" {
		t.Errorf("Exit = %s, want code 3", describe(ex))
	}
	if got := ex.String(); got != "exited with code 3" {
		t.Errorf("Exit.String() = %q", got)
	}
}

func (s *suite) stopIsGraceful(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, nil, 0)
	inst := start(t, b, spec)
	waitHealthy(t, inst.Addr)
	ch := mustWait(t, b, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), longGrace+exitWithin)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Stop(ctx, spec.ID, longGrace) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case ex := <-ch:
		// Stop may still be returning; the Exit says enough.
		if !killedBy(ex, "terminated", 15) {
			t.Fatalf("Exit = %s, want death by SIGTERM", describe(ex))
		}
		if err := <-done; err != nil {
			t.Fatalf("Stop: %v", err)
		}
		return
	case <-time.After(longGrace / 2):
		t.Fatal("Stop of a program that honours SIGTERM waited for the grace period")
	}
	// Dying of SIGTERM rather than SIGKILL shows Stop did not wait for grace.
	if ex := waitExit(t, ch); !killedBy(ex, "terminated", 15) {
		t.Errorf("Exit = %s, want death by SIGTERM", describe(ex))
	}
	if _, _, err := get(http.MethodGet, inst.Addr, "/health"); err == nil {
		t.Error("the instance still answers after Stop")
	}
	// Stopping again is not an error.
	if err := b.Stop(ctx, spec.ID, longGrace); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func (s *suite) stopKillsAfterGrace(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, map[string]string{"FAKE_IGNORE_TERM": "1"}, 0)
	inst := start(t, b, spec)
	waitHealthy(t, inst.Addr)
	ch := mustWait(t, b, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	if err := b.Stop(ctx, spec.ID, shortGrace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ex := waitExit(t, ch)
	if !killedBy(ex, "killed", 9) || ex.OOM {
		t.Errorf("Exit = %s, want a kill (SIGKILL)", describe(ex))
	}
}

func (s *suite) stopUnknownID(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	if err := b.Stop(ctx, "no-such-instance", time.Second); err != nil {
		t.Errorf("Stop of an unknown id = %v, want nil", err)
	}
	if _, err := b.Wait("no-such-instance"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Wait of an unknown id = %v, want ErrNotFound", err)
	}
}

func (s *suite) recoverAfterRestart(t *testing.T) {
	dir := t.TempDir()
	b1 := s.newBackend(t, dir)
	spec := s.spec(t, nil, 0)
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	inst, err := b1.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitHealthy(t, inst.Addr)
	_, pid, err := get(http.MethodGet, inst.Addr, "/pid")
	if err != nil {
		t.Fatalf("GET /pid: %v", err)
	}
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Closing must leave the instance running.
	if code, _, err := get(http.MethodGet, inst.Addr, "/health"); err != nil || code != http.StatusOK {
		t.Fatalf("after Close the instance no longer answers: status %d, %v", code, err)
	}

	b2 := s.newBackend(t, dir)
	stopAtEnd(t, b2, spec.ID) // in case the test fails before its own Stop
	got, err := b2.Recover(ctx)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	var found *backend.Instance
	for i := range got {
		if got[i].ID == spec.ID {
			found = &got[i]
		}
	}
	if found == nil {
		t.Fatalf("Recover = %+v, want instance %s", got, spec.ID)
	}
	if found.Addr != inst.Addr || found.Deployment != spec.Deployment || found.Revision != spec.Revision {
		t.Errorf("Recover returned %+v, want addr %s deployment %s revision %s", *found, inst.Addr, spec.Deployment, spec.Revision)
	}
	if !listed(t, b2, spec.ID) {
		t.Errorf("List after Recover does not include %s", spec.ID)
	}
	if _, again, err := get(http.MethodGet, found.Addr, "/pid"); err != nil || again != pid {
		t.Fatalf("recovered instance answers pid %q (%v), want the same process %q", again, err, pid)
	}
	ch := mustWait(t, b2, spec.ID)
	if err := b2.Stop(ctx, spec.ID, longGrace); err != nil {
		t.Fatalf("Stop of the recovered instance: %v", err)
	}
	ex := waitExit(t, ch)
	if ex.OOM {
		t.Errorf("Exit = %s, want no OOM", describe(ex))
	}
	if _, _, err := get(http.MethodGet, inst.Addr, "/health"); err == nil {
		t.Error("the recovered instance still answers after Stop")
	}
	if listed(t, b2, spec.ID) {
		t.Errorf("List still includes %s after Stop", spec.ID)
	}
	// A third tandem finds nothing left to adopt.
	b3 := s.newBackend(t, dir)
	if left, err := b3.Recover(ctx); err != nil || len(left) != 0 {
		t.Errorf("Recover after Stop = %+v, %v; want nothing", left, err)
	}
}

func (s *suite) logs(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	lr, ok := b.(backend.LogReader)
	if !ok {
		t.Skip("backend keeps no logs (not a backend.LogReader)")
	}
	spec := s.spec(t, nil, 0)
	inst := start(t, b, spec)
	waitHealthy(t, inst.Addr)
	want := spec.ID + " | fakemodel: pid "
	deadline := time.Now().Add(readyWithin)
	var buf bytes.Buffer
	for {
		buf.Reset()
		if err := lr.Logs(context.Background(), spec.Deployment, 0, &buf); err != nil {
			t.Fatalf("Logs: %v", err)
		}
		if strings.Contains(buf.String(), want) && strings.Contains(buf.String(), "listening") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Logs = %q, want a line starting %q saying listening", buf.String(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if !strings.HasPrefix(line, spec.ID+" | ") {
			t.Errorf("log line %q lacks the prefix %q", line, spec.ID+" | ")
		}
	}
	buf.Reset()
	if err := lr.Logs(context.Background(), "no-such-deployment", 10, &buf); err != nil || buf.Len() != 0 {
		t.Errorf("Logs of an unknown deployment = %q, %v; want nothing", buf.String(), err)
	}
}

func (s *suite) oom(t *testing.T) {
	if !s.h.SupportsMemoryLimit {
		t.Skip("SKIPPED: this backend cannot enforce memory limits here (Harness.SupportsMemoryLimit is false); the OOM behaviour is NOT tested")
	}
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, nil, 64<<20)
	inst := start(t, b, spec)
	waitHealthy(t, inst.Addr)
	ch := mustWait(t, b, spec.ID)
	if code, body, err := get(http.MethodGet, inst.Addr, "/alloc?mb=256"); err == nil {
		t.Errorf("GET /alloc?mb=256 under a 64Mi limit answered %d %q", code, body)
	}
	ex := waitExit(t, ch)
	if !ex.OOM {
		t.Errorf("Exit = %s, want OOM", describe(ex))
	}
	if !strings.Contains(ex.String(), "out of memory") {
		t.Errorf("Exit.String() = %q, want it to say out of memory", ex.String())
	}
}

func (s *suite) missingProgram(t *testing.T) {
	b := s.newBackend(t, t.TempDir())
	spec := s.spec(t, nil, 0)
	m := *spec.Manifest
	m.Runtime.Command = []string{"tandem-no-such-program-" + spec.ID}
	spec.Manifest = &m
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	inst, err := b.Start(ctx, spec)
	if err == nil {
		stopAtEnd(t, b, inst.ID)
		t.Fatalf("Start of a missing program succeeded: %+v", inst)
	}
	if !errors.Is(err, backend.ErrStartFailed) {
		t.Errorf("Start error %v does not wrap ErrStartFailed", err)
	}
	if !strings.Contains(err.Error(), m.Runtime.Command[0]) {
		t.Errorf("Start error %q does not name the program %q", err, m.Runtime.Command[0])
	}
	if listed(t, b, spec.ID) {
		t.Errorf("List includes %s after a failed Start", spec.ID)
	}
}
