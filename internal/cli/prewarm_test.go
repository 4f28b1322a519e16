package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
)

// What the API sends is what `tandem status` prints.
func TestPrintStatus_Prewarm(t *testing.T) {
	until := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	next := time.Date(2026, 12, 7, 10, 5, 0, 0, time.UTC)
	in := controller.Status{Name: "a", Prewarm: &controller.PrewarmStatus{
		Floor: 2, Reason: `window "0 9 * * 1-5" fired at 2026-12-07T09:00:00Z, on for 8h0m0s`, Until: &until,
		NextBurst: &next, Period: "5m0s", ColdStartEstimate: "1.5s",
		Events: []controller.PrewarmEvent{{At: until.Add(-8 * time.Hour), From: 0, To: 2, Reason: "window"}},
	}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var s controller.Status
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printStatus(&out, &s, false)
	for _, want := range []string{
		"Prewarm:   floor 2 until 2026-12-07 17:00:00 UTC (window \"0 9 * * 1-5\"",
		"Prewarm:   next burst expected 2026-12-07 10:05:00 UTC (every 5m0s)",
		"Cold start: 1.5s expected",
		"  2026-12-07 09:00:00 UTC  floor 0 -> 2: window",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	printStatus(&out, &controller.Status{Name: "b"}, false)
	if strings.Contains(out.String(), "Prewarm") || strings.Contains(out.String(), "Cold start") {
		t.Errorf("a deployment without prewarm prints prewarm lines:\n%s", out.String())
	}
}
