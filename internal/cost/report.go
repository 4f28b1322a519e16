package cost

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"tandem/internal/manifest"
	"tandem/internal/problem"
)

// Report is what deployments used and cost over a stretch of time.
type Report struct {
	Since    time.Time     `json:"since"`
	Until    time.Time     `json:"until"`
	Currency string        `json:"currency"`
	Models   []ModelReport `json:"models"`
}

// ModelReport is one deployment's usage and cost.
type ModelReport struct {
	Model string `json:"model"`
	// Mode is the mode it ran under last.
	Mode manifest.Mode `json:"mode"`
	// Usage is the sum of its usage under every mode it ran under.
	Usage Usage `json:"usage"`
	// Cost is what it paid: each bucket priced as the mode it ran under.
	Cost float64 `json:"cost"`
	// CostIdle is the part of Cost spent on instances serving nothing.
	CostIdle float64 `json:"cost_idle"`
	// CostPer1K is Cost per thousand requests (0 without requests).
	CostPer1K float64 `json:"cost_per_1k"`
	// CostAs is what the same traffic cost, or would have cost, under each
	// mode (see Prices.CostIf); CostAs[Mode] is Cost when it ran under one.
	CostAs map[manifest.Mode]float64 `json:"cost_as"`
	// Tiers splits a hybrid deployment's usage and cost into its floor
	// (reserved) and burst (on-demand) tiers; nil for other modes.
	Tiers *Tiers `json:"tiers,omitempty"`
	// Revisions splits the cost by revision unit when revisions ran beside
	// the model's first unit (canaries, tags, shadows; docs/rollout.md).
	// Revision "" is the first unit, whatever it ran; the others are the
	// unit of one revision, promoted or not.
	Revisions []RevisionCost `json:"revisions,omitempty"`
}

// RevisionCost is one revision unit's usage and cost.
type RevisionCost struct {
	Revision string  `json:"revision"`
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"instance_seconds"`
	Cost     float64 `json:"cost"`
}

// ModelOf splits a meter account name into its model and revision: the
// cost meter keeps a revision's own unit as "MODEL@REVISION".
func ModelOf(account string) (model, revision string) {
	model, revision, _ = strings.Cut(account, "@")
	return model, revision
}

// Tiers is a hybrid deployment's floor and burst tiers.
type Tiers struct {
	Floor TierCost `json:"floor"`
	Burst TierCost `json:"burst"`
}

// TierCost is one tier's instance time and cost.
type TierCost struct {
	InstanceSeconds float64 `json:"instance_seconds"`
	Cost            float64 `json:"cost"`
}

// Report flushes up to now and returns usage and cost of every deployment
// (or only model, when not empty) in buckets starting in [since, now].
func (m *Meter) Report(model string, since, now time.Time) (*Report, error) {
	r := &Report{Since: since, Until: now, Currency: m.Prices().Currency, Models: []ModelReport{}}
	if m == nil {
		return r, nil
	}
	m.Flush(now)
	m.persistMu.RLock()
	recs, err := m.records("", since.Truncate(m.bucket), now.Add(time.Nanosecond))
	m.persistMu.RUnlock()
	if err != nil {
		return nil, err
	}
	if model != "" {
		kept := recs[:0]
		for _, rec := range recs {
			if base, _ := ModelOf(rec.model); base == model {
				kept = append(kept, rec)
			}
		}
		recs = kept
	}
	byRev := map[string]map[string]*RevisionCost{}
	sort.Slice(recs, func(i, j int) bool { return recs[i].start.Before(recs[j].start) })
	byModel := map[string]*ModelReport{}
	p := m.prices
	for _, rec := range recs {
		name, rev := ModelOf(rec.model)
		mr := byModel[name]
		if mr == nil {
			mr = &ModelReport{Model: name, CostAs: map[manifest.Mode]float64{}}
			byModel[name] = mr
			byRev[name] = map[string]*RevisionCost{}
		}
		u := rec.usage
		rc := byRev[name][rev]
		if rc == nil {
			rc = &RevisionCost{Revision: rev}
			byRev[name][rev] = rc
		}
		rc.Requests += u.Requests
		rc.Seconds += u.Total().Seconds
		rc.Cost += p.Cost(u.Mode, u)
		mr.Mode = u.Mode
		mr.Usage = mr.Usage.Plus(u)
		mr.Cost += p.Cost(u.Mode, u)
		mr.CostIdle += p.IdleCost(u.Mode, u)
		if u.Mode == manifest.Hybrid {
			if mr.Tiers == nil {
				mr.Tiers = &Tiers{}
			}
			floor, burst := p.Tiers(u)
			mr.Tiers.Floor.InstanceSeconds += u.Total().Seconds - u.Burst.Total().Seconds
			mr.Tiers.Floor.Cost += floor
			mr.Tiers.Burst.InstanceSeconds += u.Burst.Total().Seconds
			mr.Tiers.Burst.Cost += burst
		}
		for _, mode := range Modes {
			if mode == u.Mode {
				mr.CostAs[mode] += p.Cost(mode, u)
			} else {
				mr.CostAs[mode] += p.CostIf(mode, u)
			}
		}
	}
	for name, mr := range byModel {
		if revs := byRev[name]; len(revs) > 1 {
			for _, rc := range revs {
				mr.Revisions = append(mr.Revisions, *rc)
			}
			sort.Slice(mr.Revisions, func(i, j int) bool { return mr.Revisions[i].Revision < mr.Revisions[j].Revision })
		}
		mr.Usage.Mode = mr.Mode
		if mr.Usage.Requests > 0 {
			mr.CostPer1K = mr.Cost / float64(mr.Usage.Requests) * 1000
		}
		r.Models = append(r.Models, *mr)
	}
	sort.Slice(r.Models, func(i, j int) bool { return r.Models[i].Model < r.Models[j].Model })
	return r, nil
}

// ParseSince reads a report's start: a duration back from now ("24h",
// "90m", "7d" for days) or an RFC 3339 time. Empty means 24 hours.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now.Add(-24 * time.Hour), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		if _, err := fmt.Sscanf(days, "%g", &n); err == nil && n >= 0 {
			return now.Add(-time.Duration(n * 24 * float64(time.Hour))), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since %q is neither a duration such as 24h or 7d nor an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

// Mount adds the meter's routes to the control API through handle (the
// admin server's Handle):
//
//	GET /v1/cost?since=24h&model=NAME  a Report
//	GET /v1/cost/live                  a Live reading of the running totals
func (m *Meter) Mount(handle func(pattern string, h http.Handler)) {
	handle("GET /v1/cost", http.HandlerFunc(m.serveReport))
	handle("GET /v1/cost/live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, m.Live(time.Now()))
	}))
}

func (m *Meter) serveReport(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	since, err := ParseSince(r.URL.Query().Get("since"), now)
	if err != nil {
		problem.Write(w, problem.New(http.StatusBadRequest, "invalid_query", err.Error()).WithField("since"))
		return
	}
	rep, err := m.Report(r.URL.Query().Get("model"), since, now)
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, rep)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
