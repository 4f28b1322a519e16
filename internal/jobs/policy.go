package jobs

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"tandem/internal/manifest"
)

// Policy is how one deployment's jobs are retried.
type Policy struct {
	// Retries is how many attempts may follow a failed one.
	Retries int
	// MaxAge bounds how long after acceptance an attempt may start.
	MaxAge time.Duration
	// Backoff is the wait before the first retry; each next one doubles
	// it, up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// OnSuccess and OnFailure are destination URLs ("" = none).
	OnSuccess, OnFailure string
}

// PolicyOf is the policy of a deployment's manifest (its async block, or
// the defaults) with the given backoff.
func PolicyOf(m *manifest.Manifest, backoff, maxBackoff time.Duration) Policy {
	a := m.AsyncOrDefault()
	return Policy{Retries: *a.Retries, MaxAge: a.MaxEventAge.D(), Backoff: backoff, MaxBackoff: maxBackoff,
		OnSuccess: a.OnSuccess, OnFailure: a.OnFailure}
}

// Retryable reports whether an attempt that ended with status may go
// again: the gateway could not deliver it (502, 503, 504: no instance, a
// full queue, an instance that died or timed out), the function failed
// (5xx), or someone said later (429). Any other answer, 4xx included, is
// the function's final word.
func Retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500 || status == 0
}

// Backoff is the wait before retry n (1 = the first retry): base doubled
// n-1 times, capped at max, then jittered to between half and all of it
// (jitter in [0, 1)), so jobs that failed together do not retry together.
func Backoff(n int, base, max time.Duration, jitter float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := float64(base) * math.Pow(2, float64(n-1))
	if max > 0 && d > float64(max) {
		d = float64(max)
	}
	return time.Duration(d/2 + jitter*d/2)
}

// Decision is what happens to a job after an attempt.
type Decision struct {
	Status Status // Queued (retry at At), Succeeded or Failed
	At     time.Time
	Reason string
}

// Expired reports whether a job accepted at created may no longer start an
// attempt at now.
func (p Policy) Expired(created, now time.Time) bool {
	return p.MaxAge > 0 && now.Sub(created) > p.MaxAge
}

// Start decides whether a job may start its next attempt at now. ok false
// means it fails instead, for the reason given.
func (p Policy) Start(j *Job, now time.Time) (ok bool, reason string) {
	if p.Expired(j.CreatedAt, now) {
		return false, fmt.Sprintf("older than max_event_age (%s) after %d attempts", p.MaxAge, j.Attempts)
	}
	if j.Attempts > p.Retries {
		// Only after a restart that interrupted the last attempt.
		return false, fmt.Sprintf("its last attempt (%d of %d) was interrupted by a restart of tandem", j.Attempts, p.Retries+1)
	}
	return true, ""
}

// After decides what follows attempt number j.Attempts, which ended with
// status (0: it could not be made) at now; jitter is in [0, 1).
func (p Policy) After(j *Job, status int, now time.Time, jitter float64) Decision {
	if !Retryable(status) {
		if status >= 200 && status < 400 {
			return Decision{Status: Succeeded}
		}
		return Decision{Status: Failed, Reason: fmt.Sprintf("the function answered %d", status)}
	}
	if j.Attempts > p.Retries {
		return Decision{Status: Failed, Reason: fmt.Sprintf("%d attempts failed, the last with %d (retries: %d)", j.Attempts, status, p.Retries)}
	}
	at := now.Add(Backoff(j.Attempts, p.Backoff, p.MaxBackoff, jitter))
	if p.Expired(j.CreatedAt, at) {
		return Decision{Status: Failed, Reason: fmt.Sprintf("attempt %d failed with %d and a retry would pass max_event_age (%s)", j.Attempts, status, p.MaxAge)}
	}
	return Decision{Status: Queued, At: at, Reason: fmt.Sprintf("attempt %d failed with %d; retrying", j.Attempts, status)}
}
