package rollout

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		Steps:        []int{10, 25, 50, 100},
		Interval:     time.Minute,
		MaxErrorRate: 0.01,
		MaxP99:       500 * time.Millisecond,
		Failures:     2,
		MinRequests:  100,
	}
}

// traffic is what the new revision answers during one interval.
type traffic struct {
	n       int           // requests
	errPct  int           // percent of them answered 500
	took    time.Duration // latency of the warm ones
	cold    int           // how many of the n waited for a cold start
	coldLat time.Duration
}

var (
	healthy = traffic{n: 1000, took: 80 * time.Millisecond}
	erring  = traffic{n: 1000, errPct: 10, took: 80 * time.Millisecond}
	slow    = traffic{n: 1000, took: 800 * time.Millisecond}
	quiet   = traffic{n: 50, took: 80 * time.Millisecond}
)

func (tr traffic) play(s *Stats) {
	for i := range tr.n {
		status := 200
		if i%100 < tr.errPct {
			status = 500
		}
		if i < tr.cold {
			s.Observe(status, tr.coldLat, true)
		} else {
			s.Observe(status, tr.took, false)
		}
	}
}

// step is the state expected after one interval.
type step struct {
	weight   int
	phase    Phase
	failures int
	changed  bool
	verdict  string // prefix of the interval's verdict
}

func TestEvaluate_Intervals(t *testing.T) {
	one := testConfig()
	one.Failures = 1
	tests := []struct {
		name    string
		cfg     Config
		play    []traffic
		want    []step
		reasons []string // substrings of the final Reason
	}{
		{
			name: "healthy walks 10, 25, 50, 100 then succeeds",
			cfg:  testConfig(),
			play: []traffic{healthy, healthy, healthy, healthy},
			want: []step{
				{25, Progressing, 0, true, "pass"},
				{50, Progressing, 0, true, "pass"},
				{100, Progressing, 0, true, "pass"},
				{100, Succeeded, 0, false, "pass"},
			},
		},
		{
			name: "10% of 500s fails on the second bad interval",
			cfg:  testConfig(),
			play: []traffic{erring, erring},
			want: []step{
				{10, Progressing, 1, false, "fail: error rate 10.0% > 1.0%"},
				{0, Failed, 2, true, "fail: error rate"},
			},
			reasons: []string{"error rate 10.0% > 1.0%", "in 2 consecutive intervals"},
		},
		{
			name: "p99 over the threshold fails naming p99",
			cfg:  one,
			play: []traffic{healthy, slow},
			want: []step{
				{25, Progressing, 0, true, "pass"},
				{0, Failed, 1, true, "fail: p99"},
			},
			reasons: []string{"p99 8", "> 500ms", "in 1 interval"},
		},
		{
			name: "both metrics bad are both named",
			cfg:  one,
			play: []traffic{{n: 1000, errPct: 50, took: 2 * time.Second}},
			want: []step{
				{0, Failed, 1, true, "fail: error rate 50.0% > 1.0%"},
			},
			reasons: []string{"error rate 50.0%", "p99 2."},
		},
		{
			name: "p99 just under the threshold passes, though its bucket bound is over",
			cfg:  one,
			play: []traffic{{n: 1000, took: 495 * time.Millisecond}},
			want: []step{{25, Progressing, 0, true, "pass"}},
		},
		{
			name: "p99 a bucket over the threshold fails",
			cfg:  one,
			play: []traffic{{n: 1000, took: 560 * time.Millisecond}},
			want: []step{{0, Failed, 1, true, "fail: p99"}},
		},
		{
			name: "a good interval resets failures",
			cfg:  testConfig(),
			play: []traffic{erring, healthy, erring, healthy, slow},
			want: []step{
				{10, Progressing, 1, false, "fail"},
				{25, Progressing, 0, true, "pass"},
				{25, Progressing, 1, false, "fail"},
				{50, Progressing, 0, true, "pass"},
				{50, Progressing, 1, false, "fail: p99"},
			},
		},
		{
			name: "too few requests holds",
			cfg:  testConfig(),
			play: []traffic{quiet, healthy},
			want: []step{
				{10, Progressing, 0, false, "hold: only 50 requests (< min_requests 100)"},
				{25, Progressing, 0, true, "pass"},
			},
		},
		{
			name: "a hold keeps failures: bad, hold, bad fails",
			cfg:  testConfig(),
			play: []traffic{erring, {n: 5, errPct: 100}, erring},
			want: []step{
				{10, Progressing, 1, false, "fail"},
				{10, Progressing, 1, false, "hold: only 5 requests"},
				{0, Failed, 2, true, "fail"},
			},
		},
		{
			name: "slow cold starts are kept out of p99",
			cfg:  one,
			play: []traffic{{n: 1000, cold: 200, coldLat: 20 * time.Second, took: 80 * time.Millisecond}},
			want: []step{{25, Progressing, 0, true, "pass"}},
		},
		{
			name: "5xx on cold starts count as errors",
			cfg:  one,
			play: []traffic{{n: 1000, errPct: 5, cold: 1000, coldLat: time.Second}},
			want: []step{{0, Failed, 1, true, "fail: error rate 5.0%"}},
		},
		{
			name: "unchecked metrics never fail",
			cfg:  Config{Steps: []int{50, 100}, Interval: time.Minute, Failures: 1},
			play: []traffic{{n: 10, errPct: 100, took: time.Hour}, {n: 1}},
			want: []step{
				{100, Progressing, 0, true, "pass"},
				{100, Succeeded, 0, false, "pass"},
			},
		},
		{
			name: "a single step of 100 needs one good interval",
			cfg:  Config{Steps: []int{100}, Interval: time.Minute, Failures: 1, MaxErrorRate: 0.01},
			play: []traffic{healthy},
			want: []step{{100, Succeeded, 0, false, "pass"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats()
			st := Start(tt.cfg, s.Snapshot(), t0)
			if st.Phase != Progressing || st.Weight != tt.cfg.Steps[0] {
				t.Fatalf("Start: %s, want progressing at %d%%", st, tt.cfg.Steps[0])
			}
			now := t0
			for i, tr := range tt.play {
				tr.play(s)
				// Half an interval in: nothing is judged yet.
				mid, changed := Evaluate(st, tt.cfg, s.Snapshot(), now.Add(tt.cfg.Interval/2))
				if changed || !reflect.DeepEqual(mid, st) {
					t.Fatalf("interval %d: judged before the interval ended: %s", i, mid)
				}
				now = now.Add(tt.cfg.Interval)
				st, changed = Evaluate(st, tt.cfg, s.Snapshot(), now)
				w := tt.want[i]
				if st.Weight != w.weight || st.Phase != w.phase || st.Failures != w.failures || changed != w.changed {
					t.Fatalf("interval %d: got %s (changed %v), want %s at %d%%, %d failures (changed %v)",
						i, st, changed, w.phase, w.weight, w.failures, w.changed)
				}
				if len(st.History) != i+1 {
					t.Fatalf("interval %d: %d history entries, want %d", i, len(st.History), i+1)
				}
				if v := st.History[i].Verdict; !strings.HasPrefix(v, w.verdict) {
					t.Errorf("interval %d: verdict %q, want it to start with %q", i, v, w.verdict)
				}
				if !st.IntervalStart.Equal(now) {
					t.Errorf("interval %d: next interval starts at %s, want %s", i, st.IntervalStart, now)
				}
			}
			if len(tt.want) != len(tt.play) {
				t.Fatalf("test has %d intervals and %d expectations", len(tt.play), len(tt.want))
			}
			for _, r := range tt.reasons {
				if !strings.Contains(st.Reason, r) {
					t.Errorf("reason %q does not contain %q", st.Reason, r)
				}
			}
			if st.Phase != Failed && st.Reason != "" {
				t.Errorf("reason %q set on a %s rollout", st.Reason, st.Phase)
			}
			if st.Phase == Failed && st.Reason == "" {
				t.Error("failed without a reason")
			}
		})
	}
}

func TestEvaluate_IntervalRecord(t *testing.T) {
	cfg := testConfig()
	s := NewStats()
	st := Start(cfg, s.Snapshot(), t0)
	traffic{n: 1000, errPct: 10, cold: 30, coldLat: 5 * time.Second, took: 80 * time.Millisecond}.play(s)
	st, _ = Evaluate(st, cfg, s.Snapshot(), t0.Add(time.Minute))
	got := st.History[0]
	p99 := BucketBound(bucketOf(80 * time.Millisecond))
	want := Interval{
		At: t0.Add(time.Minute), Weight: 10, Requests: 1000, Errors: 100, Cold: 30,
		ErrorRate: 0.1, P99: p99, P99Ms: float64(p99) / 1e6,
		Verdict: "fail: error rate 10.0% > 1.0% (100 of 1000 requests)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("interval\n got %+v\nwant %+v", got, want)
	}
}

func TestEvaluate_Unchanged(t *testing.T) {
	cfg := testConfig()
	s := NewStats()
	healthy.play(s)
	snap := s.Snapshot()
	progressing := Start(cfg, Snapshot{}, t0)
	failed := progressing
	failed.Phase, failed.Weight, failed.Reason = Failed, 0, "error rate 10.0% > 1.0% in 2 consecutive intervals"
	succeeded := progressing
	succeeded.Phase, succeeded.Weight, succeeded.Step = Succeeded, 100, 3
	tests := []struct {
		name string
		st   State
		now  time.Time
	}{
		{"not yet an interval", progressing, t0.Add(time.Minute - 1)},
		{"at the start", progressing, t0},
		{"clock went back", progressing, t0.Add(-time.Hour)},
		{"failed is terminal", failed, t0.Add(time.Hour)},
		{"succeeded is terminal", succeeded, t0.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Evaluate(tt.st, cfg, snap, tt.now)
			if changed || !reflect.DeepEqual(got, tt.st) {
				t.Errorf("Evaluate changed the state: %s (changed %v)", got, changed)
			}
		})
	}
}

func TestEvaluate_LateTickJudgesOnce(t *testing.T) {
	cfg := testConfig()
	s := NewStats()
	st := Start(cfg, s.Snapshot(), t0)
	healthy.play(s)
	st, _ = Evaluate(st, cfg, s.Snapshot(), t0.Add(10*time.Minute))
	if st.Weight != 25 || len(st.History) != 1 {
		t.Errorf("after a late tick: %s with %d intervals, want 25%% after one", st, len(st.History))
	}
}

func TestEvaluate_CounterReset(t *testing.T) {
	cfg := testConfig()
	before := NewStats()
	healthy.play(before)
	healthy.play(before)
	st := Start(cfg, before.Snapshot(), t0)
	// The gateway restarted: the new Stats begins at zero, below the baseline.
	after := NewStats()
	erring.play(after)
	st, _ = Evaluate(st, cfg, after.Snapshot(), t0.Add(time.Minute))
	if iv := st.History[0]; iv.Requests != 1000 || iv.Errors != 100 || st.Failures != 1 {
		t.Errorf("after a reset: %+v, failures %d; want the new counters judged (1000 requests, 100 errors, 1 failure)", iv, st.Failures)
	}
}

func TestEvaluate_JSONRoundTrip(t *testing.T) {
	cfg := testConfig()
	s := NewStats()
	st := Start(cfg, s.Snapshot(), t0)
	now := t0
	for _, tr := range []traffic{healthy, erring, {n: 10, took: 2 * time.Minute}} {
		tr.play(s)
		now = now.Add(cfg.Interval)
		st, _ = Evaluate(st, cfg, s.Snapshot(), now)
	}
	if st.History[2].P99 != Overflow {
		t.Fatalf("want an Overflow p99 in the history, got %s", st.History[2].P99)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip lost something:\n got %+v\nwant %+v", back, st)
	}
	erring.play(s)
	now = now.Add(cfg.Interval)
	want, wantChanged := Evaluate(st, cfg, s.Snapshot(), now)
	got, gotChanged := Evaluate(back, cfg, s.Snapshot(), now)
	if !reflect.DeepEqual(got, want) || gotChanged != wantChanged {
		t.Errorf("Evaluate after the round trip: %s (changed %v), want %s (changed %v)", got, gotChanged, want, wantChanged)
	}
	if want.Phase != Failed {
		t.Errorf("want the 4th interval to fail the rollout, got %s", want)
	}
}

func TestEvaluate_History(t *testing.T) {
	cfg := testConfig()
	s := NewStats()
	st := Start(cfg, s.Snapshot(), t0)
	for i := range MaxHistory + 20 {
		quiet.play(s)
		st, _ = Evaluate(st, cfg, s.Snapshot(), t0.Add(time.Duration(i+1)*time.Minute))
	}
	if len(st.History) != MaxHistory {
		t.Fatalf("%d history entries, want %d", len(st.History), MaxHistory)
	}
	if last := st.History[MaxHistory-1].At; !last.Equal(t0.Add((MaxHistory + 20) * time.Minute)) {
		t.Errorf("last entry at %s, want the latest interval", last)
	}
	if first := st.History[0].At; !first.Equal(t0.Add(21 * time.Minute)) {
		t.Errorf("first entry at %s, want the 21st interval", first)
	}

	// Evaluate does not write into the caller's History, even with spare capacity.
	in := st
	in.History = make([]Interval, 3, 10)
	copy(in.History, st.History)
	spare := in.History[:4]
	spare[3] = Interval{Verdict: "untouched"}
	quiet.play(s)
	out, _ := Evaluate(in, cfg, s.Snapshot(), t0.Add(200*time.Minute))
	if spare[3].Verdict != "untouched" || len(in.History) != 3 || len(out.History) != 4 {
		t.Errorf("Evaluate wrote into the input's History: %q, len in %d, out %d", spare[3].Verdict, len(in.History), len(out.History))
	}
}

func TestEvaluate_InvalidConfig(t *testing.T) {
	st := Start(testConfig(), Snapshot{}, t0)
	bad := testConfig()
	bad.Steps = []int{10, 50}
	got, changed := Evaluate(st, bad, Snapshot{}, t0)
	if got.Phase != Failed || got.Weight != 0 || !changed || !strings.Contains(got.Reason, "rollout.steps") {
		t.Errorf("Evaluate with an invalid config: %s (changed %v), want failed naming rollout.steps", got, changed)
	}
	if st := Start(bad, Snapshot{}, t0); st.Phase != Failed || st.Weight != 0 {
		t.Errorf("Start with an invalid config: %s, want failed at 0%%", st)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		fields []string // every field named, in order; none means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"no steps", func(c *Config) { c.Steps = nil }, []string{"rollout.steps"}},
		{"not increasing", func(c *Config) { c.Steps = []int{10, 50, 50, 100} }, []string{"rollout.steps[2]"}},
		{"over 100", func(c *Config) { c.Steps = []int{10, 150} }, []string{"rollout.steps[1]", "rollout.steps"}},
		{"zero step", func(c *Config) { c.Steps = []int{0, 100} }, []string{"rollout.steps[0]"}},
		{"last not 100", func(c *Config) { c.Steps = []int{10, 50} }, []string{"rollout.steps"}},
		{"no interval", func(c *Config) { c.Interval = 0 }, []string{"rollout.interval"}},
		{"error rate as a percent", func(c *Config) { c.MaxErrorRate = 1 }, []string{"rollout.max_error_rate"}},
		{"negative error rate", func(c *Config) { c.MaxErrorRate = -0.1 }, []string{"rollout.max_error_rate"}},
		{"negative p99", func(c *Config) { c.MaxP99 = -1 }, []string{"rollout.max_p99"}},
		{"no failures", func(c *Config) { c.Failures = 0 }, []string{"rollout.failures"}},
		{"negative min requests", func(c *Config) { c.MinRequests = -1 }, []string{"rollout.min_requests"}},
		{"everything at once", func(c *Config) { *c = Config{} }, []string{"rollout.steps", "rollout.interval", "rollout.failures"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			err := c.Validate()
			var fields []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *FieldError
					if !errors.As(e, &fe) {
						t.Fatalf("%v is not a *FieldError", e)
					}
					fields = append(fields, fe.Field)
					if !strings.HasPrefix(e.Error(), fe.Field+": ") {
						t.Errorf("%q does not start with its field", e)
					}
				}
			}
			if !reflect.DeepEqual(fields, tt.fields) {
				t.Errorf("Validate named %v, want %v (error: %v)", fields, tt.fields, err)
			}
		})
	}
}

func TestState_String(t *testing.T) {
	tests := []struct {
		st   State
		want string
	}{
		{State{Phase: Progressing, Step: 1, Weight: 25, Failures: 1}, "progressing at weight 25% (step 1), 1 consecutive bad intervals"},
		{State{Phase: Succeeded, Step: 3, Weight: 100}, "succeeded at weight 100%"},
		{State{Phase: Failed, Reason: "p99 1.2s > 500ms in 1 interval"}, "failed at weight 0: p99 1.2s > 500ms in 1 interval"},
	}
	for _, tt := range tests {
		t.Run(string(tt.st.Phase), func(t *testing.T) {
			if got := tt.st.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
}
