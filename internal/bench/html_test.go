package bench

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/uplot"
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
	// A mode with a single sample still has its line.
	rep.Modes[1].Series.Latency = rep.Modes[1].Series.Latency[:1]
	var buf bytes.Buffer
	if err := WriteHTML(&buf, rep); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	m := regexp.MustCompile(`var charts = (.*);\n`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the page has no chart data")
	}
	var charts []Chart
	if err := json.Unmarshal([]byte(m[1]), &charts); err != nil {
		t.Fatalf("chart data: %v", err)
	}
	if len(charts) != 3 {
		t.Fatalf("%d charts, want 3", len(charts))
	}
	wantPoints := map[string][2]int{"instances": {11, 11}, "latency": {11, 1}, "cost": {11, 11}}
	for _, c := range charts {
		if len(c.Series) != 2 {
			t.Fatalf("chart %s has %d lines, want 2", c.ID, len(c.Series))
		}
		for i, s := range c.Series {
			if s.Mode == "serverless" && s.Color != "#1f77b4" || s.Mode == "dedicated" && s.Color != "#d62728" {
				t.Errorf("%s drawn in %s", s.Mode, s.Color)
			}
			if len(s.Points) != wantPoints[c.ID][i] {
				t.Errorf("chart %s, %s: %d points, want %d", c.ID, s.Mode, len(s.Points), wantPoints[c.ID][i])
			}
		}
	}
	if c := charts[0].Series[0].Points; c[3] != [2]float64{3, 1} {
		t.Errorf("instances at 3 s: %v", c[3])
	}
	if !charts[1].Log || !charts[0].Step {
		t.Error("latency should be on a log axis and instances drawn as steps")
	}
	// uPlot is inline, whole.
	for _, s := range []string{uplot.JS[:200], uplot.JS[len(uplot.JS)-200:], "new uPlot(", "Cumulative cost", "serverless", "dedicated", "$0.0000100", "data-rendered-series"} {
		if !strings.Contains(page, s) {
			t.Errorf("page has no %q", s)
		}
	}
	if regexp.MustCompile(`(?i)(src|href)=["']?(https?:)?//`).MatchString(page) || strings.Contains(page, "<script src") {
		t.Error("the page loads something from elsewhere")
	}
}
