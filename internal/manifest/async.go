package manifest

import (
	"fmt"
	"net/url"
	"time"
)

// Async sets how the deployment's asynchronous invocations (jobs:
// `Prefer: respond-async`, POST /v1/async/{name}/..., Lambda's Event
// invocations) are retried and where their results go (docs/async.md).
// Absent means the defaults, which are Lambda's.
type Async struct {
	// Retries is how many more attempts a job gets after its first failed
	// (a transport failure, 429 or 5xx). nil: 2.
	Retries *int `yaml:"retries,omitempty" json:"retries,omitempty"`
	// MaxEventAge is how long after its acceptance a job may still start
	// an attempt; older, it goes to the dead-letter list.
	MaxEventAge Duration `yaml:"max_event_age,omitempty" json:"max_event_age,omitempty"`
	// OnSuccess and OnFailure are URLs that receive a POST of the job's
	// record (id, status, attempts, the answer) when it ends that way.
	OnSuccess string `yaml:"on_success,omitempty" json:"on_success,omitempty"`
	OnFailure string `yaml:"on_failure,omitempty" json:"on_failure,omitempty"`
}

// Async defaults, as Lambda's.
const (
	DefaultAsyncRetries     = 2
	DefaultAsyncMaxEventAge = 6 * time.Hour
	// MaxAsyncRetries and MaxAsyncEventAge bound what a manifest may ask
	// (Lambda's bounds too).
	MaxAsyncRetries  = 2
	MaxAsyncEventAge = 6 * time.Hour
	MinAsyncEventAge = time.Minute
)

// AsyncOrDefault returns the deployment's async settings with the
// defaults filled in, also when the manifest has no async block.
func (m *Manifest) AsyncOrDefault() Async {
	a := Async{}
	if m.Async != nil {
		a = *m.Async
	}
	a.setDefaults()
	return a
}

func (a *Async) setDefaults() {
	if a == nil {
		return
	}
	if a.Retries == nil {
		n := DefaultAsyncRetries
		a.Retries = &n
	}
	if a.MaxEventAge == 0 {
		a.MaxEventAge = Duration(DefaultAsyncMaxEventAge)
	}
}

func (a *Async) validate() []Problem {
	if a == nil {
		return nil
	}
	var probs []Problem
	bad := func(field, msg string, args ...any) {
		probs = append(probs, Problem{Field: field, Message: fmt.Sprintf(msg, args...)})
	}
	if a.Retries != nil && (*a.Retries < 0 || *a.Retries > MaxAsyncRetries) {
		bad("async.retries", "%d is out of range: 0 to %d", *a.Retries, MaxAsyncRetries)
	}
	if d := a.MaxEventAge.D(); d != 0 && (d < MinAsyncEventAge || d > MaxAsyncEventAge) {
		bad("async.max_event_age", "%s is out of range: %s to %s", d, MinAsyncEventAge, MaxAsyncEventAge)
	}
	for field, u := range map[string]string{"async.on_success": a.OnSuccess, "async.on_failure": a.OnFailure} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad(field, "%q must be an http:// or https:// URL", u)
		}
	}
	return probs
}
