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
	return &Collector{self: self, expiry: expiry, now: now, log: log, peers: map[string]*peer{}}
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
	if err := c.keep(rep, c.now()); err != nil {
		problem.Write(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
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
	return nil
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
	if len(stats) == 0 || r.cfg.Leader == nil || r.cfg.Leader.IsLeader() {
		return
	}
	addr := r.cfg.Leader.LeaderAddr()
	if addr == "" {
		return
	}
	r.seq++
	err := r.post(ctx, addr, Report{Peer: r.cfg.Identity, Boot: r.boot, Seq: r.seq, Sent: now.UTC(), Deployments: stats})
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

func (r *Reporter) post(ctx context.Context, addr string, rep Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.Scheme+"://"+addr+Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Stats is both sides in one process, as the controller sees them (it
// implements controller.PeerStats; the guard is in internal/server, so
// that this package does not depend on the controller): every process
// reports when it follows and collects when it leads.
type Stats struct {
	*Reporter
	*Collector
}
