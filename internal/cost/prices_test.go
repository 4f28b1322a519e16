package cost

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"tandem/internal/manifest"
	"tandem/internal/testbin"
)

// TestDefaultPrices keeps prices/default.yaml and DefaultPrices equal.
func TestDefaultPrices(t *testing.T) {
	p, err := LoadPrices(filepath.Join(testbin.RepoRoot(t), "prices", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, DefaultPrices()) {
		t.Fatalf("prices/default.yaml = %+v\nDefaultPrices() = %+v", p, DefaultPrices())
	}
	// Every field is written out in the file, so it documents them all.
	raw, _ := os.ReadFile(filepath.Join(testbin.RepoRoot(t), "prices", "default.yaml"))
	empty, err := ParsePrices([]byte("currency: X\ninstance: {cpu: 0, memory: 0}\nserverless: {gb_second: 0, gpu_second: 0, per_million_requests: 0, bill_startup: false}\ndedicated: {vcpu_hour: 0, gb_hour: 0, gpu_hour: 0}\nreserved: {vcpu_hour: 0, gb_hour: 0, gpu_hour: 0}\ntemplate: {gb_hour: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*empty, Prices{Currency: "X"}) {
		t.Fatalf("a file that sets every field to zero left %+v; a field is missing from the test", empty)
	}
	for _, key := range []string{"gb_second:", "gpu_second:", "per_million_requests:", "bill_startup:", "vcpu_hour:", "gb_hour:", "gpu_hour:", "cpu:", "memory:", "currency:", "reserved:", "template:"} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("prices/default.yaml does not set %s", key)
		}
	}
}

func TestParsePrices(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(p *Prices) bool
		wantErr string
	}{
		{name: "empty keeps defaults", in: "", check: func(p *Prices) bool { return reflect.DeepEqual(p, DefaultPrices()) }},
		{name: "override one price", in: "dedicated:\n  vcpu_hour: 0.05\n", check: func(p *Prices) bool {
			return p.Dedicated.VCPUHour == 0.05 && p.Dedicated.GBHour == DefaultPrices().Dedicated.GBHour
		}},
		{name: "memory size", in: "instance: {memory: 512Mi}\n", check: func(p *Prices) bool { return p.Instance.Memory == 512<<20 }},
		{name: "unknown field", in: "serverless:\n  gb_seconds: 1\n", wantErr: "gb_seconds"},
		{name: "negative price", in: "dedicated: {gb_hour: -1}\n", wantErr: "dedicated.gb_hour"},
		{name: "no currency", in: "currency: \"\"\n", wantErr: "currency: required"},
		{name: "not a number", in: "serverless: {gb_second: cheap}\n", wantErr: "cheap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePrices([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidPrices) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want ErrInvalidPrices mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(p) {
				t.Fatalf("got %+v", p)
			}
		})
	}
}

func TestPrices_Cost(t *testing.T) {
	p := DefaultPrices()
	big := p.SizeOf(manifest.Resources{CPU: 4, Memory: 8 << 30, GPUs: 1})
	def := p.SizeOf(manifest.Resources{})
	if def != (Size{CPU: 1, GB: 2}) || big != (Size{CPU: 4, GB: 8, GPUs: 1}) {
		t.Fatalf("sizes %+v %+v", def, big)
	}
	hour := Of(big, 1, time.Hour)
	u := Usage{Starting: Of(big, 1, time.Minute), Busy: hour, Idle: Of(big, 2, time.Hour), Requests: 3_000_000, Floor: Of(big, 1, 10*time.Hour)}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		// 3h01m of a 4 vCPU, 8 GB, 1 GPU instance: 4×0.04048 + 8×0.004445 + 0.526 = 0.72348 per hour.
		{"dedicated", p.Cost(manifest.Dedicated, u), 0.72348 * (3 + 1.0/60)},
		{"dedicated idle", p.IdleCost(manifest.Dedicated, u), 0.72348 * 2},
		// 3660 s serving and starting × (8 GB × 0.0000166667 + 0.0001867) + 3 × 0.20.
		{"serverless", p.Cost(manifest.Serverless, u), 3660*(8*0.0000166667+0.0001867) + 0.6},
		{"serverless idle", p.IdleCost(manifest.Serverless, u), 0},
		// The floor (10 h) is more than the instance time (3h01m).
		{"dedicated if", p.CostIf(manifest.Dedicated, u), 0.72348 * 10},
	}
	for _, tt := range tests {
		if math.Abs(tt.got-tt.want) > 1e-9 {
			t.Errorf("%s = %.9f, want %.9f", tt.name, tt.got, tt.want)
		}
	}
	p.Serverless.BillStartup = false
	if got, want := p.Cost(manifest.Serverless, u), 3600*(8*0.0000166667+0.0001867)+0.6; math.Abs(got-want) > 1e-9 {
		t.Errorf("serverless without startup billing = %v, want %v", got, want)
	}
}
