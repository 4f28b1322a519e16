package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tandem/internal/testbin"
)

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 90, 7 * time.Millisecond},
		{"odd median", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"even median is the mean of the middle two", ms(4, 1, 2, 3), 50, 2500 * time.Microsecond},
		{"p90 of ten is the ninth", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 90, 9 * time.Millisecond},
		{"p90 of three is the largest", ms(1, 2, 3), 90, 3 * time.Millisecond},
		{"p100", ms(1, 2, 3), 100, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := append([]time.Duration(nil), tt.in...)
			if got := percentile(tt.in, tt.p); got != tt.want {
				t.Fatalf("percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
			}
			for i := range orig {
				if orig[i] != tt.in[i] {
					t.Fatal("percentile reordered its input")
				}
			}
		})
	}
}

const sampleMetrics = `# HELP tandem_instance_start_phase_seconds Instance start, split into phases.
# TYPE tandem_instance_start_phase_seconds histogram
tandem_instance_start_phase_seconds_bucket{model="coldstart",phase="exec",le="0.0005"} 0
tandem_instance_start_phase_seconds_sum{model="coldstart",phase="exec"} 0.004
tandem_instance_start_phase_seconds_count{model="coldstart",phase="exec"} 4
tandem_instance_start_phase_seconds_sum{model="coldstart",phase="ready"} 0.02
tandem_instance_start_phase_seconds_count{model="coldstart",phase="ready"} 4
tandem_instance_start_phase_seconds_sum{model="other",phase="ready"} 9
tandem_instance_start_phase_seconds_count{model="other",phase="ready"} 1
tandem_cold_start_wait_seconds_sum{model="coldstart"} 0.03
tandem_cold_start_wait_seconds_count{model="coldstart"} 5
tandem_requests_total{code="200",model="coldstart"} 12
go_goroutines 42
`

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]float64
		wantErr error
	}{
		{"tandem's families for one model", sampleMetrics, map[string]float64{
			"exec/sum": 0.004, "exec/count": 4, "ready/sum": 0.02, "ready/count": 4,
			"queued/sum": 0.03, "queued/count": 5,
		}, nil},
		{"escaped label values", `tandem_instance_start_phase_seconds_sum{model="coldstart",phase="a\"b\\c"} 1` + "\n",
			map[string]float64{`a"b\c/sum`: 1}, nil},
		{"a timestamp after the value", `tandem_cold_start_wait_seconds_count{model="coldstart"} 3 1700000000000` + "\n",
			map[string]float64{"queued/count": 3}, nil},
		{"empty", "", map[string]float64{}, nil},
		{"unterminated label", `tandem_cold_start_wait_seconds_sum{model="coldstart} 1`, nil, ErrMalformed},
		{"bad value", `tandem_cold_start_wait_seconds_sum{model="coldstart"} x`, nil, ErrMalformed},
		{"phase family without phase", `tandem_instance_start_phase_seconds_sum{model="coldstart"} 1`, nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetrics(strings.NewReader(tt.in), "coldstart")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("%s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(sampleMetrics)
	f.Add(`tandem_instance_start_phase_seconds_sum{model="coldstart",phase="x\` + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseMetrics(strings.NewReader(s), "coldstart")
		if err == nil && got == nil {
			t.Fatal("nil map without an error")
		}
	})
}

func TestPhaseMeans(t *testing.T) {
	before := map[string]float64{"exec/sum": 0.001, "exec/count": 1, "total/sum": 1, "total/count": 1}
	after := map[string]float64{
		"exec/sum": 0.005, "exec/count": 3, // 2 new, 4 ms in all: 2 ms each
		"total/sum": 1, "total/count": 1, // nothing new: left out
		"queued/sum": 0.009, "queued/count": 3,
		"trigger/sum": 0.0003, "trigger/count": 3,
		"zzz/sum": 0.002, "zzz/count": 2,
	}
	got := phaseMeans(before, after)
	want := []Phase{
		{Name: "trigger", Mean: 100 * time.Microsecond, Count: 3},
		{Name: "exec", Mean: 2 * time.Millisecond, Count: 2},
		{Name: "queued", Mean: 3 * time.Millisecond, Count: 3},
		{Name: "zzz", Mean: time.Millisecond, Count: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		d := got[i].Mean - want[i].Mean
		if got[i].Name != want[i].Name || got[i].Count != want[i].Count || d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("phase %d = %+v, want %+v (all: %+v)", i, got[i], want[i], got)
		}
	}
}

// TestMeasure runs the whole measurement against the real tandem and
// fakemodel, for two rounds, and checks what it reports (never how fast).
func TestMeasure(t *testing.T) {
	tandem := testbin.Build(t, "tandem/cmd/tandem")
	model := testbin.Build(t, "tandem/cmd/fakemodel")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := Measure(ctx, Config{
		Tandem: tandem, Model: model, Health: "/health", Path: "/pid", Rounds: 2,
		Tick: 100 * time.Millisecond, IdleTimeout: time.Second, WorkDir: t.TempDir(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Exec) != 2 || len(res.Cold) != 2 {
		t.Fatalf("got %d exec and %d cold samples, want 2 each", len(res.Exec), len(res.Cold))
	}
	for i := range res.Exec {
		if res.Exec[i] <= 0 || res.Cold[i] <= 0 {
			t.Fatalf("round %d: non-positive durations %v %v", i, res.Exec[i], res.Cold[i])
		}
	}
	seen := map[string]int{}
	for _, p := range res.Phases {
		seen[p.Name] = p.Count
	}
	for _, name := range []string{"trigger", "exec", "ready", "total", "queued"} {
		if seen[name] != 2 {
			t.Errorf("phase %s observed %d times, want 2 (one per round); phases: %+v", name, seen[name], res.Phases)
		}
	}
	if got := strings.Count(progress.String(), "\n"); got != 2 {
		t.Errorf("progress has %d lines, want one per round:\n%s", got, progress.String())
	}
	var out bytes.Buffer
	res.Print(&out, 5*time.Millisecond)
	for _, want := range []string{"exec-to-ready", "first answer through tandem", "tandem adds", "target:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRun_FlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"nothing", nil},
		{"no model", []string{"-tandem", "x"}},
		{"zero rounds", []string{"-tandem", "x", "-model", "y", "-n", "0"}},
		{"unknown flag", []string{"-bogus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
		})
	}
}

func TestResult_Overhead(t *testing.T) {
	ms := time.Millisecond
	r := &Result{
		Rounds: 3,
		Exec:   []time.Duration{4 * ms, 10 * ms, 5 * ms},
		Cold:   []time.Duration{6 * ms, 11 * ms, 9 * ms},
	}
	if got, want := r.Overhead(), 9*ms-5*ms; got != want {
		t.Fatalf("Overhead() = %v, want %v (median 9 ms - median 5 ms)", got, want)
	}
	want := []time.Duration{2 * ms, 1 * ms, 4 * ms}
	got := r.Paired()
	if len(got) != len(want) {
		t.Fatalf("Paired() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Paired() = %v, want %v", got, want)
		}
	}
}
