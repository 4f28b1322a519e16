package recommend

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

func TestParseSLO(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "p99=300ms", want: "p99<=300ms"},
		{in: " P50 = 20ms , max=2s", want: "p50<=20ms,max<=2s"},
		{in: "", want: ""},
		{in: "p99", wantErr: true},
		{in: "p42=1s", wantErr: true},
		{in: "p99=fast", wantErr: true},
		{in: "p99=-1s", wantErr: true},
	}
	for _, tt := range tests {
		s, err := ParseSLO(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrSLO) {
				t.Errorf("ParseSLO(%q) = %v, want ErrSLO", tt.in, err)
			}
			continue
		}
		if err != nil || s.String() != tt.want {
			t.Errorf("ParseSLO(%q) = %q, %v; want %q", tt.in, s, err, tt.want)
		}
	}
	slo, _ := ParseSLO("p50=20ms,p99=300ms")
	if miss := slo.Check(loadgen.Latency{P50: 10, P99: 450}); len(miss) != 1 || miss[0] != "p99 450ms > 300ms" {
		t.Fatalf("Check = %q", miss)
	}
}

func generate(t testing.TB, p loadgen.Pattern, rate float64, d time.Duration) *trace.Trace {
	t.Helper()
	tr, err := loadgen.Generate(loadgen.Spec{Pattern: p, Rate: rate, Duration: d, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestRecommend(t *testing.T) {
	m := parse(t, fake)
	tm := Timings{ColdStart: 500 * time.Millisecond, Service: map[string][]time.Duration{"": {10 * time.Millisecond}}}
	sparse := generate(t, loadgen.Sporadic, 0.05, time.Hour)
	steady := generate(t, loadgen.Constant, 100, 10*time.Minute)
	tests := []struct {
		name         string
		tr           *trace.Trace
		slo          string
		wantBest     manifest.Mode
		wantCheapest manifest.Mode
	}{
		{name: "sparse, loose objective", tr: sparse, slo: "p99=1s", wantBest: manifest.Serverless, wantCheapest: manifest.Serverless},
		// Every sparse request is a cold start: 510 ms.
		{name: "sparse, tight objective", tr: sparse, slo: "p99=100ms", wantBest: manifest.Dedicated, wantCheapest: manifest.Serverless},
		{name: "steady", tr: steady, slo: "p99=300ms", wantBest: manifest.Dedicated, wantCheapest: manifest.Dedicated},
		{name: "nothing meets it", tr: steady, slo: "p50=1ms", wantBest: "", wantCheapest: manifest.Dedicated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slo, err := ParseSLO(tt.slo)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := Recommend(Input{Manifest: m, Trace: tt.tr, Timings: tm, SLO: slo, NoBreakEven: true})
			if err != nil {
				t.Fatal(err)
			}
			if rec.Best != tt.wantBest || rec.Cheapest != tt.wantCheapest {
				t.Fatalf("best %q cheapest %q, want %q %q; %s", rec.Best, rec.Cheapest, tt.wantBest, tt.wantCheapest, rec.Reason)
			}
			if len(rec.Modes) != 3 || rec.Modes[0].Mode != manifest.Serverless || rec.Modes[1].Mode != manifest.Dedicated || rec.Modes[2].Mode != manifest.Hybrid {
				t.Fatalf("modes %+v", rec.Modes)
			}
			if !strings.Contains(rec.Reason, string(tt.wantCheapest)) {
				t.Fatalf("reason %q does not name %s", rec.Reason, tt.wantCheapest)
			}
		})
	}
}

// TestRecommend_breakEven checks the break-even rate against the one
// worked out by hand for Poisson traffic: dedicated keeps one instance
// (1 vCPU, 2 GB: $0.04937 an hour, $1.3714e-5 a second); serverless pays
// $0.20 per million requests plus 2 GB × $0.0000166667 per second of busy
// time, and with 10 ms requests an instance is busy 1 - e^(-0.01λ) of the
// time. The two meet near λ = 27.9 requests a second.
func TestRecommend_breakEven(t *testing.T) {
	m := parse(t, fake)
	tm := Timings{ColdStart: 500 * time.Millisecond, Service: map[string][]time.Duration{"": {10 * time.Millisecond}}}
	rec, err := Recommend(Input{Manifest: m, Trace: at(1), Timings: tm})
	if err != nil {
		t.Fatal(err)
	}
	be := rec.BreakEven
	if be == nil || be.Below != manifest.Serverless || be.Above != manifest.Dedicated || be.Rate < 26 || be.Rate > 30 {
		t.Fatalf("break-even %+v, want about 27.9/s, serverless below, dedicated above", be)
	}
}

func TestFormatMoney(t *testing.T) {
	for v, want := range map[float64]string{0: "$0", 12.345: "$12.35", 0.12345: "$0.1235", 0.0000456: "$0.0000456", 0.00123: "$0.00123"} {
		if got := FormatMoney(v, "USD"); got != want {
			t.Errorf("FormatMoney(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatMoney(1.5, "EUR"); got != "EUR 1.5000" {
		t.Errorf("EUR: %q", got)
	}
}

// BenchmarkRecommend_day simulates a day of one million requests shaped
// like a day (the sine pattern), read from a trace file, with the
// break-even search: the whole of `tandem recommend` after measuring.
func BenchmarkRecommend_day(b *testing.B) {
	tr := generate(b, loadgen.Sine, 1e6/86400.0, 24*time.Hour)
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		b.Fatal(err)
	}
	csv := buf.Bytes()
	m := parse(b, "name: day\nruntime: {command: [x]}\nscaling: {max: 10}\n")
	tm := Timings{ColdStart: 400 * time.Millisecond, Service: map[string][]time.Duration{"": {2 * time.Millisecond, 3 * time.Millisecond, 8 * time.Millisecond}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr, err := trace.Parse(bytes.NewReader(csv), "day.csv")
		if err != nil {
			b.Fatal(err)
		}
		rec, err := Recommend(Input{Manifest: m, Trace: tr, Timings: tm})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.Logf("%d requests; %s; break-even %.1f/s", tr.Len(), rec.Reason, rec.BreakEven.Rate)
		}
	}
}
