package jobs

import (
	"strings"
	"testing"
	"time"
)

func TestRetryable(t *testing.T) {
	for status, want := range map[int]bool{0: true, 200: false, 204: false, 302: false, 400: false, 404: false, 413: false,
		429: true, 500: true, 502: true, 503: true, 504: true} {
		if got := Retryable(status); got != want {
			t.Errorf("Retryable(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{1, 0, 500 * time.Millisecond}, // half of 1s at the least jitter
		{1, 0.5, 750 * time.Millisecond},
		{2, 0, time.Second},
		{3, 0.5, 3 * time.Second}, // 4s: between 2 and 4
		{0, 0, 500 * time.Millisecond},
		{30, 0, 30 * time.Second}, // capped at 1m
		{30, 1, time.Minute},
	}
	for _, tt := range tests {
		if got := Backoff(tt.n, time.Second, time.Minute, tt.jitter); got.Round(time.Microsecond) != tt.want {
			t.Errorf("Backoff(%d, jitter %v) = %s, want %s", tt.n, tt.jitter, got, tt.want)
		}
	}
}

// TestPolicy_Steps walks jobs through attempts on a stepped clock.
func TestPolicy_Steps(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	lambda := Policy{Retries: 2, MaxAge: 6 * time.Hour, Backoff: time.Minute, MaxBackoff: 5 * time.Minute}
	type step struct {
		at     time.Duration // since t0
		status int           // the attempt's answer
		want   Status
		wantAt time.Duration // when a Queued job's next attempt is due (jitter 0)
	}
	tests := []struct {
		name   string
		p      Policy
		steps  []step
		reason string // of the last decision
	}{
		{name: "success at once", p: lambda, steps: []step{{0, 200, Succeeded, 0}}},
		{name: "client error is final, no retry", p: lambda, steps: []step{{0, 400, Failed, 0}}, reason: "the function answered 400"},
		{name: "two retries then dead letter", p: lambda, steps: []step{
			{0, 500, Queued, 30 * time.Second},
			{30 * time.Second, 503, Queued, 30*time.Second + time.Minute},
			{90 * time.Second, 500, Failed, 0},
		}, reason: "3 attempts failed, the last with 500 (retries: 2)"},
		{name: "retry succeeds", p: lambda, steps: []step{
			{0, 429, Queued, 30 * time.Second},
			{30 * time.Second, 200, Succeeded, 0},
		}},
		{name: "no retries", p: Policy{Retries: 0, MaxAge: time.Hour, Backoff: time.Second}, steps: []step{{0, 502, Failed, 0}}},
		{name: "a retry past max age fails now", p: Policy{Retries: 2, MaxAge: time.Minute, Backoff: time.Minute}, steps: []step{
			{0, 500, Queued, 30 * time.Second},
			{50 * time.Second, 500, Failed, 0},
		}, reason: "would pass max_event_age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &Job{CreatedAt: t0}
			var d Decision
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if ok, why := tt.p.Start(j, now); !ok {
					t.Fatalf("step %d: may not start: %s", i, why)
				}
				j.Attempts++
				d = tt.p.After(j, s.status, now, 0)
				if d.Status != s.want {
					t.Fatalf("step %d: %d -> %s (%s), want %s", i, s.status, d.Status, d.Reason, s.want)
				}
				if s.want == Queued && !d.At.Equal(t0.Add(s.wantAt)) {
					t.Errorf("step %d: next attempt at +%s, want +%s", i, d.At.Sub(t0), s.wantAt)
				}
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestPolicy_Start(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	p := Policy{Retries: 2, MaxAge: 6 * time.Hour}
	tests := []struct {
		name     string
		attempts int
		at       time.Duration
		ok       bool
		reason   string
	}{
		{"fresh", 0, 0, true, ""},
		{"at the age limit", 1, 6 * time.Hour, true, ""},
		{"past the age limit", 1, 6*time.Hour + time.Nanosecond, false, "older than max_event_age (6h0m0s) after 1 attempts"},
		{"last attempt interrupted by a restart", 3, time.Minute, false, "interrupted by a restart"},
		{"an earlier attempt interrupted", 2, time.Minute, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := p.Start(&Job{CreatedAt: t0, Attempts: tt.attempts}, t0.Add(tt.at))
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("Start = %v %q, want %v %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}
