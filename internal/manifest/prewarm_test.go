package manifest

import (
	"strings"
	"testing"
	"time"
)

func TestParse_Prewarm(t *testing.T) {
	const base = "name: m\nruntime: {command: [x]}\nscaling: {max: 3}\n"
	m, err := Parse([]byte(base+"prewarm:\n  - {cron: '0 9 * * 1-5', min: 2, for: 8h, timezone: America/New_York}\n  - {predictive: true}\ntimeouts: {deadline: 150ms}\nfallback: small\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Prewarm[1]; got.Lead.D() != DefaultPrewarmLead || got.Min != 1 {
		t.Errorf("predictive defaults: lead %s min %d, want %s and 1", got.Lead.D(), got.Min, DefaultPrewarmLead)
	}
	if m.Timeouts.Deadline.D() != 150*time.Millisecond || m.Fallback != "small" {
		t.Errorf("deadline %s fallback %q", m.Timeouts.Deadline.D(), m.Fallback)
	}
	s, err := m.Prewarm[0].ParseSchedule()
	if err != nil {
		t.Fatal(err)
	}
	// Friday 2026-12-04 20:00 UTC is 15:00 in New York: next firing is
	// Monday 9:00 New York time, 14:00 UTC.
	next := s.Next(time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Errorf("next firing %s, want %s", next.UTC(), want)
	}

	bad := []struct{ yaml, field, text string }{
		{"prewarm: [{cron: '0 25 * * *', min: 1, for: 1h}]", "prewarm[0].cron", "above maximum"},
		{"prewarm: [{cron: '0 9 * * *', min: 1, for: 1h, timezone: Mars/Olympus}]", "prewarm[0].timezone", "Mars/Olympus"},
		{"prewarm: [{cron: '0 9 * * *', min: 4, for: 1h}]", "prewarm[0].min", "greater than scaling.max (3)"},
		{"prewarm: [{cron: '0 9 * * *', min: 1}]", "prewarm[0].for", "required"},
		{"prewarm: [{predictive: true}, {predictive: true}]", "prewarm[1].predictive", "only one"},
		{"prewarm: [{predictive: true, lead: -1s}]", "prewarm[0].lead", "positive"},
		{"prewarm: [{min: 1}]", "prewarm[0]", "give cron"},
		{"prewarm: [{cron: '@every 5m', min: 1, for: 1m}]", "prewarm[0].cron", "fixed times"},
		{"timeouts: {deadline: -1s}", "timeouts.deadline", "negative"},
		{"fallback: m", "fallback", "this deployment"},
	}
	for _, tt := range bad {
		t.Run(tt.field, func(t *testing.T) {
			_, err := Parse([]byte(base+tt.yaml+"\n"), "")
			if err == nil {
				t.Fatalf("%s: accepted", tt.yaml)
			}
			var found bool
			for _, p := range err.(*Error).Problems {
				if p.Field == tt.field && strings.Contains(p.Message, tt.text) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: want a problem at %s mentioning %q, got %v", tt.yaml, tt.field, tt.text, err)
			}
		})
	}
}
