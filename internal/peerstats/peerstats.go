package peerstats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"tandem/internal/problem"
)

// Path is the collector's route on the admin listener.
const Path = "/internal/v1/stats"

// Defaults for Config.
const (
	// DefaultInterval is the controller's default tick: a report carries
	// what one tick of every deployment saw.
	DefaultInterval = time.Second
	// ExpiryReports is how many report intervals a peer's last report
	// counts for. Five holds a follower's traffic through four lost
	// reports in a row (a slow post, a GC pause, a leader change that the
	// followers learn of one lease retry period, 2 s, later), so a brief
	// loss never reads as a drop in traffic; yet a dead follower stops
	// counting within the default panic window (6 s), before the
	// autoscaler could act on its ghost for long.
	ExpiryReports = 5
	// MaxBody bounds a report's size: about 10,000 deployments.
	MaxBody = 1 << 20
	// maxPeers bounds the collector's memory whatever authenticated
	// clients send; a cluster runs a handful of tandem processes.
	maxPeers = 256
)

// Report is the body of POST Path: one follower's traffic for one report
// interval, every deployment it runs in one batch.
type Report struct {
	// Peer is the sender's identity (its lease identity).
	Peer string `json:"peer"`
	// Boot is when the sender's reporter started (Unix nanoseconds), so
	// that a restarted process with the same identity (a container
	// restarted in its pod) is not taken for a late report.
	Boot int64 `json:"boot"`
	// Seq counts the sender's reports from 1; the collector keeps the
	// highest of a Boot.
	Seq uint64 `json:"seq"`
	// Sent is the sender's clock when it sent the report (informational:
	// freshness is judged by the collector's clock at receipt).
	Sent        time.Time `json:"sent"`
	Deployments []Stat    `json:"deployments"`
	// Spend is the sender's own spend per tenant in each tenant's current
	// budget period (cumulative over the period, not a delta: a lost
	// report loses nothing, the next one carries it all).
	Spend []Spend `json:"spend,omitempty"`
	// Reply asks for a Reply in the answer (200 with JSON); without it
	// the answer is 204.
	Reply bool `json:"reply,omitempty"`
}

// Spend is one tenant's metered spend at one process over the tenant's
// budget period that began at Period (Unix nanoseconds) and ends at Until
// (0: the tenant's lifetime). A tenant's periods are anchored at its
// creation time, which every process shares through the tenant catalog,
// so the processes agree on them (up to their clocks' skew).
type Spend struct {
	Tenant string  `json:"tenant"`
	Period int64   `json:"period"`
	Until  int64   `json:"until,omitempty"`
	USD    float64 `json:"usd"`
}

// Reply is the leader's answer to a report that asks for one: what the
// sender needs to split tenants' limits with the other processes.
type Reply struct {
	// Replicas is the number of live tandem processes: the leader and
	// every process whose report is younger than the expiry.
	Replicas int `json:"replicas"`
	// Spend is, per tenant, what every process but the sender spent in
	// the tenant's latest period that the leader knows of.
	Spend []Spend `json:"spend,omitempty"`
}

// Stat is one deployment's traffic at one process over one interval.
type Stat struct {
	Name string `json:"name"`
	// Concurrency is in flight plus queued, averaged over WindowMS (the
	// pools' integral over the interval, not a point sample).
	Concurrency float64 `json:"concurrency"`
	// WindowMS is the time the average covers, in milliseconds.
	WindowMS int64 `json:"window_ms"`
	// Queued is the requests waiting at the last sample.
	Queued int `json:"queued"`
}

// Limits on a report's values, beyond which it is refused as malformed.
const (
	maxName        = 253
	maxConcurrency = 1e9
	maxUSD         = 1e12
)

// DecodeReport reads and checks a report: strict JSON (no unknown fields,
// nothing after the object), a peer, a positive sequence, and for each
// deployment a name (once), a finite concurrency >= 0 and counts >= 0.
// The error is a *problem.Error: 400 naming the field at fault, or 413
// when r is an http.MaxBytesReader that reached its limit.
func DecodeReport(r io.Reader) (*Report, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem.New(http.StatusRequestEntityTooLarge, "stats_too_large",
				fmt.Sprintf("a stats report holds at most %d bytes", mbe.Limit))
		}
		return nil, bad("", "the body is not a stats report: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem.New(http.StatusRequestEntityTooLarge, "stats_too_large",
				fmt.Sprintf("a stats report holds at most %d bytes", mbe.Limit))
		}
		return nil, bad("", "the body holds more than one JSON value")
	}
	switch {
	case rep.Peer == "":
		return nil, bad("peer", "peer is required (the sender's identity)")
	case len(rep.Peer) > maxName:
		return nil, bad("peer", fmt.Sprintf("peer is %d bytes long; at most %d", len(rep.Peer), maxName))
	case rep.Seq == 0:
		return nil, bad("seq", "seq must be at least 1")
	}
	seen := make(map[string]bool, len(rep.Deployments))
	for i, s := range rep.Deployments {
		f := fmt.Sprintf("deployments[%d]", i)
		switch {
		case s.Name == "":
			return nil, bad(f+".name", "name is required")
		case len(s.Name) > maxName:
			return nil, bad(f+".name", fmt.Sprintf("name is %d bytes long; at most %d", len(s.Name), maxName))
		case seen[s.Name]:
			return nil, bad(f+".name", fmt.Sprintf("deployment %q appears twice", s.Name))
		case math.IsNaN(s.Concurrency) || s.Concurrency < 0 || s.Concurrency > maxConcurrency:
			return nil, bad(f+".concurrency", fmt.Sprintf("concurrency must be between 0 and %g", float64(maxConcurrency)))
		case s.WindowMS < 0:
			return nil, bad(f+".window_ms", "window_ms must not be negative")
		case s.Queued < 0:
			return nil, bad(f+".queued", "queued must not be negative")
		}
		seen[s.Name] = true
	}
	tenants := make(map[string]bool, len(rep.Spend))
	for i, s := range rep.Spend {
		f := fmt.Sprintf("spend[%d]", i)
		switch {
		case s.Tenant == "":
			return nil, bad(f+".tenant", "tenant is required")
		case len(s.Tenant) > maxName:
			return nil, bad(f+".tenant", fmt.Sprintf("tenant is %d bytes long; at most %d", len(s.Tenant), maxName))
		case tenants[s.Tenant]:
			return nil, bad(f+".tenant", fmt.Sprintf("tenant %q appears twice", s.Tenant))
		case math.IsNaN(s.USD) || s.USD < 0 || s.USD > maxUSD:
			return nil, bad(f+".usd", fmt.Sprintf("usd must be between 0 and %g", float64(maxUSD)))
		case s.Until != 0 && s.Until <= s.Period:
			return nil, bad(f+".until", "until must be after period (or 0)")
		}
		tenants[s.Tenant] = true
	}
	return &rep, nil
}

func bad(field, msg string) *problem.Error {
	return problem.New(http.StatusBadRequest, "invalid_stats", msg).WithField(field)
}

// Collector is the leader's side: it keeps the latest report of each peer
// and sums what fresh ones say. It is safe for concurrent use.
type Collector struct {
	self   string
	expiry time.Duration
	now    func() time.Time
	log    *slog.Logger

	mu    sync.Mutex
	peers map[string]*peer
	// spent is each process's latest spend per tenant, this one's under
	// self. Unlike concurrency it does not expire with the report: a
	// process that is gone still spent it. An entry goes when its period
	// ends or a later period of its tenant is reported.
	spent map[string]map[string]Spend
}

type peer struct {
	boot int64
	seq  uint64
	at   time.Time // the collector's clock at receipt
	conc map[string]float64
}

// NewCollector returns a collector that counts a peer's report for expiry
// after it arrived, and ignores reports signed self (this process). now is
// the clock that stamps reports; nil is time.Now. It must be the clock the
// callers of Remote read.
func NewCollector(self string, expiry time.Duration, now func() time.Time, log *slog.Logger) *Collector {
	if expiry <= 0 {
		expiry = ExpiryReports * DefaultInterval
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Collector{self: self, expiry: expiry, now: now, log: log, peers: map[string]*peer{}, spent: map[string]map[string]Spend{}}
}

// ServeHTTP answers POST Path: 204 once the report is kept; 400 for a
// malformed report, 413 for one over MaxBody, 409 for one older than the
// peer's last or sent by this process, 503 when too many peers report.
// Authentication is the admin listener's (api.Protect), in front of it.
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "stats are POSTed"))
		return
	}
	rep, err := DecodeReport(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		problem.Write(w, err)
		return
	}
	now := c.now()
	if err := c.keep(rep, now); err != nil {
		problem.Write(w, err)
		return
	}
	if !rep.Reply {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c.Reply(rep.Peer, now))
}

// keep stores rep as its peer's latest, received at now.
func (c *Collector) keep(rep *Report, now time.Time) *problem.Error {
	if rep.Peer == c.self {
		return problem.New(http.StatusConflict, "stats_from_self",
			"this report comes from this process ("+rep.Peer+"); it counts its own traffic already")
	}
	conc := make(map[string]float64, len(rep.Deployments))
	for _, s := range rep.Deployments {
		conc[s.Name] = s.Concurrency
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.peers[rep.Peer]
	if ok && p.boot == rep.Boot && rep.Seq <= p.seq {
		return problem.New(http.StatusConflict, "stale_stats",
			fmt.Sprintf("report %d of %s is not newer than report %d, already kept", rep.Seq, rep.Peer, p.seq))
	}
	if !ok {
		for name, p := range c.peers {
			if !c.fresh(p, now) {
				delete(c.peers, name)
			}
		}
		if len(c.peers) >= maxPeers {
			e := problem.New(http.StatusServiceUnavailable, "too_many_peers",
				fmt.Sprintf("stats from %d other tandem processes are kept already", maxPeers))
			e.RetryAfter = c.expiry
			return e
		}
		c.log.Info("peer stats: a tandem process reports its traffic", "peer", rep.Peer)
	}
	c.peers[rep.Peer] = &peer{boot: rep.Boot, seq: rep.Seq, at: now, conc: conc}
	if rep.Reply || len(rep.Spend) > 0 {
		c.setSpend(rep.Peer, rep.Spend, now)
	}
	return nil
}

// maxSpenders bounds how many processes' spend the collector keeps,
// gone ones included (pods replaced over a budget period).
const maxSpenders = 4 * maxPeers

// setSpend replaces who's spend; c.mu is held.
func (c *Collector) setSpend(who string, spend []Spend, now time.Time) {
	m := make(map[string]Spend, len(spend))
	for _, s := range spend {
		m[s.Tenant] = s
	}
	if _, ok := c.spent[who]; !ok && len(c.spent) >= maxSpenders {
		c.expireSpend(now)
		for name := range c.spent { // still full: forget a gone process
			if _, live := c.peers[name]; !live && name != c.self && len(c.spent) >= maxSpenders {
				delete(c.spent, name)
			}
		}
	}
	c.spent[who] = m
}

// expireSpend drops spend over periods that have ended; c.mu is held.
func (c *Collector) expireSpend(now time.Time) {
	for who, m := range c.spent {
		for t, s := range m {
			if s.Until != 0 && s.Until <= now.UnixNano() {
				delete(m, t)
			}
		}
		if len(m) == 0 && who != c.self {
			delete(c.spent, who)
		}
	}
}

// SetOwn records this process's own spend (the leader's, which it does
// not post to itself).
func (c *Collector) SetOwn(spend []Spend, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setSpend(c.self, spend, now)
}

// Reply returns what the leader tells the process asker (this process
// when asker is its own identity): the live processes, and per tenant
// the spend of every other process, this one included, over the latest
// period reported for the tenant.
func (c *Collector) Reply(asker string, now time.Time) Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireSpend(now)
	rep := Reply{Replicas: 1}
	for name, p := range c.peers {
		if name != c.self && c.fresh(p, now) {
			rep.Replicas++
		}
	}
	latest := map[string]Spend{}
	for _, m := range c.spent {
		for t, s := range m {
			if l, ok := latest[t]; !ok || s.Period > l.Period {
				latest[t] = Spend{Tenant: t, Period: s.Period, Until: s.Until}
			}
		}
	}
	for who, m := range c.spent {
		if who == asker {
			continue
		}
		for t, s := range m {
			if l := latest[t]; s.Period == l.Period {
				l.USD += s.USD
				latest[t] = l
			}
		}
	}
	for _, s := range latest {
		rep.Spend = append(rep.Spend, s)
	}
	return rep
}

func (c *Collector) fresh(p *peer, now time.Time) bool {
	return now.Sub(p.at) < c.expiry
}

// Remote returns the sum, over the peers whose last report is younger
// than the expiry at now, of the concurrency each reported for the
// deployment (0 when none). It does not block on I/O.
func (c *Collector) Remote(deployment string, now time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum float64
	for _, p := range c.peers {
		if c.fresh(p, now) {
			sum += p.conc[deployment]
		}
	}
	return sum
}

// Leader says who leads and where to reach it (the kubernetes backend:
// backend.LeaderLocator).
type Leader interface {
	// IsLeader reports whether this process leads now.
	IsLeader() bool
	// LeaderAddr is the leader's peer address (host:port), "" when unknown.
	LeaderAddr() string
}

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	// Identity names this process in its reports (its lease identity).
	Identity string
	// Leader finds the leader; reports go nowhere while this process leads
	// or no leader is known.
	Leader Leader
	// Token is the admin bearer token; "" sends none (loopback peers).
	Token string
	// Interval is how often a report is sent (default DefaultInterval).
	Interval time.Duration
	// Scheme is "http" (default) or "https", as the peers' admin
	// listeners serve.
	Scheme string
	// Client sends the reports; nil is a client that gives up after one
	// Interval.
	Client *http.Client
	Logger *slog.Logger
	// Ledger, when set, is the tenants' spend to report and the place
	// that learns the leader's Reply. With a ledger a report is sent
	// every interval, even with no traffic: the leader counts the live
	// processes by their reports.
	Ledger Ledger
	// Local is this process's own collector: while this process leads,
	// the ledger's spend is recorded there and the reply read from it.
	Local *Collector
}

// Ledger is the tenant registry as the reporter sees it.
type Ledger interface {
	// Spend is this process's spend per tenant in the current periods.
	Spend(now time.Time) []Spend
	// Cluster takes the leader's reply.
	Cluster(Reply)
}

// Reporter is a follower's side: Observe adds up each deployment's traffic;
// Run posts it to the leader once per interval. It is safe for concurrent
// use.
type Reporter struct {
	cfg  ReporterConfig
	boot int64
	log  *slog.Logger

	mu  sync.Mutex
	acc map[string]*integral

	// seq and failing belong to the goroutine that reports.
	seq     uint64
	failing bool
}

type integral struct {
	sum    float64 // concurrency * seconds
	dt     time.Duration
	queued int
}

// NewReporter returns a reporter; Run sends its reports.
func NewReporter(cfg ReporterConfig) *Reporter {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Interval}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Reporter{cfg: cfg, boot: time.Now().UnixNano(), log: cfg.Logger, acc: map[string]*integral{}}
}

// Observe adds a deployment's sample (avg over dt, queued now) to the
// next report. It never blocks on I/O.
func (r *Reporter) Observe(deployment string, avg float64, dt time.Duration, queued int, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.acc[deployment]
	if a == nil {
		a = &integral{}
		r.acc[deployment] = a
	}
	if dt > 0 && avg >= 0 && !math.IsInf(avg, 0) && !math.IsNaN(avg) {
		a.sum += avg * dt.Seconds()
		a.dt += dt
	}
	a.queued = queued
}

// Run reports every interval until ctx is done.
func (r *Reporter) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.report(ctx, now)
		}
	}
}

// take returns what was observed since the last call, as stats.
func (r *Reporter) take() []Stat {
	r.mu.Lock()
	acc := r.acc
	r.acc = make(map[string]*integral, len(acc))
	r.mu.Unlock()
	stats := make([]Stat, 0, len(acc))
	for name, a := range acc {
		s := Stat{Name: name, Queued: a.queued, WindowMS: a.dt.Milliseconds()}
		if a.dt > 0 {
			s.Concurrency = a.sum / a.dt.Seconds()
		} else {
			s.Concurrency = float64(a.queued)
		}
		stats = append(stats, s)
	}
	return stats
}

// report sends what was observed since the last report to the leader,
// unless this process leads, no leader is known or nothing was observed;
// what it does not send is dropped (the leader holds a follower's last
// report until it expires).
func (r *Reporter) report(ctx context.Context, now time.Time) {
	stats := r.take()
	var spend []Spend
	if r.cfg.Ledger != nil {
		spend = r.cfg.Ledger.Spend(now)
	}
	if r.cfg.Leader == nil {
		return
	}
	if r.cfg.Leader.IsLeader() {
		if r.cfg.Ledger != nil && r.cfg.Local != nil {
			r.cfg.Local.SetOwn(spend, now)
			r.cfg.Ledger.Cluster(r.cfg.Local.Reply(r.cfg.Identity, now))
		}
		return
	}
	if len(stats) == 0 && r.cfg.Ledger == nil {
		return
	}
	addr := r.cfg.Leader.LeaderAddr()
	if addr == "" {
		return
	}
	r.seq++
	if stats == nil {
		stats = []Stat{}
	}
	reply, err := r.post(ctx, addr, Report{Peer: r.cfg.Identity, Boot: r.boot, Seq: r.seq, Sent: now.UTC(), Deployments: stats,
		Spend: spend, Reply: r.cfg.Ledger != nil})
	if err == nil && reply != nil {
		r.cfg.Ledger.Cluster(*reply)
	}
	switch {
	case err != nil && !r.failing:
		r.failing = true
		r.log.Warn("peer stats: the leader did not take this process's traffic report; it will decide on its own traffic until it does",
			"leader", addr, "err", err)
	case err != nil:
		r.log.Debug("peer stats: report failed", "leader", addr, "err", err)
	case r.failing:
		r.failing = false
		r.log.Info("peer stats: the leader takes this process's traffic reports again", "leader", addr)
	}
}

// post sends rep; the reply is nil unless rep asked for one.
func (r *Reporter) post(ctx context.Context, addr string, rep Report) (*Reply, error) {
	body, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.Scheme+"://"+addr+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	if !rep.Reply {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
		return nil, nil
	}
	var reply Reply
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(&reply); err != nil {
		return nil, fmt.Errorf("the leader's reply: %w", err)
	}
	if reply.Replicas < 1 {
		return nil, fmt.Errorf("the leader's reply counts %d processes", reply.Replicas)
	}
	return &reply, nil
}

// Stats is both sides in one process, as the controller sees them (it
// implements controller.PeerStats; the guard is in internal/server, so
// that this package does not depend on the controller): every process
// reports when it follows and collects when it leads.
type Stats struct {
	*Reporter
	*Collector
}
