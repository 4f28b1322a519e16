package manifest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rollout makes a deploy that changes the spec a progressive rollout
// (docs/rollout.md): the new revision gets Steps[0] percent of the
// traffic, then each next step after an Interval in which its own 5xx
// rate and p99 (cold starts apart) stayed within bounds; Failures bad
// intervals in a row send all traffic back to the previous revision.
type Rollout struct {
	// Steps are the new revision's shares in percent, increasing, the last
	// one 100. Default [10, 25, 50, 100].
	Steps []int `yaml:"steps,omitempty" json:"steps,omitempty"`
	// Interval is how long each step is measured. Default 30s.
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	// MaxErrorRate is the highest share of 5xx answers an interval may
	// have, as a percent such as "1%". Default "1%".
	MaxErrorRate string `yaml:"max_error_rate,omitempty" json:"max_error_rate,omitempty"`
	// MaxP99 is the highest p99 latency of warm requests an interval may
	// have; 0 (the default) does not check latency.
	MaxP99 Duration `yaml:"max_p99,omitempty" json:"max_p99,omitempty"`
	// Failures is how many bad intervals in a row roll back. Default 2.
	Failures int `yaml:"failures,omitempty" json:"failures,omitempty"`
	// MinRequests is how many requests an interval needs to be judged; one
	// with fewer holds the step. Default 20.
	MinRequests int `yaml:"min_requests,omitempty" json:"min_requests,omitempty"`
}

// Rollout defaults, Flagger's where it has one.
const (
	DefaultRolloutInterval     = 30 * time.Second
	DefaultRolloutMaxErrorRate = "1%"
	DefaultRolloutFailures     = 2
	DefaultRolloutMinRequests  = 20
)

// DefaultRolloutSteps are the shares a rollout without steps walks.
var DefaultRolloutSteps = []int{10, 25, 50, 100}

func (r *Rollout) setDefaults() {
	if r == nil {
		return
	}
	if len(r.Steps) == 0 {
		r.Steps = append([]int(nil), DefaultRolloutSteps...)
	}
	if r.Interval == 0 {
		r.Interval = Duration(DefaultRolloutInterval)
	}
	if r.MaxErrorRate == "" {
		r.MaxErrorRate = DefaultRolloutMaxErrorRate
	}
	if r.Failures == 0 {
		r.Failures = DefaultRolloutFailures
	}
	if r.MinRequests == 0 {
		r.MinRequests = DefaultRolloutMinRequests
	}
}

// ErrorRate returns MaxErrorRate as a fraction (0.01 for "1%").
func (r *Rollout) ErrorRate() (float64, error) {
	s := strings.TrimSpace(r.MaxErrorRate)
	if !strings.HasSuffix(s, "%") {
		return 0, fmt.Errorf("%q must be a percent such as \"1%%\"", r.MaxErrorRate)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("%q must be a percent from 0%% to 100%%", r.MaxErrorRate)
	}
	return v / 100, nil
}

func (r *Rollout) validate() []Problem {
	if r == nil {
		return nil
	}
	var probs []Problem
	bad := func(field, msg string, args ...any) {
		probs = append(probs, Problem{Field: field, Message: fmt.Sprintf(msg, args...)})
	}
	prev := 0
	for i, s := range r.Steps {
		if s <= prev || s > 100 {
			bad(fmt.Sprintf("rollout.steps[%d]", i), "%d must be above the step before it (%d) and at most 100", s, prev)
			break
		}
		prev = s
	}
	if len(r.Steps) > 0 && r.Steps[len(r.Steps)-1] != 100 {
		bad("rollout.steps", "the last step must be 100 (it ends with %d)", r.Steps[len(r.Steps)-1])
	}
	if d := r.Interval.D(); d < time.Second && d != 0 {
		bad("rollout.interval", "%s is too short: at least 1s", d)
	}
	if _, err := r.ErrorRate(); err != nil && r.MaxErrorRate != "" {
		bad("rollout.max_error_rate", "%v", err)
	}
	if r.MaxP99 < 0 {
		bad("rollout.max_p99", "must not be negative")
	}
	if r.Failures < 0 {
		bad("rollout.failures", "must not be negative")
	}
	if r.MinRequests < 0 {
		bad("rollout.min_requests", "must not be negative")
	}
	return probs
}
