package cost

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"tandem/internal/manifest"
)

// DefaultBucket is the meter's time resolution: usage is kept per minute,
// so a report's --since is exact to the minute.
const DefaultBucket = time.Minute

// DefaultRetention is how long usage is kept on disk.
const DefaultRetention = 31 * 24 * time.Hour

// BusyReader tells how long an instance has served. The pool's instances
// implement it: BusyTime returns the total time, up to now, the instance
// had at least one request in flight. It must not block and is called
// from the meter's goroutines while requests run.
type BusyReader interface {
	BusyTime(now time.Time) time.Duration
}

// RequestCounter counts a deployment's answered requests on the request
// path with atomics only; the meter takes the counts when it flushes. A nil
// *RequestCounter counts nothing.
type RequestCounter struct {
	n, nanos, cold, hits atomic.Int64
}

// Hit counts one request answered from the response cache: no instance
// took it, so it is not a request in Add's sense and costs no instance
// time. Safe for concurrent use; it does not block.
func (c *RequestCounter) Hit() {
	if c != nil {
		c.hits.Add(1)
	}
}

// Add counts one answered request that took d; coldStart says it waited
// for an instance to start. Safe for concurrent use; it does not block.
func (c *RequestCounter) Add(d time.Duration, coldStart bool) {
	if c == nil {
		return
	}
	c.n.Add(1)
	c.nanos.Add(int64(d))
	if coldStart {
		c.cold.Add(1)
	}
}

func (c *RequestCounter) take() (n int64, d time.Duration, cold, hits int64) {
	return c.n.Swap(0), time.Duration(c.nanos.Swap(0)), c.cold.Swap(0), c.hits.Swap(0)
}

// Meter meters every deployment: instance-seconds by state (starting, busy,
// idle), requests, and from them the cost under each mode. It is fed by
// events (a deployment's settings, instance state changes, request counts)
// and turns them into usage per time bucket when it flushes; time is
// always a parameter, so a stepped clock drives it in tests.
//
// A Meter is safe for concurrent use, and every method of a nil *Meter
// does nothing, so callers need not check that metering is on. Event
// methods take a short lock and never touch the disk; Persist writes.
type Meter struct {
	prices    *Prices
	bucket    time.Duration
	retention time.Duration
	log       *slog.Logger
	db        *bolt.DB // nil: usage is kept in memory only
	started   time.Time

	persistMu sync.RWMutex // held by Persist while pending is neither in memory nor on disk

	mu       sync.Mutex
	accounts map[string]*account
	pending  map[bucketKey]*Usage // not yet on disk
	totals   map[string]*Usage    // since the meter started, for metrics and live readings
}

// bucketKey names one bucket of one deployment's usage under one mode.
type bucketKey struct {
	model string
	start int64 // unix seconds
	mode  manifest.Mode
}

// account is one deployment as the meter knows it.
type account struct {
	model     string
	mode      manifest.Mode
	size      Size
	warm      float64   // instances a dedicated deployment keeps warm at least
	deployed  time.Time // floor accounted up to here; zero once deleted
	instances map[string]*instance
	requests  *RequestCounter
	templates int       // template processes running
	tplSince  time.Time // template time accounted up to here
}

type instanceState int

const (
	stateStarting instanceState = iota
	stateReady
)

type instance struct {
	state    instanceState
	burst    bool      // a hybrid deployment's burst tier
	since    time.Time // accounted up to here
	busy     BusyReader
	lastBusy time.Duration // busy time already accounted
}

// NewMeter returns a meter that keeps usage in memory, priced with p (the
// defaults when nil). now is when metering starts.
func NewMeter(p *Prices, now time.Time) *Meter {
	if p == nil {
		p = DefaultPrices()
	}
	return &Meter{
		prices:    p,
		bucket:    DefaultBucket,
		retention: DefaultRetention,
		log:       slog.Default(),
		started:   now,
		accounts:  map[string]*account{},
		pending:   map[bucketKey]*Usage{},
		totals:    map[string]*Usage{},
	}
}

// Prices returns the price table the meter prices with. Read only.
func (m *Meter) Prices() *Prices {
	if m == nil {
		return DefaultPrices()
	}
	return m.prices
}

func (m *Meter) account(model string) *account {
	a := m.accounts[model]
	if a == nil {
		a = &account{model: model, mode: manifest.Serverless, size: m.prices.SizeOf(manifest.Resources{}), warm: 1,
			instances: map[string]*instance{}, requests: &RequestCounter{}}
		m.accounts[model] = a
	}
	return a
}

// Deployment records a deployment's settings at `at`: its mode, its
// instances' size and its minimum. Call it when a deployment is created,
// updated, or loaded at start, before its instances' events; usage up to
// `at` keeps the settings it had.
func (m *Meter) Deployment(man *manifest.Manifest, at time.Time) {
	if m == nil || man == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.account(man.Name)
	m.flushAccount(a, at)
	m.flushRequests(a, at)
	a.mode = man.Mode
	a.size = m.prices.SizeOf(man.Resources)
	a.warm = float64(max(1, man.Scaling.MinInstances()))
	if a.deployed.IsZero() {
		a.deployed = at
	}
}

// DeploymentDeleted records that a deployment was deleted at `at`. Its
// usage so far stays in reports.
func (m *Meter) DeploymentDeleted(name string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.accounts[name]
	if a == nil {
		return
	}
	m.flushAccount(a, at)
	m.flushRequests(a, at)
	delete(m.accounts, name)
}

// InstanceStarting records that an instance of model began starting at
// `at` (when the decision to start it was taken).
func (m *Meter) InstanceStarting(model, id string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.account(model)
	if in := a.instances[id]; in != nil {
		m.accrue(a, in, at)
		in.state, in.busy = stateStarting, nil
		return
	}
	a.instances[id] = &instance{state: stateStarting, since: at}
}

// InstanceTier records that a hybrid deployment's instance is in its burst
// tier (burst true) or its floor tier from `at` on; an instance starts in
// the floor tier unless told otherwise.
func (m *Meter) InstanceTier(model, id string, burst bool, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.account(model)
	in := a.instances[id]
	if in == nil {
		in = &instance{state: stateStarting, since: at}
		a.instances[id] = in
	}
	m.accrue(a, in, at)
	in.burst = burst
}

// InstanceReady records that an instance became ready at `at`; busy tells
// from then on how long it served (nil: it is counted idle throughout). An
// instance that was never reported starting (adopted after a restart)
// begins here.
func (m *Meter) InstanceReady(model, id string, busy BusyReader, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.account(model)
	in := a.instances[id]
	if in == nil {
		in = &instance{since: at}
		a.instances[id] = in
	}
	m.accrue(a, in, at)
	in.state, in.busy, in.lastBusy = stateReady, busy, 0
	if busy != nil {
		in.lastBusy = busy.BusyTime(at)
	}
}

// InstanceGone records that an instance stopped, failed or exited at `at`.
func (m *Meter) InstanceGone(model, id string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.accounts[model]
	if a == nil {
		return
	}
	if in := a.instances[id]; in != nil {
		m.accrue(a, in, at)
		delete(a.instances, id)
	}
}

// TemplateStarted records that a template process of model started at
// `at` (runtime.template; priced as idle memory, not as an instance).
func (m *Meter) TemplateStarted(model string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.account(model)
	m.accrueTemplates(a, at)
	a.templates++
	a.tplSince = at
}

// TemplateEnded records that a template process of model ended at `at`.
func (m *Meter) TemplateEnded(model string, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.accounts[model]
	if a == nil || a.templates == 0 {
		return
	}
	m.accrueTemplates(a, at)
	a.templates--
}

// accrueTemplates accounts a's template time up to `to`; m.mu is held.
func (m *Meter) accrueTemplates(a *account, to time.Time) {
	if a.templates == 0 || !to.After(a.tplSince) {
		return
	}
	n := float64(a.templates)
	m.spread(a, a.tplSince, to, func(u *Usage, secs float64) { u.Template.add(a.size, secs*n) })
	a.tplSince = to
}

// Requests returns the counter the request path adds model's answered
// requests to. It is the same counter for the life of the deployment; nil
// for a nil Meter.
func (m *Meter) Requests(model string) *RequestCounter {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.account(model).requests
}

// Flush accounts every running instance and deployment up to now and
// takes the request counts. Reports and live readings flush first; Run
// flushes periodically so that buckets fill as time passes.
func (m *Meter) Flush(now time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.accounts {
		m.flushAccount(a, now)
		m.flushRequests(a, now)
	}
}

// flushAccount accounts a's instances and floor up to `to`; m.mu is held.
func (m *Meter) flushAccount(a *account, to time.Time) {
	for _, in := range a.instances {
		m.accrue(a, in, to)
	}
	m.accrueTemplates(a, to)
	if !a.deployed.IsZero() && to.After(a.deployed) {
		warm := a.warm
		m.spread(a, a.deployed, to, func(u *Usage, secs float64) { u.Floor.add(a.size, secs*warm) })
		a.deployed = to
	}
}

func (m *Meter) flushRequests(a *account, now time.Time) {
	n, d, cold, hits := a.requests.take()
	if n == 0 && d == 0 && cold == 0 && hits == 0 {
		return
	}
	add := func(u *Usage) {
		u.Requests += n
		u.RequestSeconds += d.Seconds()
		u.ColdStarts += cold
		u.CacheHits += hits
	}
	add(m.bucketAt(a, now))
	add(m.total(a))
}

// accrue accounts one instance's time from where it was accounted up to
// `to`, as starting, or as busy and idle by its busy clock; m.mu is held.
func (m *Meter) accrue(a *account, in *instance, to time.Time) {
	if !to.After(in.since) {
		return
	}
	from := in.since
	in.since = to
	if in.state == stateStarting {
		m.spread(a, from, to, func(u *Usage, secs float64) {
			u.Starting.add(a.size, secs)
			if in.burst {
				u.Burst.Starting.add(a.size, secs)
			}
		})
		return
	}
	span := to.Sub(from)
	var busy time.Duration
	if in.busy != nil {
		// Credit no more than the span: a clock read a moment early or
		// late carries the difference to the next interval.
		busy = min(max(in.busy.BusyTime(to)-in.lastBusy, 0), span)
		in.lastBusy += busy
	}
	f := float64(busy) / float64(span)
	m.spread(a, from, to, func(u *Usage, secs float64) {
		u.Busy.add(a.size, secs*f)
		u.Idle.add(a.size, secs*(1-f))
		if in.burst {
			u.Burst.Busy.add(a.size, secs*f)
			u.Burst.Idle.add(a.size, secs*(1-f))
		}
	})
}

// spread splits [from, to) across buckets and calls add for each bucket's
// part, and once for the meter's running total; m.mu is held.
func (m *Meter) spread(a *account, from, to time.Time, add func(u *Usage, secs float64)) {
	add(m.total(a), to.Sub(from).Seconds())
	for t := from; t.Before(to); {
		start := t.Truncate(m.bucket)
		end := start.Add(m.bucket)
		if end.After(to) || !end.After(t) { // the last part, or a Truncate quirk before the epoch
			end = to
		}
		add(m.bucketAt(a, start), end.Sub(t).Seconds())
		t = end
	}
}

func (m *Meter) bucketAt(a *account, t time.Time) *Usage {
	k := bucketKey{model: a.model, start: t.Truncate(m.bucket).Unix(), mode: a.mode}
	u := m.pending[k]
	if u == nil {
		u = &Usage{Mode: a.mode}
		m.pending[k] = u
	}
	return u
}

func (m *Meter) total(a *account) *Usage {
	u := m.totals[a.model]
	if u == nil {
		u = &Usage{}
		m.totals[a.model] = u
	}
	u.Mode = a.mode
	return u
}

// Live is every deployment's usage since the meter started, up to At.
// Tools that measure a stretch of time (tandem bench) take two readings
// and subtract.
type Live struct {
	Since    time.Time        `json:"since"`
	At       time.Time        `json:"at"`
	Currency string           `json:"currency"`
	Models   map[string]Usage `json:"models"`
}

// Live flushes up to now and returns the running totals.
func (m *Meter) Live(now time.Time) *Live {
	l := &Live{At: now, Models: map[string]Usage{}}
	if m == nil {
		return l
	}
	m.Flush(now)
	m.mu.Lock()
	defer m.mu.Unlock()
	l.Since, l.Currency = m.started, m.prices.Currency
	for name, u := range m.totals {
		l.Models[name] = *u
	}
	return l
}

// Run flushes every `every` (1s when not positive) and persists every
// persistEvery, until ctx is done. It does not close the meter.
func (m *Meter) Run(ctx context.Context, every, persistEvery time.Duration) {
	if m == nil {
		return
	}
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m.Flush(now)
			if persistEvery > 0 && now.Sub(last) >= persistEvery {
				last = now
				if err := m.Persist(now); err != nil {
					m.log.Warn("persisting usage", "err", err)
				}
			}
		}
	}
}
