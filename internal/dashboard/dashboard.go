package dashboard

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/recommend"
)

// Deployments is what the dashboard reads deployments from (the
// controller). List must be safe to call from any goroutine and must not
// block on the request path.
type Deployments interface {
	List() []*controller.Status
}

// Costs is what the dashboard reads cost from (the cost meter). Report
// returns usage and cost of every deployment when model is empty.
type Costs interface {
	Report(model string, since, now time.Time) (*cost.Report, error)
}

// Config says where the dashboard's data comes from.
type Config struct {
	// Deployments is required.
	Deployments Deployments
	// Costs, when nil, leaves cost out.
	Costs Costs
	// Metrics is the Prometheus registry with tandem's request metrics;
	// nil leaves request rate, latency and cold starts at zero.
	Metrics prometheus.Gatherer
	// Every is the sampling interval; zero means one second.
	Every time.Duration
	// Keep is how many samples the history holds; zero means 300 (five
	// minutes at one a second).
	Keep int
	// CostSince is how far back the cost shown reaches; zero means 24
	// hours, as `tandem cost` does by default.
	CostSince time.Duration
	// CostEvery is how often the cost report is read again; zero means 10
	// seconds. The report reads the meter's stored buckets back (a day of
	// them for 10 deployments took 0.36 s here), too much for every sample.
	CostEvery time.Duration
	// Logger; nil is slog.Default.
	Logger *slog.Logger
}

// Dashboard samples tandem's state and serves the pages and their data.
type Dashboard struct {
	cfg Config
	log *slog.Logger

	// rep is the last cost report, read at repAt; only Sample uses them.
	rep   *cost.Report
	repAt time.Time

	mu      sync.Mutex
	samples []*sample // a ring, oldest first once full: samples[next:]+samples[:next]
	next    int
	events  []Event // newest last, at most maxEvents
	last    *sample
	latest  map[string]latest // of last, by deployment
	curr    string
}

const maxEvents = 200

// New returns a dashboard that has taken no sample yet.
func New(cfg Config) *Dashboard {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 300
	}
	if cfg.CostSince <= 0 {
		cfg.CostSince = 24 * time.Hour
	}
	if cfg.CostEvery <= 0 {
		cfg.CostEvery = 10 * time.Second
	}
	d := &Dashboard{cfg: cfg, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("component", "dashboard")
	return d
}

// Start takes a first sample, samples every cfg.Every until ctx is done in
// a goroutine of its own, and returns d.
func Start(ctx context.Context, cfg Config) *Dashboard {
	d := New(cfg)
	d.Sample(time.Now())
	go d.Run(ctx)
	return d
}

// Run samples every cfg.Every until ctx is done. Call it once.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.Sample(now)
		}
	}
}

// Sample reads the sources once (the cost report every cfg.CostEvery) and
// appends what it read to the history, with the events that tell it from
// the sample before. Tests call it with their own clock; Run calls it
// every cfg.Every. Only one goroutine may call it.
func (d *Dashboard) Sample(now time.Time) {
	sts := d.cfg.Deployments.List()
	var mfs = d.gather()
	if d.cfg.Costs != nil && (d.repAt.IsZero() || now.Sub(d.repAt) >= d.cfg.CostEvery || now.Before(d.repAt)) {
		rep, err := d.cfg.Costs.Report("", now.Add(-d.cfg.CostSince), now)
		if err != nil {
			d.log.Warn("reading the cost report", "err", err)
		} else {
			d.rep, d.repAt = rep, now
		}
	}
	rep := d.rep
	s, latest := build(now, sts, mfs, rep)
	share(d.last, s) // d.last is only written here, by the one caller
	d.mu.Lock()
	defer d.mu.Unlock()
	evs := events(d.last, s, latest)
	d.events = append(d.events, evs...)
	if n := len(d.events) - maxEvents; n > 0 {
		d.events = append(d.events[:0:0], d.events[n:]...)
	}
	if rep != nil {
		d.curr = rep.Currency
	}
	d.last, d.latest = s, latest
	if len(d.samples) < d.cfg.Keep {
		d.samples = append(d.samples, s)
		return
	}
	d.samples[d.next] = s
	d.next = (d.next + 1) % d.cfg.Keep
}

func (d *Dashboard) gather() []*dto.MetricFamily {
	if d.cfg.Metrics == nil {
		return nil
	}
	mfs, err := d.cfg.Metrics.Gather()
	if err != nil {
		// Gather returns what it could along with the error.
		d.log.Debug("gathering metrics", "err", err)
	}
	return mfs
}

// history returns the samples oldest first, the events and what only the
// last sample shows, under the lock; samples and latest are never changed
// once taken, so callers read them freely.
func (d *Dashboard) history() ([]*sample, []Event, map[string]latest, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*sample, 0, len(d.samples))
	out = append(out, d.samples[d.next:]...)
	out = append(out, d.samples[:d.next]...)
	return out, append([]Event(nil), d.events...), d.latest, d.curr
}

// window is how many samples back rates and quantiles reach.
const window = 5

// Overview is what /ui/api/overview answers: the latest state of every
// deployment (or of one, with ?d=NAME), its series over the history, and
// the recent events, newest first.
type Overview struct {
	At          time.Time        `json:"at"`
	Every       float64          `json:"every_seconds"`
	Currency    string           `json:"currency"`
	Deployments []DeploymentView `json:"deployments"`
	Events      []Event          `json:"events"`
}

// DeploymentView is one deployment on the dashboard.
type DeploymentView struct {
	Name     string    `json:"name"`
	Mode     string    `json:"mode"`
	Backend  string    `json:"backend"`
	Revision string    `json:"revision"`
	Traffic  []Traffic `json:"traffic"`
	Desired  int       `json:"desired"`
	Ready    int       `json:"ready"`
	Starting int       `json:"starting"`
	Draining int       `json:"draining"`
	InFlight int       `json:"in_flight"`
	Queued   int       `json:"queued"`
	Restarts int       `json:"restarts"`
	Reason   string    `json:"reason,omitempty"`
	// LastError is the deployment's last error, if any.
	LastError string `json:"last_error,omitempty"`
	// Requests is every request through the gateway since tandem started.
	Requests float64 `json:"requests"`
	// Rate is requests a second over the last few samples.
	Rate float64 `json:"rate"`
	// P50 and P99 are latency in milliseconds over the last few samples,
	// null without requests there.
	P50        *float64 `json:"p50_ms"`
	P99        *float64 `json:"p99_ms"`
	ColdStarts float64  `json:"cold_starts"`
	// Phases is the mean milliseconds of each instance start phase.
	Phases map[string]float64 `json:"phases_ms"`
	Cost   *CostView          `json:"cost"`
	Series Series             `json:"series"`
}

// Traffic is the share of requests a revision gets.
type Traffic struct {
	Revision string  `json:"revision"`
	Percent  float64 `json:"percent"`
}

// CostView is the cost report's line for a deployment, with the amounts
// written as `tandem cost` writes them.
type CostView struct {
	Cost     float64            `json:"cost"`
	Text     string             `json:"text"`
	As       map[string]float64 `json:"as"`
	AsText   map[string]string  `json:"as_text"`
	Requests int64              `json:"requests"`
}

// Series are a deployment's values over the history, one per sample; a
// null is a sample without a value (no requests, or not deployed yet).
type Series struct {
	T        []float64  `json:"t"` // Unix seconds
	Ready    []*float64 `json:"ready"`
	Starting []*float64 `json:"starting"`
	Draining []*float64 `json:"draining"`
	Queued   []*float64 `json:"queued"`
	Rate     []*float64 `json:"rate"`
	P50      []*float64 `json:"p50_ms"`
	P99      []*float64 `json:"p99_ms"`
	Cost     []*float64 `json:"cost"`
}

// Overview returns the dashboard's view of deployment name, or of every
// deployment when name is empty.
func (d *Dashboard) Overview(name string) *Overview {
	samples, evs, latest, currency := d.history()
	o := &Overview{Every: d.cfg.Every.Seconds(), Currency: currency, Deployments: []DeploymentView{}, Events: []Event{}}
	for i := len(evs) - 1; i >= 0 && len(o.Events) < 50; i-- {
		if name == "" || evs[i].Deployment == name {
			o.Events = append(o.Events, evs[i])
		}
	}
	if len(samples) == 0 {
		return o
	}
	last := samples[len(samples)-1]
	o.At = last.At
	for _, n := range sortedNames(last.Deps) {
		if name == "" || n == name {
			o.Deployments = append(o.Deployments, view(n, samples, latest[n], currency))
		}
	}
	return o
}

func view(name string, samples []*sample, l latest, currency string) DeploymentView {
	last := samples[len(samples)-1]
	p := last.Deps[name]
	v := DeploymentView{
		Name: name, Mode: p.Mode, Backend: p.Backend, Revision: p.Revision,
		Traffic: []Traffic{{Revision: p.Revision, Percent: 100}}, // one revision serves at a time today
		Desired: p.Desired, Ready: p.Ready, Starting: p.Starting, Draining: p.Draining,
		InFlight: p.InFlight, Queued: p.Queued, Restarts: p.Restarts, Reason: l.Reason, LastError: p.LastError,
		Requests: p.Requests, ColdStarts: p.ColdStarts, Phases: map[string]float64{},
	}
	for ph, s := range p.Phases {
		v.Phases[ph] = s * 1000
	}
	if c := l.Cost; c != nil {
		v.Cost = &CostView{Cost: c.Cost, Text: money(c.Cost, currency), As: map[string]float64{}, AsText: map[string]string{}, Requests: c.Usage.Requests}
		for m, x := range c.CostAs {
			v.Cost.As[string(m)] = x
			v.Cost.AsText[string(m)] = money(x, currency)
		}
	}
	for i, s := range samples {
		v.Series.T = append(v.Series.T, float64(s.At.UnixMilli())/1000)
		p := s.Deps[name]
		if p == nil {
			v.Series.Ready = append(v.Series.Ready, nil)
			v.Series.Starting = append(v.Series.Starting, nil)
			v.Series.Draining = append(v.Series.Draining, nil)
			v.Series.Queued = append(v.Series.Queued, nil)
			v.Series.Rate = append(v.Series.Rate, nil)
			v.Series.P50 = append(v.Series.P50, nil)
			v.Series.P99 = append(v.Series.P99, nil)
			v.Series.Cost = append(v.Series.Cost, nil)
			continue
		}
		v.Series.Ready = append(v.Series.Ready, num(float64(p.Ready)))
		v.Series.Starting = append(v.Series.Starting, num(float64(p.Starting)))
		v.Series.Draining = append(v.Series.Draining, num(float64(p.Draining)))
		v.Series.Queued = append(v.Series.Queued, num(float64(p.Queued)))
		// Rates and quantiles over up to window samples back, within the
		// stretch where the deployment existed.
		j := i
		for j > 0 && i-j < window && samples[j-1].Deps[name] != nil {
			j--
		}
		var rate, p50, p99 *float64
		if j < i {
			q := samples[j].Deps[name]
			if dt := s.At.Sub(samples[j].At).Seconds(); dt > 0 {
				rate = num(max(p.Requests-q.Requests, 0) / dt)
			}
			p50 = ms(quantile(0.5, s.Bounds, q.Buckets, p.Buckets))
			p99 = ms(quantile(0.99, s.Bounds, q.Buckets, p.Buckets))
		}
		v.Series.Rate = append(v.Series.Rate, rate)
		v.Series.P50 = append(v.Series.P50, p50)
		v.Series.P99 = append(v.Series.P99, p99)
		var c *float64
		if p.Priced {
			c = num(p.Cost)
		}
		v.Series.Cost = append(v.Series.Cost, c)
		if i == len(samples)-1 {
			if rate != nil {
				v.Rate = *rate
			}
			v.P50, v.P99 = p50, p99
		}
	}
	return v
}

func num(v float64) *float64 { return &v }

func ms(seconds float64) *float64 {
	if math.IsNaN(seconds) {
		return nil
	}
	return num(seconds * 1000)
}

func money(v float64, currency string) string { return recommend.FormatMoney(v, currency) }
