package reconciler

import (
	"math"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

func testManifest(t *testing.T, mode manifest.Mode, edit func(*manifest.Manifest)) *manifest.Manifest {
	t.Helper()
	m := &manifest.Manifest{Name: "m", Mode: mode, Runtime: manifest.Runtime{Command: []string{"serve"}}}
	m.Scaling.TargetConcurrency = 1
	m.Scaling.Max = 3
	m.SetDefaults()
	if edit != nil {
		edit(m)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// Each case runs against both kinds of backend: an instance backend (the
// process and Docker backends' adapter) and a replica platform (the
// Kubernetes adapter), each played by world.
func TestCore(t *testing.T) {
	cases := []struct {
		name string
		mode manifest.Mode
		edit func(*manifest.Manifest)
		run  func(t *testing.T, w *world)
	}{{
		name: "burst at zero starts max at once",
		mode: manifest.Serverless,
		run: func(t *testing.T, w *world) {
			w.advance(5 * time.Second)
			if w.ready() != 0 {
				t.Fatalf("ready at zero: %d", w.ready())
			}
			mark := len(w.effects)
			w.arrive(30) // the pool pokes the loop once: one Tick
			if got := w.starts(mark); got != 3 {
				t.Fatalf("30 queued at target 1, max 3: %d asked for at once, want 3", got)
			}
			w.advance(time.Second)
			if w.ready() != 3 {
				t.Fatalf("ready after the start delay: %d, want 3", w.ready())
			}
			if len(w.failed) != 0 {
				t.Fatalf("waiters failed: %v", w.failed)
			}
		},
	}, {
		name: "burst after a wake that ends between two ticks is counted",
		mode: manifest.Serverless,
		run: func(t *testing.T, w *world) {
			w.advance(10 * time.Second) // ticks at 1s..10s
			w.advance(100 * time.Millisecond)
			w.arrive(10)                      // wake at 10.1s
			w.advance(500 * time.Millisecond) // ready at 10.4s, in flight
			if w.ready() == 0 || w.inflight != 10 {
				t.Fatalf("ready %d, in flight %d", w.ready(), w.inflight)
			}
			w.finish(10) // at 10.6s: the burst is over before the tick at 11s
			w.advance(400 * time.Millisecond)
			// Queued from 10.1s to 10.4s, in flight to 10.6s: 10 requests
			// for 0.5 s each is 5 request-seconds; the panic window (6 s)
			// holds all of it.
			d := w.core.View().Decision
			panicAvg := w.core.window.Average(w.now, w.core.man.Scaling.PanicWindow.D())
			if got := panicAvg * w.core.man.Scaling.PanicWindow.D().Seconds(); math.Abs(got-5) > 1e-6 {
				t.Fatalf("panic window holds %.6f request-seconds, want 5 (decision %s)", got, d)
			}
		},
	}, {
		name: "crash with waiters: they wait for the replacement",
		mode: manifest.Dedicated,
		edit: func(m *manifest.Manifest) { m.Scaling.Min = intp(1); m.Scaling.Max = 1 },
		run: func(t *testing.T, w *world) {
			w.advance(2 * time.Second)
			if w.ready() != 1 {
				t.Fatalf("ready: %d", w.ready())
			}
			id := onlyKey(t, w.pool)
			w.crash(id)
			w.arrive(5)
			if len(w.failed) != 0 {
				t.Fatalf("waiters failed on a crash: %v", w.failed)
			}
			if w.queued != 5 {
				t.Fatalf("queued %d, want 5", w.queued)
			}
			w.advance(time.Second)
			if w.ready() != 1 || w.inflight != 5 || len(w.failed) != 0 {
				t.Fatalf("after the replacement: ready %d, in flight %d, failed %v", w.ready(), w.inflight, w.failed)
			}
			if w.kind == Instances && w.core.View().Restarts != 1 {
				t.Fatalf("restarts %d, want 1", w.core.View().Restarts)
			}
		},
	}, {
		name: "scale down drains",
		mode: manifest.Dedicated,
		edit: func(m *manifest.Manifest) {
			m.Scaling.Min = intp(1)
			m.Scaling.StableWindow = manifest.Duration(10 * time.Second)
			m.Scaling.PanicWindow = manifest.Duration(2 * time.Second)
		},
		run: func(t *testing.T, w *world) {
			w.advance(time.Second)
			w.arrive(3)
			w.advance(5 * time.Second)
			if w.ready() != 3 {
				t.Fatalf("ready under load: %d, want 3", w.ready())
			}
			mark := len(w.effects)
			w.finish(3)
			w.advance(30 * time.Second)
			if w.ready() != 1 {
				t.Fatalf("ready once idle: %d, want 1 (min)", w.ready())
			}
			if w.kind == Instances {
				if n := count[Retire](w, mark); n != 2 {
					t.Fatalf("retired %d, want 2", n)
				}
				for _, e := range w.effects[mark:] {
					if r, ok := e.(Retire); ok && !r.Drain {
						t.Fatalf("a ready instance was stopped without draining: %+v", r)
					}
				}
				if len(w.running) != 1 {
					t.Fatalf("running after drain: %d", len(w.running))
				}
			}
		},
	}, {
		name: "revision roll keeps serving",
		mode: manifest.Dedicated,
		edit: func(m *manifest.Manifest) { m.Scaling.Min = intp(2) },
		run: func(t *testing.T, w *world) {
			w.advance(2 * time.Second)
			old := keys(w.pool)
			if len(old) != 2 {
				t.Fatalf("ready: %v", old)
			}
			m2 := *w.core.man
			m2.Runtime.Env = map[string]string{"V": "2"}
			mark := len(w.effects)
			w.step(Update{Manifest: &m2})
			w.step(w.sample())
			if w.kind == Replicas {
				if count[ApplyObjects](w, mark) != 1 || count[Metered](w, mark) != 1 {
					t.Fatalf("update on a platform: %v", w.effects[mark:])
				}
				return // the platform rolls its replicas itself
			}
			if count[Retire](w, mark) != 0 {
				t.Fatalf("old revision retired before the new one is ready")
			}
			if n := count[StartInstance](w, mark); n != 2 {
				t.Fatalf("started %d of the new revision, want 2", n)
			}
			for _, s := range w.effects[mark:] {
				if s, ok := s.(StartInstance); ok && s.Rev != m2.Hash() {
					t.Fatalf("started revision %s, want %s", s.Rev, m2.Hash())
				}
			}
			w.advance(2 * time.Second)
			for _, id := range old {
				if w.pool[id] || w.running[id] {
					t.Fatalf("old instance %s still there", id)
				}
			}
			if w.ready() != 2 {
				t.Fatalf("ready after the roll: %d", w.ready())
			}
		},
	}, {
		name: "start failures back off, and waiters learn why",
		mode: manifest.Serverless,
		run: func(t *testing.T, w *world) {
			w.failStarts = 4
			w.advance(time.Second)
			if w.kind == Replicas {
				w.arrive(1)
				w.step(Applied{Replicas: -1, Err: errorString("forbidden")})
				if len(w.failed) != 1 || w.failed[0].Code != "platform_error" {
					t.Fatalf("platform error with a waiter: failed %v", w.failed)
				}
				return
			}
			w.arrive(1)
			w.advance(350 * time.Millisecond) // the first start fails at 1.3s
			if len(w.failed) != 1 || w.failed[0].Code != "instance_failed" {
				t.Fatalf("waiters after a failed start with nothing coming: %v", w.failed)
			}
			var gaps []time.Duration
			w.arrive(1)
			for range 20 {
				w.advance(100 * time.Millisecond)
				if w.queued == 0 {
					w.arrive(1)
				}
			}
			for _, e := range w.effects {
				if f, ok := e.(Failure); ok {
					gaps = append(gaps, f.RetryIn)
				}
			}
			// The first retry at once, then 200 ms doubling.
			want := []time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
			if len(gaps) < len(want) {
				t.Fatalf("backoffs %v, want at least %v", gaps, want)
			}
			for i, g := range want {
				if gaps[i] != g {
					t.Fatalf("backoffs %v, want %v first", gaps, want)
				}
			}
			w.advance(2 * time.Second)
			if w.ready() != 1 {
				t.Fatalf("ready once starts work: %d", w.ready())
			}
		},
	}}
	for _, kind := range []Kind{Instances, Replicas} {
		for _, tc := range cases {
			t.Run(kindName(kind)+"/"+tc.name, func(t *testing.T) {
				w := newWorld(t, kind, testManifest(t, tc.mode, tc.edit), nil)
				tc.run(t, w)
			})
		}
	}
}

func TestCore_RecoverAfterRestart(t *testing.T) {
	m := testManifest(t, manifest.Dedicated, func(m *manifest.Manifest) { m.Scaling.Min = intp(2) })
	t.Run("instances", func(t *testing.T) {
		adopted := []backend.Instance{{ID: "a", Revision: m.Hash(), Addr: "addr-a"}, {ID: "b", Revision: m.Hash(), Addr: "addr-b"}}
		w := newWorld(t, Instances, m, adopted)
		if n := count[WatchInstance](w, 0); n != 2 {
			t.Fatalf("watched %d adopted instances, want 2", n)
		}
		w.advance(2 * time.Second)
		if n := count[StartInstance](w, 0); n != 0 {
			t.Fatalf("started %d with 2 adopted, want 0", n)
		}
		for _, e := range w.effects {
			if a, ok := e.(AddToPool); ok && a.Startup != nil {
				t.Fatalf("an adopted instance counted as a cold start: %+v", a)
			}
		}
		if w.ready() != 2 {
			t.Fatalf("ready: %d", w.ready())
		}
	})
	t.Run("replicas", func(t *testing.T) {
		w2 := newWorldWithReplicas(t, m, 2)
		if n := count[Scale](w2, 0); n != 0 {
			t.Fatalf("scaled a platform that already runs the decided count: %v", w2.effects)
		}
	})
}

func newWorldWithReplicas(t *testing.T, m *manifest.Manifest, n int) *world {
	t.Helper()
	w := &world{t: t, kind: Replicas, now: epoch, tick: time.Second, startDelay: 300 * time.Millisecond,
		running: map[string]bool{}, pool: map[string]bool{}, draining: map[string]bool{},
		lastChange: epoch, lastTickAt: epoch, lastActive: epoch, replicas: n}
	core, effects := New(Config{Name: m.Name, Kind: Replicas, Backend: "test", NewID: func() string { return "x" }}, m, nil, w.now)
	w.core = core
	w.nextTick = w.now.Add(w.tick)
	w.apply(effects)
	w.step(w.sample())
	return w
}

func TestCore_StopWhileStarting(t *testing.T) {
	m := testManifest(t, manifest.Dedicated, func(m *manifest.Manifest) { m.Scaling.Min = intp(1) })
	w := newWorld(t, Instances, m, nil)
	w.step(Stop{})
	if w.core.Done() {
		t.Fatal("done with a start under way")
	}
	w.advance(time.Second) // Started arrives: watched, then retired
	if !w.core.Done() || len(w.running) != 0 {
		t.Fatalf("after stop: done %v, running %v", w.core.Done(), w.running)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func kindName(k Kind) string {
	if k == Replicas {
		return "replicas"
	}
	return "instances"
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func onlyKey(t *testing.T, m map[string]bool) string {
	t.Helper()
	k := keys(m)
	if len(k) != 1 {
		t.Fatalf("want one, have %v", k)
	}
	return k[0]
}

func intp(n int) *int { return &n }

// A leader whose deployment's traffic all reaches other tandem processes
// keeps it up: their reported concurrency is demand, and resets the idle
// clock; once they report nothing, it goes to zero after idle_timeout.
func TestCore_RemoteTrafficKeepsServerlessUp(t *testing.T) {
	m := testManifest(t, manifest.Serverless, func(m *manifest.Manifest) {
		m.Scaling.IdleTimeout = manifest.Duration(5 * time.Second)
	})
	w := newWorld(t, Replicas, m, nil)
	w.arrive(1)
	w.advance(time.Second)
	w.finish(1)
	remote := 1.0
	for range 30 { // 30 s of traffic elsewhere only
		w.now = w.now.Add(time.Second)
		tk := w.sample()
		tk.Remote = remote
		w.step(tk)
	}
	if d := w.core.Desired(); d != 1 {
		t.Fatalf("desired %d with traffic on the other processes, want 1", d)
	}
	remote = 0
	for range 10 {
		w.now = w.now.Add(time.Second)
		w.step(w.sample())
	}
	if d := w.core.Desired(); d != 0 {
		t.Fatalf("desired %d once nobody reports traffic for longer than idle_timeout, want 0", d)
	}
}
