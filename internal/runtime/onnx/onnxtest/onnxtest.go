// Package onnxtest helps tests run tandem's built-in ONNX runtime as a real
// process: it builds the program, starts it on a loopback port, and loads
// the committed test rows of the models under models/.
package onnxtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tandem/internal/runtime/onnx"
	"tandem/internal/testbin"
)

// RequireLibrary makes sure ONNX Runtime's library can be found: in CI
// (CI=true) a missing library fails the test; elsewhere it skips it, loudly.
func RequireLibrary(t testing.TB) string {
	t.Helper()
	p, err := onnx.FindLibrary()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("ONNX Runtime is required in CI: %v", err)
	}
	t.Skipf("SKIPPING: ONNX Runtime library missing (run scripts/fetch-onnxruntime.sh): %v", err)
	return ""
}

// Command returns the program and leading arguments that run the runtime
// ("PROGRAM [ARGS...] --model FILE ..."): the real `tandem runtime onnx`.
func Command(t testing.TB) (string, []string) {
	t.Helper()
	return testbin.Build(t, "tandem/cmd/tandem"), []string{"runtime", "onnx"}
}

// ModelPath returns the path of a file under the repository's models/.
func ModelPath(t testing.TB, file string) string {
	t.Helper()
	return filepath.Join(testbin.RepoRoot(t), "models", file)
}

// Server is a running runtime process.
type Server struct {
	// URL is the base URL, such as http://127.0.0.1:40123.
	URL string
	// Addr is its host:port.
	Addr string
	// Ready is the time from exec to the server listening.
	Ready time.Duration
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
	stop  sync.Once
}

// Stop stops the process (SIGTERM, then SIGKILL after 10s) and waits for
// it. It is called when the test ends; calling it earlier is fine.
func (s *Server) Stop() {
	s.stop.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
		}
		s.cmd.Wait()
	})
}

var addrRE = regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)

// Start runs the runtime for model (a path) as name, on a free loopback
// port, and waits until it listens. The process is stopped when the test
// ends.
func Start(t testing.TB, model, name string, args ...string) *Server {
	t.Helper()
	prog, pre := Command(t)
	argv := append(append(pre, "--model", model, "--name", name, "--listen", "127.0.0.1:0"), args...)
	s := &Server{cmd: exec.Command(prog, argv...), done: make(chan struct{})}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = &lockedWriter{s}
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.out.WriteString(line + "\n")
			s.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(s.Stop)
	select {
	case a := <-addr:
		s.Ready = time.Since(start)
		s.Addr = a
		s.URL = "http://" + a
	case <-s.done:
		t.Fatalf("the runtime exited before listening:\n%s", s.Output())
	case <-time.After(60 * time.Second):
		t.Fatalf("the runtime did not listen within 60s:\n%s", s.Output())
	}
	return s
}

// CPU returns the CPU time (user and system) the process used so far.
func (s *Server) CPU() time.Duration { return ProcessCPU(s.cmd.Process.Pid) }

// ProcessCPU returns the CPU time (user and system) process pid used so
// far, from /proc (0 if it cannot be read).
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces), from field 3.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// SelfCPU returns the CPU time this process used so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Output returns what the process wrote so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.out.Write(p)
}

// Rows are a model's committed test rows with the labels sklearn predicts.
type Rows struct {
	Model   string      `json:"model"`
	Classes []string    `json:"classes"`
	Labels  []int64     `json:"labels"`
	Rows    [][]float64 `json:"rows"`
}

// Flat returns the rows as one row-major FP32 slice.
func (r Rows) Flat() []float32 {
	var out []float32
	for _, row := range r.Rows {
		for _, v := range row {
			out = append(out, float32(v))
		}
	}
	return out
}

// LoadRows reads models/NAME_rows.json.
func LoadRows(t testing.TB, name string) Rows {
	t.Helper()
	b, err := os.ReadFile(ModelPath(t, name+"_rows.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Rows
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) == 0 || len(r.Rows) != len(r.Labels) {
		t.Fatalf("%s_rows.json: %d rows, %d labels", name, len(r.Rows), len(r.Labels))
	}
	return r
}

// OCRModel returns the path of a model fetched by scripts/fetch-ocr-model.sh
// ("ocr-cls.onnx" or "ocr-rec.onnx"), and false when it is not there.
func OCRModel(t testing.TB, file string) (string, bool) {
	t.Helper()
	p := filepath.Join(testbin.RepoRoot(t), ".cache", "models", "ocr", file)
	_, err := os.Stat(p)
	return p, err == nil
}

// Latencies are the durations of the requests of a load run.
type Latencies struct {
	All     []time.Duration
	Elapsed time.Duration
}

// Quantile returns the q-quantile (0.5 for the median).
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l.All) == 0 {
		return 0
	}
	s := slices.Clone(l.All)
	slices.Sort(s)
	i := int(q * float64(len(s)))
	return s[min(i, len(s)-1)]
}

// Report adds p50, p99 and throughput to a benchmark's results.
func (l Latencies) Report(b *testing.B) {
	b.ReportMetric(float64(l.Quantile(0.5).Microseconds()), "p50-us")
	b.ReportMetric(float64(l.Quantile(0.99).Microseconds()), "p99-us")
	b.ReportMetric(float64(len(l.All))/l.Elapsed.Seconds(), "req/s")
}

// RunClients makes n calls of do from clients goroutines at once, each
// call as soon as the goroutine's last one ended, and times them. The
// first error stops the run and is returned.
func RunClients(clients, n int, do func() error) (Latencies, error) {
	var (
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, n)
		next atomic.Int64
		ferr error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, n/clients+1)
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				if err := do(); err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
					}
					mu.Unlock()
					next.Store(int64(n))
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return Latencies{All: lat, Elapsed: time.Since(start)}, ferr
}
