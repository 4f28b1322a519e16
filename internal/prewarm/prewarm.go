// Package prewarm decides how many instances a deployment keeps warm ahead
// of expected traffic: scheduled windows (cron) and a predictive learner
// that finds periodic bursts in the deployment's own history. Everything
// here is a pure function of its inputs and now; the controller's loop
// asks Floor each tick and acts on the answer (internal/controller,
// prewarm.go), and recommend's replay asks the same in virtual time.
package prewarm

import (
	"fmt"
	"sort"
	"time"

	"github.com/robfig/cron/v3"

	"tandem/internal/manifest"
)

// Plan is a manifest's prewarm entries, parsed once.
type Plan struct {
	windows    []window
	predictive *manifest.Prewarm
}

type window struct {
	spec  manifest.Prewarm
	sched cron.Schedule
}

// Compile parses entries (validated by the manifest). A nil Plan, from no
// entries, keeps no floor.
func Compile(entries []manifest.Prewarm) (*Plan, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	p := &Plan{}
	for i, e := range entries {
		if e.Predictive {
			e := e
			p.predictive = &e
			continue
		}
		s, err := e.ParseSchedule()
		if err != nil {
			return nil, fmt.Errorf("prewarm[%d].cron: %w", i, err)
		}
		p.windows = append(p.windows, window{spec: e, sched: s})
	}
	return p, nil
}

// Predictive reports whether the plan learns from history (the
// controller keeps history only then).
func (p *Plan) Predictive() bool { return p != nil && p.predictive != nil }

// Decision is the floor prewarm asks for at one instant.
type Decision struct {
	// Floor is the instances to keep warm now; 0 when no entry is on.
	Floor int
	// Reason says which entry holds the floor, for status and the log.
	Reason string
	// Until is when the entry holding the floor lets go (zero with no
	// floor).
	Until time.Time
	// Burst is what the predictive learner expects (zero without one).
	Burst Burst
}

// maxFirings bounds the firings of one window looked at per call (a
// window of 8h on a schedule firing every minute has 480).
const maxFirings = 10000

// Floor returns the floor at now: the largest min of the entries on.
// A scheduled window is on from each firing of its schedule for its
// `for`; the predictive entry from lead before the next expected burst
// that learned (Learn of the deployment's history) foresees, until the
// burst should be over. learned may be the zero Pattern.
func Floor(p *Plan, learned Pattern, now time.Time) Decision {
	var d Decision
	if p == nil {
		return d
	}
	for _, w := range p.windows {
		// The latest firing in (now-for, now] holds the window open.
		var last time.Time
		t := w.sched.Next(now.Add(-w.spec.For.D()))
		for i := 0; i < maxFirings && !t.IsZero() && !t.After(now); i++ {
			last = t
			t = w.sched.Next(t)
		}
		if last.IsZero() {
			continue
		}
		until := last.Add(w.spec.For.D())
		if w.spec.Min > d.Floor || (w.spec.Min == d.Floor && until.After(d.Until)) {
			d.Floor, d.Until = w.spec.Min, until
			d.Reason = fmt.Sprintf("window %q fired at %s, on for %s", w.spec.Cron, last.In(last.Location()).Format(time.RFC3339), w.spec.For.D())
		}
	}
	if p.predictive != nil {
		b, ok := learned.Next(now)
		if ok {
			d.Burst = b
			lead := p.predictive.Lead.D()
			from, until := b.Next.Add(-lead-b.Jitter), b.Next.Add(b.Length+b.Jitter)
			if !now.Before(from) && now.Before(until) && p.predictive.Min > d.Floor {
				d.Floor, d.Until = p.predictive.Min, until
				d.Reason = fmt.Sprintf("predictive: a burst every %s, next expected at %s (lead %s)", b.Period.Round(time.Second), b.Next.UTC().Format(time.TimeOnly), lead)
			}
		}
	}
	return d
}

// History is a deployment's recent activity: episodes of traffic, each a
// start and an end, oldest first. It is bounded (MaxEpisodes, MaxAge) and
// small enough to keep in the store as JSON.
type History struct {
	Episodes []Episode `json:"episodes"`
	// Active is set while the last episode is still going (End not set).
	Active bool `json:"active,omitempty"`
	// LastSeen is the last instant with traffic.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Episode is one stretch of traffic with no gap longer than Gap inside.
type Episode struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
}

// Bounds of History.
const (
	// Gap is the quiet that ends an episode: traffic again after a
	// shorter pause belongs to the same burst.
	Gap = 10 * time.Second
	// MaxEpisodes and MaxAge bound what is kept.
	MaxEpisodes = 256
	MaxAge      = 24 * time.Hour
)

// Observe records whether the deployment had traffic in the tick ending at
// now and returns the updated history, and whether an episode began or
// ended (the moments worth keeping in the store). h is not modified.
func Observe(h History, now time.Time, active bool) (History, bool) {
	changed := false
	if active {
		if !h.Active {
			h.Episodes = append(append([]Episode(nil), h.Episodes...), Episode{Start: now})
			h.Active, changed = true, true
		}
		h.LastSeen = now
	} else if h.Active && now.Sub(h.LastSeen) >= Gap {
		eps := append([]Episode(nil), h.Episodes...)
		eps[len(eps)-1].End = h.LastSeen
		h.Episodes, h.Active, changed = eps, false, true
	}
	if changed {
		h.Episodes = trim(h.Episodes, now)
	}
	return h, changed
}

func trim(eps []Episode, now time.Time) []Episode {
	i := 0
	for i < len(eps)-1 && (len(eps)-i > MaxEpisodes || now.Sub(eps[i].Start) > MaxAge) {
		i++
	}
	return eps[i:]
}

// Burst is a periodic burst the learner found.
type Burst struct {
	// Period is the time between the starts of consecutive bursts.
	Period time.Duration
	// Next is when the next burst is expected to start.
	Next time.Time
	// Length is the bursts' median length.
	Length time.Duration
	// Jitter is how far a burst's start strays from the period (the
	// tolerance the pattern was found with).
	Jitter time.Duration
	// Support is how many intervals of the history match Period.
	Support int
}

// Learner bounds.
const (
	// MinPeriod and MaxPeriod bound the periods the learner looks for;
	// longer rhythms (daily) are what scheduled windows are for.
	MinPeriod = 30 * time.Second
	MaxPeriod = 6 * time.Hour
	// MinSupport is the intervals that must match before a period counts.
	MinSupport = 3
	// neighbours is how many later starts each start is paired with, and
	// candidateStarts how many of the latest starts give candidates.
	neighbours      = 8
	candidateStarts = 64
)

// Pattern is the periodic burst Learn found in a history; the zero
// Pattern found none.
type Pattern struct {
	// Period, Length, Jitter and Support are those of Burst.
	Period, Length, Jitter time.Duration
	Support                int
	// Last is the start of the last burst on the pattern.
	Last time.Time
}

// Predict is Learn(h).Next(now).
func Predict(h History, now time.Time) (Burst, bool) { return Learn(h).Next(now) }

// Learn looks for a period in the starts of history's episodes: the
// interval that links the longest chain of starts, each one period after
// the one before within a tolerance (2% of the period, between 2s and
// 10s; other traffic in between is skipped). Chains favour the
// fundamental period over its multiples, and random traffic rarely makes
// one. It needs MinSupport links. It costs O(n) passes over the episodes (a few
// ms at MaxEpisodes), so callers learn again only when Observe says
// the history changed, and ask Next every tick.
func Learn(h History) Pattern {
	eps := h.Episodes
	if len(eps) < MinSupport+1 {
		return Pattern{}
	}
	starts := make([]time.Time, len(eps))
	for i, e := range eps {
		starts[i] = e.Start
	}
	links := make([]int, len(starts))
	parent := make([]int, len(starts))
	var best Pattern
	var bestEnd int
	var bestParents []int
	seen := map[time.Duration]bool{}
	// Candidate periods come from the recent starts: the pattern that
	// matters is the current one, and each candidate costs a pass.
	for i := max(0, len(starts)-candidateStarts); i < len(starts); i++ {
		for j := i + 1; j < len(starts) && j <= i+neighbours; j++ {
			cand := starts[j].Sub(starts[i])
			if cand < MinPeriod || cand > MaxPeriod {
				continue
			}
			key := cand.Round(time.Second)
			if seen[key] {
				continue
			}
			seen[key] = true
			tol := tolerance(cand)
			end := chains(starts, cand, tol, links, parent)
			if links[end] > best.Support || (links[end] == best.Support && cand < best.Period) {
				best = Pattern{Period: cand, Support: links[end], Jitter: tol}
				bestEnd = end
				bestParents = append(bestParents[:0], parent...)
			}
		}
	}
	if best.Support < MinSupport {
		return Pattern{}
	}
	// Walk the chain back: its span gives the period, its episodes the
	// length.
	var lengths []time.Duration
	first := bestEnd
	for k := bestEnd; k >= 0; k = bestParents[k] {
		first = k
		if e := eps[k]; !e.End.IsZero() {
			lengths = append(lengths, e.End.Sub(e.Start))
		}
	}
	best.Period = starts[bestEnd].Sub(starts[first]) / time.Duration(best.Support)
	best.Jitter = tolerance(best.Period)
	if len(lengths) > 0 {
		sort.Slice(lengths, func(a, b int) bool { return lengths[a] < lengths[b] })
		best.Length = lengths[len(lengths)/2]
	}
	best.Last = starts[bestEnd]
	return best
}

// Next returns the first burst on the pattern whose end (start plus
// length plus jitter) is not past at now; false when there is no
// pattern, or once two expected bursts in a row did not come.
func (pt Pattern) Next(now time.Time) (Burst, bool) {
	if pt.Support < MinSupport || pt.Period <= 0 {
		return Burst{}, false
	}
	next := pt.Last.Add(pt.Period)
	for missed := 0; next.Add(pt.Length + pt.Jitter).Before(now); missed++ {
		if missed >= 1 {
			return Burst{}, false // two expected bursts did not come
		}
		next = next.Add(pt.Period)
	}
	return Burst{Period: pt.Period, Next: next, Length: pt.Length, Jitter: pt.Jitter, Support: pt.Support}, true
}

func tolerance(p time.Duration) time.Duration { return min(max(2*time.Second, p/50), 10*time.Second) }

// chains fills links[k] with the length (in periods) of the longest chain
// of starts ending at starts[k], and parent[k] with the start before it
// (-1 for none); it returns the end of the longest chain, the latest of
// equals.
func chains(starts []time.Time, period, tol time.Duration, links, parent []int) int {
	end := 0
	for k := range starts {
		links[k], parent[k] = 0, -1
		for j := k - 1; j >= 0; j-- {
			d := starts[k].Sub(starts[j])
			if d > period+tol {
				break
			}
			if d >= period-tol && links[j]+1 > links[k] {
				links[k], parent[k] = links[j]+1, j
			}
		}
		if links[k] >= links[end] {
			end = k
		}
	}
	return end
}
