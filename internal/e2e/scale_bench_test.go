package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tandem/internal/api"
	"tandem/internal/loadgen"
	"tandem/internal/testbin"
)

// The scale benchmarks run one `tandem serve` (process backend, default
// 1s autoscale interval) holding scaleN scale-to-zero deployments of
// cmd/fakemodel, and print what that costs. They run for a minute or two
// and only with -bench:
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 30m ./internal/e2e/
//
// Figures and their reading are in docs/design.md ("Scale: 1,000
// deployments").
const scaleN = 1000

// historyFull is how long after the last apply tandem's memory is read:
// the dashboard's history (300 samples, one a second) is full by then.
const historyFull = 5*time.Minute + 15*time.Second

// BenchmarkScale_AtZero deploys scaleN deployments at zero one after
// another and reports tandem's resident memory (VmRSS) and goroutines
// (go_goroutines on /metrics) before, 5 s after the last apply and once
// the dashboard's history is full (steady state: it keeps 300 one-second
// samples of every deployment), per deployment; the time of one apply at
// the start and at the end (deploy-1000th-ms: one apply when 999 exist);
// the CPU tandem spends while all of them sit at zero; and a restart over
// the full store: SIGTERM to exit, then exec to the "tandem serving" line
// and to a control API that lists all scaleN. It runs for about 7 minutes.
func BenchmarkScale_AtZero(b *testing.B) {
	fake := testbin.Build(b, "tandem/cmd/fakemodel")
	s := startScale(b)
	ctx := context.Background()

	settle := func() scaleSample { time.Sleep(5 * time.Second); return s.sample() }
	zero := settle()

	took := make([]time.Duration, scaleN)
	for i := range scaleN {
		t0 := time.Now()
		s.deploy(atZeroManifest(scaleName(i), fake))
		took[i] = time.Since(t0)
	}
	t1 := time.Now()
	early := settle()
	for t := time.Since(t1); t < historyFull; t = time.Since(t1) {
		time.Sleep(min(time.Minute, historyFull-t))
		b.Logf("%3.0fs after the last apply: %s", time.Since(t1).Seconds(), s.sample())
	}
	full := s.sample()
	cpu := s.cpuOver(10 * time.Second)

	t0 := time.Now()
	s.stop()
	stopped := time.Since(t0)
	t0 = time.Now()
	s.start()
	serving := time.Since(t0)
	s.waitList(scaleN)
	listed := time.Since(t0)
	if n := len(s.list(ctx)); n != scaleN {
		b.Fatalf("after the restart the control API lists %d deployments, want %d", n, scaleN)
	}
	again := settle()

	first, last := took[:50], took[scaleN-50:]
	b.Logf("at 0: %s; at %d: 5s after %s, steady %s; 5s after the restart: %s", zero, scaleN, early, full, again)
	b.Logf("apply: first %v, median of first 50 %v, of last 50 %v, %dth %v, slowest %v",
		took[0], medianDur(first), medianDur(last), scaleN, took[scaleN-1], slices.Max(took))
	b.ReportMetric(zero.rssMB, "rss-MB-0")
	b.ReportMetric(early.rssMB, "rss-MB-1000-early")
	b.ReportMetric(full.rssMB, "rss-MB-1000")
	b.ReportMetric((full.rssMB-zero.rssMB)*1024/scaleN, "rss-KB/deployment")
	b.ReportMetric(full.heapMB, "heap-inuse-MB-1000")
	b.ReportMetric(zero.goroutines, "goroutines-0")
	b.ReportMetric(full.goroutines, "goroutines-1000")
	b.ReportMetric((full.goroutines-zero.goroutines)/scaleN, "goroutines/deployment")
	b.ReportMetric(ms(medianDur(first)), "deploy-first50-p50-ms")
	b.ReportMetric(ms(medianDur(last)), "deploy-last50-p50-ms")
	b.ReportMetric(ms(took[scaleN-1]), "deploy-1000th-ms")
	b.ReportMetric(cpu*100, "idle-cpu-%-1000")
	b.ReportMetric(stopped.Seconds(), "stop-s")
	b.ReportMetric(serving.Seconds(), "restart-serving-s")
	b.ReportMetric(listed.Seconds(), "restart-list-1000-s")
	b.ReportMetric(again.rssMB, "rss-MB-restart")
	b.ReportMetric(again.goroutines, "goroutines-restart")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkScale_WarmP50 compares the warm path of one deployment (min 1,
// GET /models/warm/echo through the gateway) on a tandem that holds only
// it with the same on a tandem that also holds scaleN deployments at zero.
// Both servers run for the whole benchmark and are measured in turn
// (1, 1000, 1, 1000, ...), each round an open-loop constant load from
// internal/loadgen, so drift of a shared machine falls on both alike.
// The rounds start once the dashboard's history of the scaleN is full
// (steady state); it runs for about 7 minutes.
func BenchmarkScale_WarmP50(b *testing.B) {
	const (
		rounds = 8
		rate   = 200 // requests a second
		length = 5 * time.Second
	)
	fake := testbin.Build(b, "tandem/cmd/fakemodel")
	one, many := startScale(b), startScale(b)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				many.deploy(atZeroManifest(scaleName(i), fake))
			}
		}()
	}
	for i := range scaleN {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	deployed := time.Now()
	warm := fmt.Sprintf("name: warm\nmode: dedicated\nruntime:\n  command: [%q]\n  health: /health\nscaling:\n  min: 1\n  max: 1\n", fake)
	servers := []*scaleServer{one, many}
	for _, s := range servers {
		s.deploy(warm)
		s.waitWarm("warm")
	}

	tr, err := loadgen.Generate(loadgen.Spec{Pattern: loadgen.Constant, Rate: rate, Duration: length})
	if err != nil {
		b.Fatal(err)
	}
	warmup, _ := loadgen.Generate(loadgen.Spec{Pattern: loadgen.Constant, Rate: rate, Duration: time.Second})
	// Measured at steady state: once many's dashboard history is full.
	time.Sleep(historyFull - time.Since(deployed))
	hist := []*loadgen.Histogram{loadgen.NewHistogram(), loadgen.NewHistogram()}
	var runner loadgen.Runner
	errs := 0
	var diffs []time.Duration // p50 of many minus p50 of one, per pair of rounds
	for _, s := range servers {
		runner.Run(context.Background(), warmup, s.target(), nil)
	}
	for r := range rounds {
		k := r % 2
		h := loadgen.NewHistogram()
		for _, res := range runner.Run(context.Background(), tr, servers[k].target(), nil) {
			if !res.OK() {
				errs++
				continue
			}
			h.Record(res.Latency)
			hist[k].Record(res.Latency)
		}
		b.Logf("round %d, %d deployments: p50 %v p99 %v (%d requests)", r, []int{1, scaleN + 1}[k],
			h.Quantile(0.5), h.Quantile(0.99), h.Count())
		if k == 0 {
			diffs = append(diffs, -h.Quantile(0.5))
		} else {
			diffs[len(diffs)-1] += h.Quantile(0.5)
		}
	}
	b.Logf("tandem with 1: %s; with %d: %s", one.sample(), scaleN+1, many.sample())
	if errs > 0 {
		b.Fatalf("%d requests failed", errs)
	}
	p := func(k int, q float64) float64 { return ms(hist[k].Quantile(q)) }
	b.ReportMetric(p(0, 0.5), "p50-ms-1")
	b.ReportMetric(p(1, 0.5), "p50-ms-1000")
	b.ReportMetric(p(0, 0.99), "p99-ms-1")
	b.ReportMetric(p(1, 0.99), "p99-ms-1000")
	b.ReportMetric(ms(medianDur(diffs)), "p50-diff-ms")
	b.ReportMetric(0, "ns/op")
}

func scaleName(i int) string { return fmt.Sprintf("zero-%04d", i+1) }

// atZeroManifest is a serverless deployment of fakemodel that no request
// wakes in these benchmarks: it stays at zero instances.
func atZeroManifest(name, fake string) string {
	return fmt.Sprintf("name: %s\nmode: serverless\nruntime:\n  command: [%q]\n  health: /health\nscaling:\n  min: 0\n  max: 1\n", name, fake)
}

// scaleServer is one `tandem serve` for a benchmark, over a data
// directory it keeps across restarts. It is stopped, with every instance
// it started, and its directory removed when the benchmark ends.
type scaleServer struct {
	b              *testing.B
	bin, dataDir   string
	gateway, admin string
	cmd            *exec.Cmd
	exited         chan struct{}
	log            *syncBuffer
	client         *api.Client
	http           *http.Client
	// pids are instance processes served through this server: killed at
	// the end should a stop of tandem have left any (it should not).
	pids []int
}

func startScale(b *testing.B) *scaleServer {
	b.Helper()
	s := &scaleServer{b: b, bin: testbin.Build(b, "tandem/cmd/tandem"), dataDir: b.TempDir(),
		http: &http.Client{Timeout: time.Minute}}
	s.start()
	b.Cleanup(func() {
		s.stop()
		for _, pid := range s.pids {
			if alive(pid) {
				b.Errorf("instance %d outlived tandem; killing it", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return s
}

// start runs tandem serve on ports it picks itself and returns once it has
// logged "tandem serving" (its listeners are open and every stored
// deployment is loaded).
func (s *scaleServer) start() {
	s.b.Helper()
	s.log = &syncBuffer{}
	s.cmd = exec.Command(s.bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--grpc-listen", "127.0.0.1:0", "--docker", "off", "--data-dir", s.dataDir, "--log-level", "info")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		s.b.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if m := servingRE.FindStringSubmatch(s.log.String()); m != nil {
			s.gateway, s.admin = m[1], m[2]
			s.client = api.NewClient(s.admin)
			s.client.HTTP = s.http
			return
		}
		select {
		case <-s.exited:
			s.b.Fatalf("tandem serve exited at start:\n%s", s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			s.b.Fatalf("tandem serve not serving after 2m:\n%s", s.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for tandem to exit (it stops its
// instances first); SIGKILL to its process group after two minutes.
func (s *scaleServer) stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(2 * time.Minute):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		s.b.Errorf("tandem serve did not stop within 2m of SIGTERM; killed")
	}
}

func (s *scaleServer) deploy(yaml string) {
	if _, err := s.client.Deploy(context.Background(), yaml, ""); err != nil {
		s.b.Fatalf("deploy: %v", err)
	}
}

func (s *scaleServer) list(ctx context.Context) []string {
	sts, err := s.client.List(ctx)
	if err != nil {
		return nil
	}
	names := make([]string, len(sts))
	for i, st := range sts {
		names[i] = st.Name
	}
	return names
}

// waitList polls the control API until it lists n deployments.
func (s *scaleServer) waitList(n int) {
	deadline := time.Now().Add(2 * time.Minute)
	for len(s.list(context.Background())) < n {
		if time.Now().After(deadline) {
			s.b.Fatalf("the control API did not list %d deployments within 2m", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitWarm waits until name has a ready instance and remembers its pid.
func (s *scaleServer) waitWarm(name string) {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := s.client.Status(context.Background(), name)
		if err == nil && st.Ready > 0 {
			break
		}
		if time.Now().After(deadline) {
			s.b.Fatalf("%s not ready within a minute: %v %+v", name, err, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := s.http.Get("http://" + s.gateway + "/models/" + name + "/pid")
	if err != nil {
		s.b.Fatal(err)
	}
	defer resp.Body.Close()
	if pid, err := strconv.Atoi(resp.Header.Get("X-Instance-Pid")); err == nil {
		s.pids = append(s.pids, pid)
	}
}

func (s *scaleServer) target() loadgen.Target {
	return loadgen.Target{URL: "http://" + s.gateway + "/models/warm", Path: "/echo", Timeout: 10 * time.Second}
}

// scaleSample is what tandem holds at one moment.
type scaleSample struct {
	rssMB, heapMB, goroutines float64
}

func (c scaleSample) String() string {
	return fmt.Sprintf("rss %.1f MB, heap in use %.1f MB, %.0f goroutines", c.rssMB, c.heapMB, c.goroutines)
}

func (s *scaleServer) sample() scaleSample {
	m := s.metrics()
	return scaleSample{rssMB: s.rssMB(), heapMB: m["go_memstats_heap_inuse_bytes"] / (1 << 20), goroutines: m["go_goroutines"]}
}

// rssMB reads VmRSS from /proc/PID/status.
func (s *scaleServer) rssMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		s.b.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	s.b.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// metrics reads the admin /metrics and returns its unlabelled gauges and
// counters.
func (s *scaleServer) metrics() map[string]float64 {
	resp, err := s.http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.b.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.b.Fatalf("reading /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// cpuOver returns the CPU tandem used over d, in cores
// (process_cpu_seconds_total).
func (s *scaleServer) cpuOver(d time.Duration) float64 {
	c0, t0 := s.metrics()["process_cpu_seconds_total"], time.Now()
	time.Sleep(d)
	c1 := s.metrics()["process_cpu_seconds_total"]
	return (c1 - c0) / time.Since(t0).Seconds()
}

func medianDur(v []time.Duration) time.Duration {
	v = slices.Clone(v)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
