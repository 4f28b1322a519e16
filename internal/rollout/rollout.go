package rollout

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is a manifest's rollout block, already parsed.
type Config struct {
	Steps        []int         // percents, increasing, last one 100, e.g. [10 25 50 100]
	Interval     time.Duration // how long each analysis interval lasts
	MaxErrorRate float64       // fraction, 0.01 for "1%"; 0 = not checked
	MaxP99       time.Duration // 0 = not checked
	Failures     int           // consecutive bad intervals that roll back (>= 1)
	MinRequests  int64         // an interval with fewer requests is neither good nor bad (held); with 0 an idle interval passes
}

// FieldError is one problem of a Config, with the manifest field it is in.
type FieldError struct {
	Field   string // e.g. "rollout.steps[2]"
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Validate reports every problem of c, each as a *FieldError, joined.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, msg string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Message: fmt.Sprintf(msg, args...)})
	}
	if len(c.Steps) == 0 {
		bad("rollout.steps", "required: percents of traffic, increasing, ending at 100 (e.g. [10, 25, 50, 100])")
	}
	for i, w := range c.Steps {
		switch {
		case w < 1 || w > 100:
			bad(fmt.Sprintf("rollout.steps[%d]", i), "%d must be a percent from 1 to 100", w)
		case i > 0 && w <= c.Steps[i-1]:
			bad(fmt.Sprintf("rollout.steps[%d]", i), "%d must be more than the step before (%d)", w, c.Steps[i-1])
		}
	}
	if n := len(c.Steps); n > 0 && c.Steps[n-1] != 100 {
		bad("rollout.steps", "the last step must be 100, not %d", c.Steps[n-1])
	}
	if c.Interval <= 0 {
		bad("rollout.interval", "must be more than 0, not %s", c.Interval)
	}
	if !(c.MaxErrorRate >= 0 && c.MaxErrorRate < 1) {
		bad("rollout.max_error_rate", "%g must be a fraction from 0 (not checked) to below 1", c.MaxErrorRate)
	}
	if c.MaxP99 < 0 {
		bad("rollout.max_p99", "must not be negative (0 = not checked), not %s", c.MaxP99)
	}
	if c.Failures < 1 {
		bad("rollout.failures", "must be at least 1, not %d", c.Failures)
	}
	if c.MinRequests < 0 {
		bad("rollout.min_requests", "must not be negative, not %d", c.MinRequests)
	}
	return errors.Join(errs...)
}

// Phase is where a rollout stands.
type Phase string

// The phases. Succeeded and Failed are terminal.
const (
	Progressing Phase = "progressing"
	Succeeded   Phase = "succeeded"
	Failed      Phase = "failed"
)

// MaxHistory is how many evaluated intervals State.History keeps.
const MaxHistory = 50

// State is where a rollout stands. It is the rollout's only memory and
// round-trips through encoding/json (it is stored and shown by `tandem
// rollout status`).
type State struct {
	Phase         Phase     `json:"phase"`
	Step          int       `json:"step"`             // index into Config.Steps of the current weight
	Weight        int       `json:"weight"`           // the new revision's percent now
	Failures      int       `json:"failures"`         // consecutive bad intervals so far
	Reason        string    `json:"reason,omitempty"` // why it failed
	StartedAt     time.Time `json:"started_at"`
	IntervalStart time.Time `json:"interval_start"`
	// Baseline is the revision's cumulative Snapshot when the current
	// interval started; the interval's window is measured from it.
	Baseline Snapshot   `json:"baseline"`
	History  []Interval `json:"history"` // the last MaxHistory evaluated intervals, oldest first
}

// String formats s for logs.
func (s State) String() string {
	switch s.Phase {
	case Failed:
		return fmt.Sprintf("failed at weight 0: %s", s.Reason)
	case Succeeded:
		return fmt.Sprintf("succeeded at weight %d%%", s.Weight)
	}
	return fmt.Sprintf("%s at weight %d%% (step %d), %d consecutive bad intervals", s.Phase, s.Weight, s.Step, s.Failures)
}

// Interval is one evaluated analysis interval, for status display.
type Interval struct {
	At        time.Time     `json:"at"`
	Weight    int           `json:"weight"` // the weight the interval ran at
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"`
	Cold      int64         `json:"cold"`
	ErrorRate float64       `json:"error_rate"`
	P99       time.Duration `json:"p99"`     // of warm requests; Overflow past the last bucket
	P99Ms     float64       `json:"p99_ms"`  // P99 in milliseconds, for people
	Verdict   string        `json:"verdict"` // "pass", "fail: <why>" or "hold: <why>"
}

// Start begins a rollout at now: the weight is Steps[0] and the window of
// the first interval is measured from snap. A cfg that does not Validate
// gives a Failed state whose Reason says why.
func Start(cfg Config, snap Snapshot, now time.Time) State {
	st := State{
		Phase:         Progressing,
		Step:          0,
		StartedAt:     now,
		IntervalStart: now,
		Baseline:      snap,
	}
	if err := cfg.Validate(); err != nil {
		st.Phase, st.Reason = Failed, invalid(err)
		return st
	}
	st.Weight = cfg.Steps[0]
	return st
}

func invalid(err error) string {
	return "invalid rollout config: " + strings.ReplaceAll(err.Error(), "\n", "; ")
}

// Evaluate returns the state after now, and whether the weight changed.
// It is pure: st is not modified (History is copied).
//
// Terminal states come back unchanged, and so does st until cfg.Interval
// has passed since st.IntervalStart. Otherwise the interval's window is
// snap minus st.Baseline and it is judged:
//   - fewer than cfg.MinRequests requests: held; a new interval starts and
//     Failures is unchanged;
//   - error rate over cfg.MaxErrorRate or p99 over cfg.MaxP99 (by at least
//     the bucket MaxP99 falls in, see judge): Failures
//     goes up by one, and when it reaches cfg.Failures the rollout fails
//     with weight 0 and a Reason naming the metric, its value and the
//     threshold;
//   - otherwise good: Failures goes back to 0 and the weight moves to the
//     next step; a good interval at the last step (100) succeeds.
//
// A cfg that does not Validate (say, the manifest changed mid-rollout)
// fails the rollout with weight 0.
func Evaluate(st State, cfg Config, snap Snapshot, now time.Time) (State, bool) {
	if st.Phase == Failed || st.Phase == Succeeded {
		return st, false
	}
	if err := cfg.Validate(); err != nil {
		return fail(st, invalid(err))
	}
	if now.Sub(st.IntervalStart) < cfg.Interval {
		return st, false
	}

	win := snap.Sub(st.Baseline)
	if win.negative() {
		win = snap // counters were reset after the baseline was taken
	}
	iv := Interval{
		At:        now,
		Weight:    st.Weight,
		Requests:  win.Requests,
		Errors:    win.Errors,
		Cold:      win.Cold,
		ErrorRate: win.ErrorRate(),
		P99:       win.Quantile(0.99),
	}
	iv.P99Ms = float64(iv.P99) / float64(time.Millisecond)

	next := st
	next.Baseline = snap
	next.IntervalStart = now
	changed := false

	switch why := judge(win, iv, cfg); {
	case win.Requests < cfg.MinRequests:
		iv.Verdict = fmt.Sprintf("hold: only %d requests (< min_requests %d)", win.Requests, cfg.MinRequests)
	case why != "":
		iv.Verdict = "fail: " + why
		next.Failures++
		if next.Failures >= cfg.Failures {
			in := "in 1 interval"
			if next.Failures > 1 {
				in = fmt.Sprintf("in %d consecutive intervals", next.Failures)
			}
			next.Phase = Failed
			next.Reason = fmt.Sprintf("%s %s", why, in)
			changed = next.Weight != 0
			next.Weight = 0
		}
	default:
		iv.Verdict = "pass"
		next.Failures = 0
		step := min(st.Step, len(cfg.Steps)-1) // the steps may have been shortened
		if step == len(cfg.Steps)-1 {
			next.Phase = Succeeded
			next.Step = step
			changed = next.Weight != 100
			next.Weight = 100
		} else {
			next.Step = step + 1
			next.Weight = cfg.Steps[next.Step]
			changed = next.Weight != st.Weight
		}
	}
	next.History = appendHistory(st.History, iv)
	return next, changed
}

// judge returns why the window is bad, or "" when it is good.
func judge(win Snapshot, iv Interval, cfg Config) string {
	var why []string
	if cfg.MaxErrorRate > 0 && iv.ErrorRate > cfg.MaxErrorRate {
		why = append(why, fmt.Sprintf("error rate %s > %s (%d of %d requests)",
			percent(iv.ErrorRate), percent(cfg.MaxErrorRate), win.Errors, win.Requests))
	}
	// The p99 is known to a bucket: fail only when its whole bucket is above
	// the threshold's, so the true p99 is certainly over MaxP99. One that is
	// up to a bucket (10%) over passes; one just under never fails.
	if cfg.MaxP99 > 0 && iv.P99 > BucketBound(bucketOf(cfg.MaxP99)) {
		why = append(why, fmt.Sprintf("p99 %s > %s", latency(iv.P99), cfg.MaxP99))
	}
	return strings.Join(why, " and ")
}

func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// latency formats a bucket bound; Overflow is "> the last finite bound".
func latency(d time.Duration) string {
	if d == Overflow {
		return "> " + bounds[len(bounds)-1].String()
	}
	return d.String()
}

func fail(st State, reason string) (State, bool) {
	changed := st.Weight != 0
	st.Phase, st.Reason, st.Weight = Failed, reason, 0
	return st, changed
}

// appendHistory returns a new slice, so the caller's State keeps its own.
func appendHistory(h []Interval, iv Interval) []Interval {
	if len(h) >= MaxHistory {
		h = h[len(h)-MaxHistory+1:]
	}
	out := make([]Interval, 0, len(h)+1)
	return append(append(out, h...), iv)
}
