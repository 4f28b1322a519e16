package bench

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
)

func TestWriteHTML(t *testing.T) {
	rep := &Report{Model: "m", Pattern: "constant 1/s for 10s", Requests: 10, Duration: 10, Currency: "USD", Prices: cost.DefaultPrices(), Started: time.Now()}
	for i, mode := range []manifest.Mode{manifest.Serverless, manifest.Dedicated} {
		mr := &ModeResult{Mode: mode, Requests: 10, Latency: loadgen.Latency{P50: 2, P99: 400}, Duration: 10, CostTotal: float64(i+1) * 1e-5}
		for s := 0; s <= 10; s++ {
			mr.Series.Instances = append(mr.Series.Instances, InstancePoint{T: float64(s), Ready: s % 2, Cost: float64(s) * 1e-6})
			mr.Series.Latency = append(mr.Series.Latency, LatencyPoint{T: float64(s), Requests: 1, P50: 2, P99: float64(2 + 100*(s%3)), Max: 300})
		}
		rep.Modes = append(rep.Modes, mr)
	}
	// A mode with a single sample still draws a (short) line.
	rep.Modes[1].Series.Latency = rep.Modes[1].Series.Latency[:1]
	var buf bytes.Buffer
	if err := WriteHTML(&buf, rep); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	paths := regexp.MustCompile(`<path class="series" data-mode="(\w+)" data-points="(\d+)" stroke="(#[0-9a-f]{6})" d="(M[^"]+)"/>`).FindAllStringSubmatch(page, -1)
	if len(paths) != 6 {
		t.Fatalf("%d chart lines, want 6 (3 charts × 2 modes)", len(paths))
	}
	for _, p := range paths {
		if p[1] == "serverless" && p[3] != "#1f77b4" || p[1] == "dedicated" && p[3] != "#d62728" {
			t.Errorf("%s drawn in %s", p[1], p[3])
		}
	}
	for _, s := range []string{"<svg", "Cumulative cost", "serverless", "dedicated", "$0.0000100", "data-rendered-series"} {
		if !strings.Contains(page, s) {
			t.Errorf("page has no %q", s)
		}
	}
	if regexp.MustCompile(`(?i)(src|href)=["']?(https?:)?//`).MatchString(page) {
		t.Error("the page loads something from elsewhere")
	}
}
