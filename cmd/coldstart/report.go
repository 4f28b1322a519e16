package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method; the median of an even count is the mean of the two
// middle values. Zero for no values.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if p == 50 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

var phaseHelp = map[string]string{
	"trigger":   "scale decision to the backend's Start call",
	"exec":      "fork and exec of the program (inside Start)",
	"ready":     "program started to readiness probe passing",
	"total":     "scale decision to ready",
	queuedPhase: "the request's wait in the activator",
}

// Overhead returns what tandem adds at the median: the median first answer
// through tandem minus the median exec-to-ready time.
func (r *Result) Overhead() time.Duration {
	return percentile(r.Cold, 50) - percentile(r.Exec, 50)
}

// Paired returns each round's first answer through tandem minus the same
// round's exec-to-ready time. The two runs of a round are seconds apart, so
// these differences suffer less from a shared machine's slow minutes than
// the difference of the medians does.
func (r *Result) Paired() []time.Duration {
	out := make([]time.Duration, 0, len(r.Cold))
	for i := range min(len(r.Cold), len(r.Exec)) {
		out = append(out, r.Cold[i]-r.Exec[i])
	}
	return out
}

// Print writes the report: both series, the overhead and tandem's phases.
func (r *Result) Print(w io.Writer, target time.Duration) {
	fmt.Fprintf(w, "cold start on the process backend, %d rounds\n", r.Rounds)
	fmt.Fprintf(w, "%-38s %10s %10s %10s\n", "", "median", "p90", "min")
	row := func(name string, ds []time.Duration) {
		fmt.Fprintf(w, "%-38s %10s %10s %10s\n", name, ms(percentile(ds, 50)), ms(percentile(ds, 90)), ms(slices.Min(ds)))
	}
	row("exec-to-ready (the program alone)", r.Exec)
	row("first answer through tandem", r.Cold)
	fmt.Fprintf(w, "%-38s %10s %10s %10s\n", "tandem adds (difference of the above)", ms(r.Overhead()),
		ms(percentile(r.Cold, 90)-percentile(r.Exec, 90)), ms(slices.Min(r.Cold)-slices.Min(r.Exec)))
	row("tandem adds (per round, paired)", r.Paired())
	if len(r.Phases) > 0 {
		fmt.Fprintln(w, "tandem's own account (means over the rounds, from /metrics):")
		for _, p := range r.Phases {
			fmt.Fprintf(w, "  %-8s %10s  (%d)  %s\n", p.Name, ms(p.Mean), p.Count, phaseHelp[p.Name])
		}
	}
	verdict := "met"
	if r.Overhead() >= target {
		verdict = "MISSED"
	}
	fmt.Fprintf(w, "target: tandem adds < %s at the median: %s\n", ms(target), verdict)
}
