package recommend

import (
	"math"
	"reflect"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

func parse(t testing.TB, yamlText string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(yamlText), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const fake = `name: fake
runtime: {command: [fakemodel]}
scaling:
  max: 4
  idle_timeout: 2s
  stable_window: 10s
  panic_window: 2s
`

func at(secs ...float64) *trace.Trace {
	tr := &trace.Trace{}
	for _, s := range secs {
		tr.Requests = append(tr.Requests, trace.Request{At: time.Duration(s * float64(time.Second))})
	}
	return tr
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestSimulate(t *testing.T) {
	timings := Timings{ColdStart: 500 * time.Millisecond, Service: map[string][]time.Duration{"": {10 * time.Millisecond}}}
	sparse := at(0.3, 10.3, 20.3)
	type want struct {
		requests, errors, cold, starts, peak int
		starting, busy, idle                 float64
		p50                                  float64 // ms
	}
	tests := []struct {
		name string
		mode manifest.Mode
		tr   *trace.Trace
		tm   Timings
		man  string
		end  time.Duration
		want want
	}{
		{
			// Each request finds zero instances: queued at 0.3, ready at
			// 0.8, answered at 0.81 (510 ms). Idle for 2s since 0.81 is
			// first seen by the tick at 3, which retires the instance:
			// 0.5 s starting, 0.01 s busy, 2.19 s idle, three times.
			name: "serverless, sparse: every request a cold start", mode: manifest.Serverless, tr: sparse, tm: timings, man: fake,
			end:  30 * time.Second,
			want: want{requests: 3, cold: 3, starts: 3, peak: 1, starting: 1.5, busy: 0.03, idle: 6.57, p50: 510},
		},
		{
			// One instance warm from the start to the end (30 s).
			name: "dedicated, sparse: warm all along", mode: manifest.Dedicated, tr: sparse, tm: timings, man: fake,
			end:  30 * time.Second,
			want: want{requests: 3, starts: 0, peak: 1, busy: 0.03, idle: 29.97, p50: 10},
		},
		{
			// The second request comes before the idle timeout: one cold
			// start, and the instance lives from 0.8 to the tick at 5
			// (idle since 2.51).
			name: "serverless, within the idle timeout", mode: manifest.Serverless, tr: at(0.3, 2.5), tm: timings, man: fake,
			end:  10 * time.Second,
			want: want{requests: 2, cold: 1, starts: 1, peak: 1, starting: 0.5, busy: 0.02, idle: 4.2 - 0.02, p50: 10},
		},
		{
			// Three at once with room for one in the queue: one waits for
			// the cold start, two are refused (503).
			name: "queue full", mode: manifest.Serverless, tr: at(1, 1, 1), tm: timings,
			man:  fake + "  max_queue: 1\n",
			end:  2 * time.Second,
			want: want{requests: 3, errors: 2, cold: 1, starts: 1, peak: 1, starting: 0.5, busy: 0.01, idle: 0.49, p50: 510},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := parse(t, tt.man)
			r, err := Simulate(tt.tr, tt.tm, Config{Manifest: ForMode(m, tt.mode), End: tt.end})
			if err != nil {
				t.Fatal(err)
			}
			w := tt.want
			u := r.Usage
			if r.Requests != w.requests || r.Errors != w.errors || r.ColdStarts != w.cold || r.Starts != w.starts || r.Peak != w.peak {
				t.Errorf("requests %d errors %d cold %d starts %d peak %d; want %d %d %d %d %d",
					r.Requests, r.Errors, r.ColdStarts, r.Starts, r.Peak, w.requests, w.errors, w.cold, w.starts, w.peak)
			}
			if !near(u.Starting.Seconds, w.starting) || !near(u.Busy.Seconds, w.busy) || !near(u.Idle.Seconds, w.idle) {
				t.Errorf("instance-seconds starting %.4f busy %.4f idle %.4f; want %v %v %v",
					u.Starting.Seconds, u.Busy.Seconds, u.Idle.Seconds, w.starting, w.busy, w.idle)
			}
			if math.Abs(r.Latency.P50-w.p50) > w.p50/500 {
				t.Errorf("p50 %.3f ms, want %v", r.Latency.P50, w.p50)
			}
			p := cost.DefaultPrices()
			if r.Cost != p.Cost(tt.mode, u) || r.Duration < tt.end {
				t.Errorf("cost %v for %v, want %v", r.Cost, r.Duration, p.Cost(tt.mode, u))
			}
		})
	}
}

// TestSimulate_burst: 50 slow requests at once against max 4 and target 1
// panic the autoscaler up to 4 instances and never more; every request is
// answered.
func TestSimulate_burst(t *testing.T) {
	m := parse(t, fake+"  container_concurrency: 1\n")
	tr := &trace.Trace{}
	for i := 0; i < 50; i++ {
		tr.Requests = append(tr.Requests, trace.Request{At: time.Second})
	}
	tm := Timings{ColdStart: 100 * time.Millisecond, Service: map[string][]time.Duration{"": {time.Second}}}
	r, err := Simulate(tr, tm, Config{Manifest: ForMode(m, manifest.Serverless), Tick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Peak != 4 || r.Starts != 4 || r.Errors != 0 || r.Requests != 50 {
		t.Fatalf("peak %d starts %d errors %d requests %d; want 4 4 0 50", r.Peak, r.Starts, r.Errors, r.Requests)
	}
	// One instance is ready at 1.1 s, three more at 1.2 s; 4 at a time, 1 s
	// each, the last of 50 starts in the 13th round at 13.2 s and ends at
	// 14.2 s, 13.2 s after it arrived.
	if r.Latency.Max < 13100 || r.Latency.Max > 13300 {
		t.Fatalf("max latency %.0f ms, want about 13 s", r.Latency.Max)
	}
}

func TestSimulate_paths(t *testing.T) {
	m := parse(t, fake)
	tm := Timings{Service: map[string][]time.Duration{"/slow": {time.Second}, "": {time.Millisecond}}}
	tr := &trace.Trace{Requests: []trace.Request{{At: 0, Path: "/slow"}, {At: 10 * time.Second, Path: "/other"}}}
	r, err := Simulate(tr, tm, Config{Manifest: ForMode(m, manifest.Dedicated)})
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Usage.Busy.Seconds, 1.001) || math.Abs(r.Latency.Max-1000) > 1 {
		t.Fatalf("busy %.4f s, max %.3f ms; want 1.001 s, 1000 ms", r.Usage.Busy.Seconds, r.Latency.Max)
	}
}

func TestForMode(t *testing.T) {
	m := parse(t, "name: x\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 2, max: 3}\n")
	s := ForMode(m, manifest.Serverless)
	d := ForMode(parse(t, fake), manifest.Dedicated)
	if s.Mode != manifest.Serverless || s.Scaling.MinInstances() != 0 || m.Scaling.MinInstances() != 2 {
		t.Fatalf("serverless copy %+v (original min %d)", s.Scaling, m.Scaling.MinInstances())
	}
	if d.Mode != manifest.Dedicated || d.Scaling.MinInstances() != 1 {
		t.Fatalf("dedicated copy %+v", d.Scaling)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestSimulate_quietTicks checks that skipping the ticks of quiet stretches
// changes nothing: the same trace simulated with every tick comes to the
// same figures.
func TestSimulate_quietTicks(t *testing.T) {
	m := parse(t, fake)
	tm := Timings{ColdStart: 300 * time.Millisecond, Service: map[string][]time.Duration{"": {5 * time.Millisecond, 40 * time.Millisecond}}}
	for _, mode := range []manifest.Mode{manifest.Serverless, manifest.Dedicated} {
		for _, tr := range []*trace.Trace{
			generate(t, loadgen.Sporadic, 0.02, 6*time.Hour),
			generate(t, loadgen.Burst, 2, time.Hour),
			generate(t, loadgen.Sine, 5, time.Hour),
		} {
			cfg := Config{Manifest: ForMode(m, mode), Seed: 3, Tick: 700 * time.Millisecond}
			fast, err := Simulate(tr, tm, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cfg.everyTick = true
			slow, err := Simulate(tr, tm, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Errorf("%s, %d requests: skipping quiet ticks gave\n%+v\nwant\n%+v", mode, tr.Len(), fast, slow)
			}
		}
	}
}
