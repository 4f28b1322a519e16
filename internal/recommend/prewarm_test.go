package recommend

import (
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

// burstEvery is a trace of a burst of n requests spread over spread every
// period, for total.
func burstEvery(period, spread time.Duration, n int, total time.Duration) *trace.Trace {
	tr := &trace.Trace{}
	for start := time.Duration(0); start < total; start += period {
		for i := range n {
			tr.Requests = append(tr.Requests, trace.Request{At: start + time.Duration(i)*spread/time.Duration(n)})
		}
	}
	return tr
}

// TestPrewarm_PredictiveBench replays a burst every 5 minutes through the
// autoscaler core in virtual time, as serverless and as serverless with
// predictive prewarm, and prints cold starts and instance time of both:
// prewarm must remove at least 80% of serverless's cold starts.
func TestPrewarm_PredictiveBench(t *testing.T) {
	const yaml = `name: bursty
runtime: {command: [fakemodel]}
scaling: {max: 4, idle_timeout: 30s}
`
	tr := burstEvery(5*time.Minute, 10*time.Second, 20, 3*time.Hour)
	tm := Timings{ColdStart: 1500 * time.Millisecond, Service: map[string][]time.Duration{"": {50 * time.Millisecond}}, Stop: 100 * time.Millisecond}
	plain := parse(t, yaml)
	warm := parse(t, yaml+"prewarm: [{predictive: true, lead: 30s}]\n")
	var res [2]*Result
	for i, m := range []*manifest.Manifest{plain, warm} {
		r, err := Simulate(tr, tm, Config{Manifest: m, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		res[i] = r
	}
	sl, pw := res[0], res[1]
	prices := cost.DefaultPrices()
	// Instance time priced at the dedicated (reserved) rate: a warm
	// instance waiting for a burst is paid for whatever serverless bills.
	reserved := func(r *Result) float64 { return prices.Cost(manifest.Dedicated, r.Usage) }
	removed := 1 - float64(pw.ColdStarts)/float64(sl.ColdStarts)
	t.Logf("trace: %d requests, a burst of 20 over 10s every 5m for 3h (36 bursts); cold start 1.5s; idle_timeout 30s", tr.Len())
	t.Logf("serverless:          %3d cold starts, %3d instance starts, %7.1f instance-s (%.1f idle), p99 %.0f ms, cost $%.4f (billed busy), $%.4f at reserved rates",
		sl.ColdStarts, sl.Starts, sl.Usage.Total().Seconds, sl.Usage.Idle.Seconds, sl.Latency.P99, sl.Cost, reserved(sl))
	t.Logf("predictive prewarm:  %3d cold starts, %3d instance starts, %7.1f instance-s (%.1f idle), p99 %.0f ms, cost $%.4f (billed busy), $%.4f at reserved rates",
		pw.ColdStarts, pw.Starts, pw.Usage.Total().Seconds, pw.Usage.Idle.Seconds, pw.Latency.P99, pw.Cost, reserved(pw))
	t.Logf("prewarm removes %.0f%% of cold starts for %+.1f instance-s (%+.0f%%), $%+.4f at reserved rates",
		100*removed, pw.Usage.Total().Seconds-sl.Usage.Total().Seconds,
		100*(pw.Usage.Total().Seconds/sl.Usage.Total().Seconds-1), reserved(pw)-reserved(sl))
	if sl.ColdStarts < 36 {
		t.Fatalf("serverless had %d cold starts on 36 bursts from zero: the trace does not test prewarm", sl.ColdStarts)
	}
	if removed < 0.8 {
		t.Errorf("predictive prewarm removed %.0f%% of cold starts (%d -> %d), want at least 80%%", 100*removed, sl.ColdStarts, pw.ColdStarts)
	}
	if pw.Errors != 0 || sl.Errors != 0 {
		t.Errorf("errors: serverless %d, prewarm %d", sl.Errors, pw.Errors)
	}
}
