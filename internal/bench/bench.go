// Package bench runs the same model under several modes, one after the
// other, on the same traffic, and reports what each cost and how fast it
// answered. Each mode gets a `tandem serve` process and a data directory of
// its own; the load is sent open loop through the gateway (loadgen), and
// instance time and cost come from the server's cost meter (GET
// /v1/cost/live), read before and after the measured stretch.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/recommend"
	"tandem/internal/trace"
)

// Config is one benchmark.
type Config struct {
	// Binary is the tandem executable that runs `tandem serve`.
	Binary string
	// Manifest is the deployment to benchmark (manifest.Load); each mode
	// runs it with recommend.ForMode.
	Manifest *manifest.Manifest
	// ManifestPath is where the manifest came from (for the report).
	ManifestPath string
	// Modes run in this order.
	Modes []manifest.Mode
	// Trace is the traffic: when each request leaves, and optionally its
	// path and payload.
	Trace *trace.Trace
	// Pattern describes the traffic in the report.
	Pattern string
	// Duration is how long the measured stretch lasts at least (the
	// pattern's duration); it lasts until the last answer otherwise.
	Duration time.Duration
	// Target holds the default path, payload, method and headers; its URL
	// is set for each mode.
	Target loadgen.Target
	// Prices price the usage (the defaults when nil).
	Prices *cost.Prices
	// Tick is the servers' --autoscale-interval (their default when zero).
	Tick time.Duration
	// ServerArgs and ServerEnv are added to each `tandem serve`.
	ServerArgs []string
	ServerEnv  []string
	// Progress, when not nil, gets a progress bar while a mode runs.
	Progress io.Writer
	// Sample is how often instances and cost are sampled for the charts
	// (default: Duration/400, between 50ms and 5s).
	Sample time.Duration
	// WorkDir holds the servers' data directories (default: the system's
	// temporary folder); each is removed after its mode.
	WorkDir string
}

// Report is a benchmark's outcome: one entry per mode.
type Report struct {
	Model    string        `json:"model"`
	Manifest string        `json:"manifest,omitempty"`
	Pattern  string        `json:"pattern"`
	Requests int           `json:"requests"`
	Duration float64       `json:"duration_s"`
	Currency string        `json:"currency"`
	Started  time.Time     `json:"started"`
	Prices   *cost.Prices  `json:"prices"`
	Modes    []*ModeResult `json:"modes"`
}

// ModeResult is what one mode measured.
type ModeResult struct {
	Mode     manifest.Mode   `json:"mode"`
	Requests int             `json:"requests"`
	Errors   int             `json:"errors"`
	Latency  loadgen.Latency `json:"latency_ms"`
	// ColdStarts counts requests that waited for an instance to start.
	ColdStarts  int             `json:"cold_starts"`
	ColdLatency loadgen.Latency `json:"cold_start_latency_ms"`
	// InstanceStarts counts instances started during the measured
	// stretch, and StartMS is their mean time from decision to ready.
	InstanceStarts int     `json:"instance_starts"`
	StartMS        float64 `json:"instance_start_ms"`
	// InstanceSeconds is all instance time; ByState splits it.
	InstanceSeconds float64      `json:"instance_seconds"`
	ByState         StateSeconds `json:"instance_seconds_by_state"`
	CostTotal       float64      `json:"cost_total"`
	CostPer1K       float64      `json:"cost_per_1k"`
	// CostIdle is the part of CostTotal spent on instances serving nothing.
	CostIdle float64 `json:"cost_idle"`
	// Duration is the measured stretch, in seconds.
	Duration float64 `json:"duration_s"`
	// Usage is the meter's reading over the measured stretch.
	Usage        cost.Usage `json:"usage"`
	ErrorSamples []string   `json:"error_samples,omitempty"`
	Series       Series     `json:"series"`
}

// StateSeconds is instance time by state.
type StateSeconds struct {
	Starting float64 `json:"starting"`
	Busy     float64 `json:"busy"`
	Idle     float64 `json:"idle"`
}

// Series are the measurements over time the HTML report charts.
type Series struct {
	Instances []InstancePoint `json:"instances"`
	Latency   []LatencyPoint  `json:"latency"`
}

// InstancePoint is one sample of a mode's instances and cost so far.
type InstancePoint struct {
	T        float64 `json:"t"` // seconds since the measured stretch began
	Ready    int     `json:"ready"`
	Starting int     `json:"starting"`
	Draining int     `json:"draining"`
	Cost     float64 `json:"cost"` // cumulative
}

// LatencyPoint summarises the requests scheduled in one interval.
type LatencyPoint struct {
	T        float64 `json:"t"` // the interval's start, seconds
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Cold     int     `json:"cold"`
	P50      float64 `json:"p50"` // milliseconds
	P99      float64 `json:"p99"`
	Max      float64 `json:"max"`
}

// ErrConfig is matched by errors.Is for a Config that cannot run.
var ErrConfig = errors.New("invalid benchmark")

// Run benchmarks every mode of cfg, one after the other, and returns the
// report. On error, the report holds the modes that finished.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	switch {
	case cfg.Binary == "":
		return nil, fmt.Errorf("%w: no tandem binary", ErrConfig)
	case cfg.Manifest == nil:
		return nil, fmt.Errorf("%w: no manifest", ErrConfig)
	case cfg.Trace == nil || cfg.Trace.Len() == 0:
		return nil, fmt.Errorf("%w: no requests to send", ErrConfig)
	case len(cfg.Modes) == 0:
		return nil, fmt.Errorf("%w: no modes", ErrConfig)
	}
	if cfg.Prices == nil {
		cfg.Prices = cost.DefaultPrices()
	}
	cfg.Duration = max(cfg.Duration, cfg.Trace.Duration())
	if cfg.Sample <= 0 {
		cfg.Sample = min(max(cfg.Duration/400, 50*time.Millisecond), 5*time.Second)
	}
	rep := &Report{
		Model: cfg.Manifest.Name, Manifest: cfg.ManifestPath, Pattern: cfg.Pattern,
		Requests: cfg.Trace.Len(), Duration: cfg.Duration.Seconds(), Currency: cfg.Prices.Currency,
		Started: time.Now().UTC(), Prices: cfg.Prices,
	}
	for _, mode := range cfg.Modes {
		mr, err := runMode(ctx, &cfg, mode)
		if err != nil {
			return rep, fmt.Errorf("mode %s: %w", mode, err)
		}
		rep.Modes = append(rep.Modes, mr)
	}
	return rep, nil
}

func runMode(ctx context.Context, cfg *Config, mode manifest.Mode) (*ModeResult, error) {
	dir, err := os.MkdirTemp(cfg.WorkDir, "tandem-bench-"+string(mode)+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := StartServer(ctx, ServerConfig{
		Binary: cfg.Binary, DataDir: filepath.Join(dir, "data"), Tick: cfg.Tick, Args: cfg.ServerArgs, Env: cfg.ServerEnv,
	})
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Stop()
		}
	}()
	fail := func(err error) (*ModeResult, error) {
		return nil, fmt.Errorf("%w\ntandem serve output:\n%s", err, lastLines(srv.Log(), 20))
	}

	man := recommend.ForMode(cfg.Manifest, mode)
	text, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	baseDir := ""
	if cfg.ManifestPath != "" {
		baseDir, _ = filepath.Abs(filepath.Dir(cfg.ManifestPath))
	}
	if _, err := srv.Client().Deploy(ctx, string(text), baseDir); err != nil {
		return fail(fmt.Errorf("deploying %s: %w", man.Name, err))
	}
	if err := settle(ctx, srv, man); err != nil {
		return fail(err)
	}
	l0, err := srv.Live(ctx)
	if err != nil {
		return fail(err)
	}
	n0, sum0, err := srv.Starts(ctx, man.Name)
	if err != nil {
		return fail(err)
	}

	t0 := time.Now()
	smp := &sampler{srv: srv, name: man.Name, mode: mode, base: l0.Models[man.Name], t0: t0, prices: cfg.Prices}
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); smp.run(sctx, cfg.Sample) }()
	var prog loadgen.Progress
	bar := startBar(cfg.Progress, string(mode), cfg.Trace.Len(), cfg.Duration, &prog)

	target := cfg.Target
	target.URL = "http://" + srv.Gateway + "/models/" + man.Name
	results := (&loadgen.Runner{}).Run(ctx, cfg.Trace, target, &prog)
	if rest := time.Until(t0.Add(cfg.Duration)); rest > 0 && ctx.Err() == nil {
		select {
		case <-time.After(rest):
		case <-ctx.Done():
		}
	}
	l1, err := srv.Live(context.WithoutCancel(ctx))
	elapsed := time.Since(t0)
	stopSampling()
	wg.Wait()
	bar.stop()
	if err != nil {
		return fail(err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	n1, sum1, err := srv.Starts(ctx, man.Name)
	if err != nil {
		return fail(err)
	}
	stopped = true
	if err := srv.Stop(); err != nil {
		return nil, err
	}

	u := l1.Models[man.Name].Minus(l0.Models[man.Name])
	u.Mode = mode
	mr := summarize(results, cfg.Duration)
	mr.Mode = mode
	mr.Usage = u
	mr.Duration = elapsed.Seconds()
	mr.InstanceStarts = n1 - n0
	if mr.InstanceStarts > 0 {
		mr.StartMS = float64(sum1-sum0) / float64(mr.InstanceStarts) / float64(time.Millisecond)
	}
	mr.ByState = StateSeconds{Starting: u.Starting.Seconds, Busy: u.Busy.Seconds, Idle: u.Idle.Seconds}
	mr.InstanceSeconds = u.Total().Seconds
	mr.CostTotal = cfg.Prices.Cost(mode, u)
	mr.CostIdle = cfg.Prices.IdleCost(mode, u)
	if mr.Requests > 0 {
		mr.CostPer1K = mr.CostTotal / float64(mr.Requests) * 1000
	}
	mr.Series.Instances = smp.points
	return mr, nil
}

// settle waits until the deployment is where a measured stretch starts:
// dedicated with its minimum ready, serverless with nothing running.
func settle(ctx context.Context, srv *Server, m *manifest.Manifest) error {
	limit := m.Timeouts.Startup.D() + 30*time.Second
	deadline := time.Now().Add(limit)
	want := m.Scaling.MinInstances()
	for {
		st, err := srv.Status(ctx, m.Name)
		if err != nil {
			return err
		}
		if st.Ready >= want && st.Starting == 0 && st.Draining == 0 && (want > 0 || st.Ready == 0) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d instances ready after %s (last error: %s)", m.Name, st.Ready, want, limit, st.LastError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sampler polls the server for the instances and cost charts.
type sampler struct {
	srv    *Server
	name   string
	mode   manifest.Mode
	base   cost.Usage
	t0     time.Time
	prices *cost.Prices
	points []InstancePoint
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *sampler) sample(ctx context.Context) {
	st, err := s.srv.Status(ctx, s.name)
	if err != nil {
		return
	}
	l, err := s.srv.Live(ctx)
	if err != nil {
		return
	}
	u := l.Models[s.name].Minus(s.base)
	s.points = append(s.points, InstancePoint{
		T: time.Since(s.t0).Seconds(), Ready: st.Ready, Starting: st.Starting, Draining: st.Draining,
		Cost: s.prices.Cost(s.mode, u),
	})
}

// summarize turns the load generator's results into latency figures and
// the latency chart's series.
func summarize(results []loadgen.Result, d time.Duration) *ModeResult {
	mr := &ModeResult{Requests: len(results)}
	all, cold := loadgen.NewHistogram(), loadgen.NewHistogram()
	width := min(max(d/120, 100*time.Millisecond), time.Minute)
	var bucket []float64
	var pt LatencyPoint
	var ptStart time.Duration
	flush := func() {
		if pt.Requests == 0 {
			return
		}
		if len(bucket) > 0 {
			slices.Sort(bucket)
			pt.P50 = bucket[len(bucket)/2]
			pt.P99 = bucket[min(len(bucket)-1, len(bucket)*99/100)]
			pt.Max = bucket[len(bucket)-1]
		}
		mr.Series.Latency = append(mr.Series.Latency, pt)
	}
	seen := map[string]bool{}
	for _, r := range results {
		start := r.Scheduled.Truncate(width)
		if pt.Requests > 0 && ptStart != start {
			flush()
			pt, bucket = LatencyPoint{}, bucket[:0]
		}
		pt.T, ptStart = start.Seconds(), start
		pt.Requests++
		if !r.OK() {
			mr.Errors++
			pt.Errors++
			if !seen[r.Err] && len(mr.ErrorSamples) < 5 {
				seen[r.Err] = true
				mr.ErrorSamples = append(mr.ErrorSamples, r.Err)
			}
			continue
		}
		all.Record(r.Latency)
		bucket = append(bucket, float64(r.Latency)/float64(time.Millisecond))
		if r.ColdStart {
			mr.ColdStarts++
			pt.Cold++
			cold.Record(r.Latency)
		}
	}
	flush()
	mr.Latency = all.Summary()
	mr.ColdLatency = cold.Summary()
	return mr
}
