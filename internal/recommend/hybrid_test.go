package recommend

import (
	"testing"
	"time"

	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

// cycle is a baseline of base requests a second with a peak of spike
// requests at once every `every`: a day's cycle, compressed.
func cycle(base float64, every time.Duration, spike int, d time.Duration) *trace.Trace {
	tr := &trace.Trace{}
	step := time.Duration(float64(time.Second) / base)
	next := every / 2
	for at := time.Duration(0); at < d; at += step {
		for next <= at {
			for range spike {
				tr.Requests = append(tr.Requests, trace.Request{At: next})
			}
			next += every
		}
		tr.Requests = append(tr.Requests, trace.Request{At: at})
	}
	return tr
}

// Three held-out traces, one objective: steady traffic is cheapest on
// dedicated instances (at the min that carries it), sporadic traffic on
// serverless, and a baseline with recurring peaks on a hybrid floor that
// carries the baseline plus burst instances billed as serverless for the
// peaks. Dedicated and hybrid are searched over every floor, so a hybrid
// that never bursts does not pass for a hybrid win.
func TestRecommend_PicksEachMode(t *testing.T) {
	m := parse(t, "name: fake\nruntime: {command: [fakemodel]}\nscaling:\n  max: 8\n  container_concurrency: 1\n")
	tm := Timings{ColdStart: 500 * time.Millisecond, Service: map[string][]time.Duration{"": {200 * time.Millisecond}}}
	slo, err := ParseSLO("p99=2s")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		tr    *trace.Trace
		want  manifest.Mode
		floor int
	}{
		{"steady", generate(t, loadgen.Constant, 10, 20*time.Minute), manifest.Dedicated, 2},
		{"sporadic", generate(t, loadgen.Sporadic, 0.05, time.Hour), manifest.Serverless, 0},
		{"daily cycle", cycle(4, 2*time.Minute, 12, 20*time.Minute), manifest.Hybrid, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Recommend(Input{Manifest: m, Trace: tc.tr, Timings: tm, SLO: slo, NoBreakEven: true})
			if err != nil {
				t.Fatal(err)
			}
			if rec.Best != tc.want {
				t.Fatalf("best %s, want %s: %s", rec.Best, tc.want, rec.Reason)
			}
			for _, r := range rec.Modes {
				if r.Mode != tc.want {
					continue
				}
				if r.Floor != tc.floor {
					t.Errorf("%s floor %d, want %d: %s", r.Mode, r.Floor, tc.floor, rec.Reason)
				}
				if r.Mode == manifest.Hybrid {
					if r.Usage.Burst.Busy.Seconds <= 0 {
						t.Errorf("the hybrid win has no burst time: %+v", r.Usage.Burst)
					}
					if len(r.Candidates) != 8 {
						t.Errorf("%d candidates, want floors 1..8", len(r.Candidates))
					}
				}
			}
			t.Logf("%s: %s", tc.name, rec.Reason)
		})
	}
}
