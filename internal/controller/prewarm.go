package controller

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"tandem/internal/manifest"
	"tandem/internal/prewarm"
)

// prewarmBucket is the store bucket of each deployment's traffic history
// (prewarm.History as JSON, keyed by deployment name).
const prewarmBucket = "prewarm-history"

// Bounds of the prewarm and cold start state.
const (
	// historySaveEvery is the least time between two writes of a
	// deployment's history to the store.
	historySaveEvery = 5 * time.Second
	// startSamples is how many measured starts the estimate is taken from.
	startSamples = 5
	// prewarmEvents is how many raises and drops status keeps.
	prewarmEvents = 10
)

// prewarmState is a deployment's prewarm and cold start state. The atomics
// are read by the request path; everything else belongs to the loop.
type prewarmState struct {
	// coldEstimate is the expected cold start in nanoseconds (0: none
	// measured yet), and wakeUntil (unix ns) is until when a request
	// that found nothing warm asked for one instance.
	coldEstimate atomic.Int64
	wakeUntil    atomic.Int64

	plan     *prewarm.Plan
	planOf   *manifest.Manifest
	planErr  string
	hist     prewarm.History
	learned  prewarm.Pattern // Learn(hist), again when hist changes
	dirty    bool
	savedAt  time.Time
	starts   []time.Duration
	cur      prewarm.Decision
	wake     bool
	events   []PrewarmEvent
	metricOn bool
}

// PrewarmStatus is what `tandem status` shows of prewarm.
type PrewarmStatus struct {
	// Floor is the instances prewarm keeps warm now; Reason and Until say
	// which entry and until when.
	Floor  int        `json:"floor"`
	Reason string     `json:"reason,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	// NextBurst is when the predictive learner expects the next burst,
	// and Period how far apart they come.
	NextBurst *time.Time `json:"next_burst,omitempty"`
	Period    string     `json:"period,omitempty"`
	// ColdStartEstimate is the expected cold start requests with a
	// deadline are compared with ("" before any start was measured).
	ColdStartEstimate string `json:"cold_start_estimate,omitempty"`
	// Events are the latest raises and drops, oldest first.
	Events []PrewarmEvent `json:"events,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// PrewarmEvent is one change of the prewarm floor.
type PrewarmEvent struct {
	At     time.Time `json:"at"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// loadHistory reads the deployment's stored traffic history (once, when
// its loop is built).
func (d *Deployment) loadHistory() {
	st := d.c.cfg.Store
	if st == nil {
		return
	}
	var h prewarm.History
	found, err := st.GetJSON(prewarmBucket, d.meter, &h)
	if found && err == nil {
		h.Active = false // what was going on before a restart is over
		d.pw.hist, d.pw.learned = h, prewarm.Learn(h)
	}
	if err != nil {
		d.log.Warn("prewarm history not read; learning again", "err", err)
	}
}

// prewarmFloor is asked once per tick by the loop: it records whether the
// deployment had traffic, saves the history now and then, and returns the
// floor prewarm asks for (the schedule, the learner, or a request that
// found nothing warm), logging each change with its reason.
func (d *Deployment) prewarmFloor(now time.Time, active bool) int {
	pw := &d.pw
	clock := now
	if d.c.cfg.Clock != nil {
		clock = d.c.cfg.Clock()
	}
	if pw.planOf != d.man {
		pw.planOf = d.man
		plan, err := prewarm.Compile(d.man.Prewarm)
		pw.plan, pw.planErr = plan, ""
		if err != nil {
			pw.planErr = err.Error()
			d.log.Error("prewarm off", "err", err)
		}
	}
	if pw.plan.Predictive() {
		var changed bool
		pw.hist, changed = prewarm.Observe(pw.hist, clock, active)
		if changed {
			pw.learned = prewarm.Learn(pw.hist)
		}
		pw.dirty = pw.dirty || changed
		if pw.dirty && now.Sub(pw.savedAt) >= historySaveEvery && d.c.cfg.Store != nil {
			if err := d.c.cfg.Store.PutJSON(prewarmBucket, d.meter, pw.hist); err != nil {
				d.log.Warn("prewarm history not saved", "err", err)
			}
			pw.dirty, pw.savedAt = false, now
		}
	}
	dec := prewarm.Floor(pw.plan, pw.learned, clock)
	if until := pw.wakeUntil.Load(); until != 0 && now.UnixNano() < until && dec.Floor < 1 {
		dec.Floor, dec.Until = 1, time.Unix(0, until)
		dec.Reason = "a request with a deadline found nothing warm"
	}
	if dec.Floor != pw.cur.Floor {
		ev := PrewarmEvent{At: clock, From: pw.cur.Floor, To: dec.Floor, Reason: reasonOr(dec.Reason, "ended: "+pw.cur.Reason)}
		d.log.Info("prewarm floor", "from", ev.From, "to", ev.To, "reason", ev.Reason)
		pw.events = append(pw.events, ev)
		if len(pw.events) > prewarmEvents {
			pw.events = slices.Delete(pw.events, 0, len(pw.events)-prewarmEvents)
		}
	}
	// The gauge exists for deployments with prewarm entries, and for
	// others once a floor was asked for (no series for every deployment).
	if dec.Floor != pw.cur.Floor || (!pw.metricOn && pw.plan != nil) {
		d.c.cfg.Metrics.PrewarmFloor(d.Name, dec.Floor)
		pw.metricOn = true
	}
	pw.cur = dec
	return dec.Floor
}

func reasonOr(r, alt string) string {
	if r != "" {
		return r
	}
	return alt
}

// noteStart records a measured cold start (decision to ready) and
// publishes the new estimate: the median of the last few.
func (d *Deployment) noteStart(took time.Duration) {
	pw := &d.pw
	pw.starts = append(pw.starts, took)
	if len(pw.starts) > startSamples {
		pw.starts = pw.starts[1:]
	}
	s := slices.Clone(pw.starts)
	slices.Sort(s)
	est := s[len(s)/2]
	pw.coldEstimate.Store(int64(est))
	d.c.cfg.Metrics.ColdStartEstimate(d.Name, est.Seconds())
}

// ColdStartEstimate is the deployment's expected cold start, from its
// recent measured starts; 0 before any was measured. Safe on the request
// path (one atomic load).
func (d *Deployment) ColdStartEstimate() time.Duration {
	return time.Duration(d.pw.coldEstimate.Load())
}

// Wake asks for one warm instance without queueing a request: a request
// whose deadline is shorter than the cold start is answered at once, and
// this starts an instance so that its retry finds one. The floor holds for
// start (the expected cold start) plus scaling.idle_timeout, so the
// instance waits idle_timeout for the retry once ready; then the usual
// rules apply. Safe on the request path (an atomic store and a
// non-blocking poke).
func (d *Deployment) Wake(start time.Duration) {
	until := time.Now().Add(start + d.Manifest().Scaling.IdleTimeout.D()).UnixNano()
	for {
		old := d.pw.wakeUntil.Load()
		if old >= until || d.pw.wakeUntil.CompareAndSwap(old, until) {
			break
		}
	}
	d.OnDemandPoke()
}

// prewarmStatus is the status's view; the loop calls it.
func (d *Deployment) prewarmStatus() *PrewarmStatus {
	pw := &d.pw
	est := d.ColdStartEstimate()
	if pw.plan == nil && pw.planErr == "" && len(pw.events) == 0 && est == 0 {
		return nil
	}
	s := &PrewarmStatus{Floor: pw.cur.Floor, Reason: pw.cur.Reason, Events: slices.Clone(pw.events), Error: pw.planErr}
	if !pw.cur.Until.IsZero() {
		u := pw.cur.Until
		s.Until = &u
	}
	if b := pw.cur.Burst; !b.Next.IsZero() {
		n := b.Next
		s.NextBurst, s.Period = &n, b.Period.Round(time.Second).String()
	}
	if est > 0 {
		s.ColdStartEstimate = fmt.Sprint(est.Round(time.Millisecond))
	}
	return s
}
