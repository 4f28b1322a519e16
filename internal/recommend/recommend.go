// Package recommend answers "serverless or dedicated?" for a model and its
// traffic: it replays a trace through tandem's own autoscaler
// (autoscaler.Decide and autoscaler.Window, the code the live controller
// runs) and the pool's activator semantics in simulated time, with the
// cold start and service times measured for the model, meters the result
// with cost.Meter, and picks the cheapest mode that meets a latency
// objective. It also finds the steady request rate at which serverless and
// dedicated cost the same.
//
// The simulation takes requests on one instance not to slow each other
// down: a model whose latency grows with concurrency should set
// scaling.container_concurrency, which the simulation honours as the pool
// does.
package recommend

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

// ErrSLO is matched by errors.Is for an objective that does not parse.
var ErrSLO = errors.New("invalid latency objective")

// Objective is one latency bound, such as p99 <= 300ms.
type Objective struct {
	Quantile string        `json:"quantile"` // p50, p95, p99 or max
	Limit    time.Duration `json:"limit"`
}

func (o Objective) String() string { return fmt.Sprintf("%s<=%s", o.Quantile, o.Limit) }

// SLO is a set of latency objectives, all of which must hold.
type SLO []Objective

func (s SLO) String() string {
	parts := make([]string, len(s))
	for i, o := range s {
		parts[i] = o.String()
	}
	return strings.Join(parts, ",")
}

// ParseSLO reads objectives such as "p99=300ms" or "p50=20ms,p99=300ms".
// The quantiles are p50, p95, p99 and max. Empty means no objective.
func ParseSLO(s string) (SLO, error) {
	var slo SLO
	if strings.TrimSpace(s) == "" {
		return slo, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q: want QUANTILE=DURATION, such as p99=300ms", ErrSLO, part)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, ok := (loadgen.Latency{}).Quantile(k); !ok {
			return nil, fmt.Errorf("%w: %q is not p50, p95, p99 or max", ErrSLO, k)
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: %q is not a positive duration such as 300ms", ErrSLO, v)
		}
		slo = append(slo, Objective{Quantile: k, Limit: d})
	}
	return slo, nil
}

// Check returns the objectives l misses, as text ("p99 1.2s > 300ms").
func (s SLO) Check(l loadgen.Latency) []string {
	var miss []string
	for _, o := range s {
		v, _ := l.Quantile(o.Quantile)
		got := time.Duration(v * float64(time.Millisecond))
		if got > o.Limit {
			miss = append(miss, fmt.Sprintf("%s %s > %s", o.Quantile, got.Round(time.Microsecond*10), o.Limit))
		}
	}
	return miss
}

// Input is what Recommend needs.
type Input struct {
	Manifest *manifest.Manifest
	Trace    *trace.Trace
	Timings  Timings
	Prices   *cost.Prices
	SLO      SLO
	// Modes to compare (default: serverless and dedicated).
	Modes []manifest.Mode
	// Tick, End and Seed are as in Config.
	Tick time.Duration
	End  time.Duration
	Seed uint64
	// NoBreakEven skips the search for the break-even rate.
	NoBreakEven bool
	// NoFloorSearch runs hybrid and dedicated with the manifest's min
	// (at least 1) instead of searching it, as `bench` runs them.
	NoFloorSearch bool
}

// ModeResult is one mode's simulated outcome.
type ModeResult struct {
	Result
	// Floor is the scaling.min this result ran with (hybrid and
	// dedicated): the search keeps the cheapest that meets the objective.
	Floor int `json:"floor,omitempty"`
	// Candidates are every floor the search tried.
	Candidates []Candidate `json:"candidates,omitempty"`
	MeetsSLO   bool        `json:"meets_slo"`
	Misses     []string    `json:"misses,omitempty"`
}

// BreakEven is the steady (Poisson) request rate at which serverless and
// dedicated cost the same for this model.
type BreakEven struct {
	// Rate is in requests a second; 0 when the cheaper mode does not
	// change between MinRate and MaxRate.
	Rate float64 `json:"rate"`
	// Below and Above are the cheaper modes under and over Rate (equal
	// when Rate is 0).
	Below manifest.Mode `json:"below"`
	Above manifest.Mode `json:"above"`
	// MinRate and MaxRate bound the rates searched.
	MinRate float64 `json:"min_rate"`
	MaxRate float64 `json:"max_rate"`
}

// Recommendation is Recommend's answer.
type Recommendation struct {
	Requests int           `json:"requests"`
	Duration time.Duration `json:"duration"`
	Timings  Timings       `json:"timings"`
	SLO      string        `json:"slo,omitempty"`
	Currency string        `json:"currency"`
	Modes    []ModeResult  `json:"modes"`
	// Best is the cheapest mode that meets the SLO; empty when none does.
	Best manifest.Mode `json:"best,omitempty"`
	// Cheapest is the cheapest mode, SLO or not.
	Cheapest  manifest.Mode `json:"cheapest"`
	Reason    string        `json:"reason"`
	BreakEven *BreakEven    `json:"break_even,omitempty"`
}

// Recommend simulates the trace under each mode and recommends one.
func Recommend(in Input) (*Recommendation, error) {
	if in.Manifest == nil || in.Trace == nil {
		return nil, errors.New("recommend: a manifest and a trace are required")
	}
	if err := in.Timings.check(); err != nil {
		return nil, err
	}
	if in.Prices == nil {
		in.Prices = cost.DefaultPrices()
	}
	modes := in.Modes
	if len(modes) == 0 {
		modes = DefaultModes
	}
	rec := &Recommendation{
		Requests: in.Trace.Len(), Duration: max(in.End, in.Trace.Duration()), Timings: in.Timings,
		SLO: in.SLO.String(), Currency: in.Prices.Currency,
	}
	results := make([]ModeResult, len(modes))
	errs := make([]error, len(modes))
	var wg sync.WaitGroup
	for i, mode := range modes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !in.NoFloorSearch && (mode == manifest.Hybrid || (mode == manifest.Dedicated && slices.Contains(modes, manifest.Hybrid))) {
				results[i], errs[i] = searchFloor(in, mode)
				return
			}
			r, err := Simulate(in.Trace, in.Timings, Config{
				Manifest: ForMode(in.Manifest, mode), Prices: in.Prices, Tick: in.Tick, End: in.End, Seed: in.Seed,
			})
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = ModeResult{Result: *r}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range results {
		r := &results[i]
		r.Misses = in.SLO.Check(r.Latency)
		if r.Errors > 0 {
			r.Misses = append(r.Misses, fmt.Sprintf("%d errors", r.Errors))
		}
		r.MeetsSLO = len(r.Misses) == 0
	}
	rec.Modes = results
	byCost := append([]ModeResult(nil), results...)
	sort.SliceStable(byCost, func(i, j int) bool { return byCost[i].Cost < byCost[j].Cost })
	rec.Cheapest = byCost[0].Mode
	for _, r := range byCost {
		if r.MeetsSLO {
			rec.Best = r.Mode
			break
		}
	}
	rec.Reason = reason(rec, byCost)
	if !in.NoBreakEven && hasBoth(modes) {
		be, err := breakEven(in)
		if err != nil {
			return nil, err
		}
		rec.BreakEven = be
	}
	return rec, nil
}

func hasBoth(modes []manifest.Mode) bool {
	var s, d bool
	for _, m := range modes {
		s = s || m == manifest.Serverless
		d = d || m == manifest.Dedicated
	}
	return s && d
}

func reason(rec *Recommendation, byCost []ModeResult) string {
	money := func(v float64) string { return FormatMoney(v, rec.Currency) }
	if rec.Best == "" {
		return fmt.Sprintf("no mode meets %s; %s is cheapest at %s (%s)", rec.SLO, rec.Cheapest, money(byCost[0].Cost), strings.Join(byCost[0].Misses, ", "))
	}
	var best ModeResult
	for _, r := range byCost {
		if r.Mode == rec.Best {
			best = r
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s costs %s", best.Mode, money(best.Cost))
	switch best.Mode {
	case manifest.Hybrid:
		fmt.Fprintf(&b, " with a floor of %d", best.Floor)
	case manifest.Dedicated:
		fmt.Fprintf(&b, " with min %d", best.Floor)
	}
	if rec.SLO != "" {
		fmt.Fprintf(&b, " and meets %s (p99 %s)", rec.SLO, ms(best.Latency.P99))
	}
	for _, r := range byCost {
		switch {
		case r.Mode == best.Mode:
		case r.Cost < best.Cost:
			fmt.Fprintf(&b, "; %s would cost %s but misses it (%s)", r.Mode, money(r.Cost), strings.Join(r.Misses, ", "))
		default:
			fmt.Fprintf(&b, "; %s would cost %s", r.Mode, money(r.Cost))
			if r.Cost > 0 && best.Cost > 0 {
				fmt.Fprintf(&b, " (%.1fx)", r.Cost/best.Cost)
			}
		}
	}
	return b.String()
}

func ms(v float64) string {
	return time.Duration(v * float64(time.Millisecond)).Round(10 * time.Microsecond).String()
}

// FormatMoney writes an amount with enough digits to tell small ones
// apart: $12.34, $0.0123, $0.0000456.
func FormatMoney(v float64, currency string) string {
	sym := currency + " "
	if currency == "USD" {
		sym = "$"
	}
	switch a := math.Abs(v); {
	case a == 0:
		return sym + "0"
	case a >= 10:
		return sym + strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.01:
		return sym + strconv.FormatFloat(v, 'f', 4, 64)
	default: // three significant digits, never an exponent
		return sym + strconv.FormatFloat(v, 'f', 2-int(math.Floor(math.Log10(a))), 64)
	}
}

// A break-even probe simulates at least breakEvenRequests requests over
// at least a few stable windows and idle timeouts, and at most
// breakEvenMaxRequests; breakEvenSteps bisection steps give the rate to
// about 2%.
const (
	breakEvenRequests    = 20000
	breakEvenMaxRequests = 200000
	breakEvenSteps       = 10
)

// breakEven searches the steady rate at which serverless and dedicated
// cost the same per hour, by simulating Poisson traffic at each rate
// probed. Every probe replays the same unit-rate arrivals scaled to its
// rate, so the comparison changes smoothly with the rate.
func breakEven(in Input) (*BreakEven, error) {
	var all []time.Duration
	for _, ss := range in.Timings.Service {
		all = append(all, ss...)
	}
	var mean float64
	for _, d := range all {
		mean += d.Seconds()
	}
	mean = max(mean/float64(len(all)), 1e-6)
	// Past the rate at which max instances are busy all the time, both
	// modes saturate alike.
	m := in.Manifest
	hi := float64(max(1, m.Scaling.Max)) * m.Scaling.TargetConcurrency / mean
	hi = min(max(hi, 1), 1e5)
	lo := 1.0 / 3600
	unit, err := loadgen.Generate(loadgen.Spec{Pattern: loadgen.Sporadic, Rate: 1, Duration: breakEvenMaxRequests * time.Second, Seed: in.Seed + 1})
	if err != nil {
		return nil, err
	}
	minWindow := max(10*time.Minute, 10*m.Scaling.IdleTimeout.D(), 2*m.Scaling.StableWindow.D())
	diff := func(rate float64) (float64, error) {
		perRequest := float64(time.Second) / rate
		window := max(time.Duration(breakEvenRequests*perRequest), minWindow)
		window = min(window, time.Duration(breakEvenMaxRequests*perRequest), 30*24*time.Hour)
		tr := &trace.Trace{}
		scale := 1 / rate
		for i := 0; ; i++ {
			if i == len(unit.Requests) {
				break
			}
			at := time.Duration(float64(unit.Requests[i].At) * scale)
			if at >= window {
				break
			}
			tr.Requests = append(tr.Requests, trace.Request{At: at})
		}
		var costs [2]float64
		var errs [2]error
		var wg sync.WaitGroup
		for i, mode := range []manifest.Mode{manifest.Serverless, manifest.Dedicated} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := Simulate(tr, in.Timings, Config{Manifest: ForMode(m, mode), Prices: in.Prices, Tick: in.Tick, End: window, Seed: in.Seed})
				if err != nil {
					errs[i] = err
					return
				}
				costs[i] = r.Cost / r.Duration.Hours()
			}()
		}
		wg.Wait()
		return costs[0] - costs[1], errors.Join(errs[:]...)
	}
	be := &BreakEven{MinRate: lo, MaxRate: hi}
	dlo, err := diff(lo)
	if err != nil {
		return nil, err
	}
	dhi, err := diff(hi)
	if err != nil {
		return nil, err
	}
	cheaper := func(d float64) manifest.Mode {
		if d <= 0 {
			return manifest.Serverless
		}
		return manifest.Dedicated
	}
	be.Below, be.Above = cheaper(dlo), cheaper(dhi)
	if be.Below == be.Above {
		return be, nil
	}
	a, b := math.Log(lo), math.Log(hi)
	for i := 0; i < breakEvenSteps; i++ {
		mid := (a + b) / 2
		d, err := diff(math.Exp(mid))
		if err != nil {
			return nil, err
		}
		if cheaper(d) == be.Below {
			a = mid
		} else {
			b = mid
		}
	}
	be.Rate = math.Exp((a + b) / 2)
	return be, nil
}

// DefaultModes are the modes Recommend compares when Input.Modes is empty.
var DefaultModes = []manifest.Mode{manifest.Serverless, manifest.Dedicated, manifest.Hybrid}

// Candidate is one hybrid floor the search tried.
type Candidate struct {
	Floor    int      `json:"floor"`
	Cost     float64  `json:"cost_total"`
	P99      float64  `json:"p99_ms"`
	MeetsSLO bool     `json:"meets_slo"`
	Misses   []string `json:"misses,omitempty"`
}

// searchFloor replays the trace as a hybrid (or dedicated) deployment
// with every floor (scaling.min) from the manifest's (at least 1) to
// scaling.max, and keeps the cheapest that meets the objective, else the
// cheapest. Dedicated is searched too when hybrid is compared, so that a
// hybrid whose burst tier is never used (dedicated with a higher min)
// does not pass for a hybrid win; without hybrid, dedicated runs with the
// manifest's min, as `bench` runs it.
func searchFloor(in Input, mode manifest.Mode) (ModeResult, error) {
	hi := max(in.Manifest.Scaling.Max, 1)
	lo := max(in.Manifest.Scaling.MinInstances(), 1)
	if mode == manifest.Hybrid {
		lo = 1
	}
	lo = min(lo, hi)
	results := make([]ModeResult, hi-lo+1)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for f := lo; f <= hi; f++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := ForMode(in.Manifest, mode)
			floor := f
			m.Scaling.Min = &floor
			r, err := Simulate(in.Trace, in.Timings, Config{Manifest: m, Prices: in.Prices, Tick: in.Tick, End: in.End, Seed: in.Seed})
			if err != nil {
				errs[f-lo] = err
				return
			}
			mr := ModeResult{Result: *r, Floor: f}
			mr.Misses = in.SLO.Check(r.Latency)
			if r.Errors > 0 {
				mr.Misses = append(mr.Misses, fmt.Sprintf("%d errors", r.Errors))
			}
			mr.MeetsSLO = len(mr.Misses) == 0
			results[f-lo] = mr
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return ModeResult{}, err
	}
	best := -1
	for i, r := range results {
		switch {
		case best < 0:
			best = i
		case r.MeetsSLO && !results[best].MeetsSLO:
			best = i
		case r.MeetsSLO == results[best].MeetsSLO && r.Cost < results[best].Cost:
			best = i
		}
	}
	out := results[best]
	for _, r := range results {
		out.Candidates = append(out.Candidates, Candidate{Floor: r.Floor, Cost: r.Cost, P99: r.Latency.P99, MeetsSLO: r.MeetsSLO, Misses: r.Misses})
	}
	return out, nil
}
