package manifest

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Prewarm is one entry of a manifest's prewarm list: either a scheduled
// window (Cron, Min, For, optional Timezone), which holds at least Min
// instances for For from every time the schedule fires, or a predictive
// entry (Predictive, Lead, optional Min), which learns periodic bursts
// from the deployment's own traffic and holds Min instances from Lead
// before the next expected burst until it has passed. docs/hybrid.md.
type Prewarm struct {
	// Cron is a standard five-field schedule ("0 9 * * 1-5") or a
	// descriptor such as @daily.
	Cron string `yaml:"cron,omitempty" json:"cron,omitempty"`
	// Min is the floor the entry holds while it is on (>= 1; predictive
	// entries default to 1).
	Min int `yaml:"min,omitempty" json:"min,omitempty"`
	// For is how long a scheduled window lasts from each firing.
	For Duration `yaml:"for,omitempty" json:"for,omitempty"`
	// Timezone is the IANA zone the schedule is read in; empty is UTC.
	Timezone string `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	// Predictive turns on learning bursts from the deployment's history.
	Predictive bool `yaml:"predictive,omitempty" json:"predictive,omitempty"`
	// Lead is how long before an expected burst the floor goes up
	// (predictive; default 30s).
	Lead Duration `yaml:"lead,omitempty" json:"lead,omitempty"`
}

// DefaultPrewarmLead is a predictive entry's lead when none is given.
const DefaultPrewarmLead = 30 * time.Second

// ParseSchedule reads a scheduled entry's Cron in its Timezone (UTC when
// empty) with robfig/cron's standard parser.
func (p Prewarm) ParseSchedule() (cron.Schedule, error) {
	loc := time.UTC
	if p.Timezone != "" {
		l, err := time.LoadLocation(p.Timezone)
		if err != nil {
			return nil, fmt.Errorf("timezone %q: %w", p.Timezone, err)
		}
		loc = l
	}
	s, err := cron.ParseStandard(p.Cron)
	if err != nil {
		return nil, err
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%q is not a schedule of fixed times (@every counts from whenever it is asked): use five fields such as \"*/5 * * * *\"", p.Cron)
	}
	spec.Location = loc
	return spec, nil
}

func setPrewarmDefaults(ps []Prewarm) {
	for i := range ps {
		if ps[i].Predictive {
			if ps[i].Lead == 0 {
				ps[i].Lead = Duration(DefaultPrewarmLead)
			}
			if ps[i].Min == 0 {
				ps[i].Min = 1
			}
		}
	}
}

func validatePrewarm(m *Manifest, bad func(field, msg string, args ...any)) {
	predictive := 0
	for i, p := range m.Prewarm {
		f := func(name string) string { return fmt.Sprintf("prewarm[%d].%s", i, name) }
		switch {
		case p.Predictive && p.Cron != "":
			bad(fmt.Sprintf("prewarm[%d]", i), "give either cron (a scheduled window) or predictive: true, not both")
		case p.Predictive:
			predictive++
			if predictive > 1 {
				bad(f("predictive"), "only one predictive entry is allowed")
			}
			if p.Lead <= 0 {
				bad(f("lead"), "must be positive")
			}
			if p.For != 0 {
				bad(f("for"), "is for scheduled windows; a predictive entry holds its floor until the expected burst has passed")
			}
			if p.Timezone != "" {
				bad(f("timezone"), "is for scheduled windows (cron)")
			}
		case p.Cron == "":
			bad(fmt.Sprintf("prewarm[%d]", i), "give cron (such as \"0 9 * * 1-5\", with min and for) or predictive: true")
		default:
			if _, err := p.ParseSchedule(); err != nil {
				field := f("cron")
				if p.Timezone != "" {
					if _, terr := time.LoadLocation(p.Timezone); terr != nil {
						field = f("timezone")
					}
				}
				bad(field, "%v", err)
			}
			if p.For <= 0 {
				bad(f("for"), "required: how long the window lasts from each firing, such as 8h")
			}
			if p.Lead != 0 {
				bad(f("lead"), "is for predictive entries")
			}
		}
		switch {
		case p.Min < 1:
			bad(f("min"), "must be at least 1 (the instances kept warm while the entry is on)")
		case p.Min > m.Scaling.Max:
			bad(f("min"), "%d is greater than scaling.max (%d)", p.Min, m.Scaling.Max)
		}
	}
}
