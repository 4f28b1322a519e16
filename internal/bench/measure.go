package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/recommend"
	"tandem/internal/trace"
)

// MeasureConfig says how to measure a model's timings for recommend.
type MeasureConfig struct {
	// Binary, Tick, ServerArgs and ServerEnv are as in Config.
	Binary     string
	Tick       time.Duration
	ServerArgs []string
	ServerEnv  []string
	// Manifest is the deployment; ManifestPath where it came from.
	Manifest     *manifest.Manifest
	ManifestPath string
	// Target holds the default path, payload, method and headers.
	Target loadgen.Target
	// Trace, when set, gives the paths to measure: the five most frequent.
	Trace *trace.Trace
	// ColdStarts is how many starts to time (default 5; their mean is
	// kept, less the slowest), and Requests how many warm requests to time per path
	// (default 20).
	ColdStarts int
	Requests   int
	// WorkDir holds the server's data directory (default: temporary).
	WorkDir string
}

// Measure starts the model under a `tandem serve` of its own, times
// ColdStarts cold starts (decision to ready, from the server's start-phase
// metrics; the deployment is deleted and made again between them) and
// Requests warm requests on each path, one at a time, through the gateway.
func Measure(ctx context.Context, cfg MeasureConfig) (*recommend.Timings, error) {
	if cfg.ColdStarts <= 0 {
		cfg.ColdStarts = 5
	}
	if cfg.Requests <= 0 {
		cfg.Requests = 20
	}
	dir, err := os.MkdirTemp(cfg.WorkDir, "tandem-measure-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := StartServer(ctx, ServerConfig{Binary: cfg.Binary, DataDir: filepath.Join(dir, "data"), Tick: cfg.Tick, Args: cfg.ServerArgs, Env: cfg.ServerEnv})
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	fail := func(err error) (*recommend.Timings, error) {
		return nil, fmt.Errorf("measuring %s: %w\ntandem serve output:\n%s", cfg.Manifest.Name, err, lastLines(srv.Log(), 20))
	}
	man := recommend.ForMode(cfg.Manifest, manifest.Serverless)
	text, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	baseDir := ""
	if cfg.ManifestPath != "" {
		baseDir, _ = filepath.Abs(filepath.Dir(cfg.ManifestPath))
	}
	paths := topPaths(cfg.Trace, 5)
	tm := &recommend.Timings{Service: map[string][]time.Duration{}}
	target := cfg.Target
	target.URL = "http://" + srv.Gateway + "/models/" + man.Name
	runner := &loadgen.Runner{}
	var starts []time.Duration
	for i := 0; i < cfg.ColdStarts; i++ {
		if _, err := srv.Client().Deploy(ctx, string(text), baseDir); err != nil {
			return fail(fmt.Errorf("deploying: %w", err))
		}
		res := runner.Run(ctx, &trace.Trace{Requests: []trace.Request{paths[0]}}, target, nil)
		if len(res) != 1 || !res[0].OK() {
			return fail(fmt.Errorf("the first request failed: %+v", res))
		}
		n, total, err := srv.Starts(ctx, man.Name)
		if err != nil {
			return fail(err)
		}
		if n != 1 {
			return fail(fmt.Errorf("%d instances started for one request", n))
		}
		starts = append(starts, total)
		if i == 0 {
			if err := measureWarm(ctx, srv, runner, target, man.Name, paths, cfg.Requests, tm); err != nil {
				return fail(err)
			}
		}
		if err := srv.Client().Delete(ctx, man.Name); err != nil {
			return fail(fmt.Errorf("deleting: %w", err))
		}
	}
	// The mean, as cost adds starts up; but the slowest of five or more is
	// left out, so that one start slowed by a busy machine does not stand
	// for all.
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	if len(starts) >= 5 {
		starts = starts[:len(starts)-1]
	}
	var sum time.Duration
	for _, d := range starts {
		sum += d
	}
	tm.ColdStart = sum / time.Duration(len(starts))
	if _, ok := tm.Service[""]; !ok {
		tm.Service[""] = tm.Service[paths[0].Path] // for paths the trace has and the measure did not
	}
	return tm, nil
}

// ErrNoTimings means a bench report does not have what recommend needs.
var ErrNoTimings = errors.New("the bench report cannot give the model's timings")

// TimingsFrom takes a model's timings from a bench report: the mean start
// (decision to ready) of the instances its modes started; the busy time
// per request over all modes (each mode's conditions weigh alike: a fresh
// instance, a busier machine); and as overhead, what the clients of the
// mode with the fewest cold starts saw on top of its busy time.
func TimingsFrom(r *Report) (*recommend.Timings, error) {
	var starts, requests int64
	var startMS, busy float64
	var quiet *ModeResult
	for _, m := range r.Modes {
		starts += int64(m.InstanceStarts)
		startMS += m.StartMS * float64(m.InstanceStarts)
		requests += m.Usage.Requests
		busy += m.Usage.Busy.Seconds
		if m.Usage.Requests > 0 && (quiet == nil || m.ColdStarts < quiet.ColdStarts) {
			quiet = m
		}
	}
	if starts == 0 {
		return nil, fmt.Errorf("%w: no mode started an instance while measured (bench serverless too)", ErrNoTimings)
	}
	if quiet == nil || requests == 0 {
		return nil, fmt.Errorf("%w: no mode answered a request", ErrNoTimings)
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	service := sec(busy / float64(requests))
	client := time.Duration(quiet.Latency.Mean * float64(time.Millisecond))
	return &recommend.Timings{
		ColdStart: time.Duration(startMS / float64(starts) * float64(time.Millisecond)),
		Service:   map[string][]time.Duration{"": {max(service, time.Microsecond)}},
		Overhead:  max(client-sec(quiet.Usage.Busy.Seconds/float64(quiet.Usage.Requests)), 0),
	}, nil
}

// measureWarm times n warm requests on each path, one at a time so that
// no request waits for another. The client sees each request's latency;
// the cost meter sees how long the instance was busy in all. Their
// difference is the gateway and network overhead, taken off each latency
// to give the service time the simulation keeps an instance busy for.
func measureWarm(ctx context.Context, srv *Server, runner *loadgen.Runner, target loadgen.Target, name string, paths []trace.Request, n int, tm *recommend.Timings) error {
	var overhead time.Duration
	for _, p := range paths {
		before, err := srv.Live(ctx)
		if err != nil {
			return err
		}
		var lat []time.Duration
		var sum time.Duration
		for j := 0; j < n; j++ {
			res := runner.Run(ctx, &trace.Trace{Requests: []trace.Request{p}}, target, nil)
			if len(res) != 1 || !res[0].OK() {
				return fmt.Errorf("a warm request to %q failed: %+v", p.Path, res)
			}
			lat = append(lat, res[0].Latency)
			sum += res[0].Latency
		}
		after, err := srv.Live(ctx)
		if err != nil {
			return err
		}
		busy := time.Duration((after.Models[name].Busy.Seconds - before.Models[name].Busy.Seconds) * float64(time.Second))
		over := max(0, (sum-busy)/time.Duration(n))
		overhead += over
		for _, l := range lat {
			tm.Service[p.Path] = append(tm.Service[p.Path], max(l-over, time.Microsecond))
		}
	}
	tm.Overhead = overhead / time.Duration(len(paths))
	return nil
}

// topPaths returns up to n requests with the most frequent paths of tr,
// most frequent first; one request with the default path when tr has none.
func topPaths(tr *trace.Trace, n int) []trace.Request {
	if tr == nil || tr.Len() == 0 {
		return []trace.Request{{}}
	}
	count := map[string]int{}
	first := map[string]trace.Request{}
	for _, r := range tr.Requests {
		if _, ok := first[r.Path]; !ok {
			first[r.Path] = trace.Request{Path: r.Path, Body: r.Body}
		}
		count[r.Path]++
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if count[keys[i]] != count[keys[j]] {
			return count[keys[i]] > count[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var out []trace.Request
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, first[k])
	}
	return out
}
