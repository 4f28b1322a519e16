// Package e2e runs the real tandem binary (`tandem serve`) with real
// instance processes, and checks what a user sees through the gateway, the
// control API and the command line.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/testbin"
)

// server is one `tandem serve` process.
type server struct {
	t         *testing.T
	bin       string
	dataDir   string
	gateway   string
	admin     string
	grpc      string
	cmd       *exec.Cmd
	log       *syncBuffer
	exited    chan struct{}
	extraEnv  []string
	extraArgs []string
}

// startServer runs tandem serve on fresh ports over dataDir ("" = new).
func startServer(t *testing.T, dataDir string) *server {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: dataDir}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s
}

func (s *server) start() {
	s.t.Helper()
	if err := s.startOnce(); err != nil {
		s.t.Fatal(err)
	}
}

var servingRE = regexp.MustCompile(`msg="tandem serving" gateway=(\S+) admin=(\S+) grpc=(\S+)`)

// startOnce lets tandem pick free ports itself (no race with other
// processes) and reads them from its "tandem serving" log line.
func (s *server) startOnce() error {
	s.log = &syncBuffer{}
	s.cmd = exec.Command(s.bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
		"--data-dir", s.dataDir, "--autoscale-interval", "100ms", "--log-level", "debug")
	s.cmd.Args = append(s.cmd.Args, s.extraArgs...)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.Env = append(os.Environ(), s.extraEnv...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(s.log.String()); m != nil {
			s.gateway, s.admin, s.grpc = m[1], m[2], m[3]
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("tandem serve exited at start:\n%s", s.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tandem serve not serving after 30s:\n%s", s.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reader test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// stop ends the server with sig and waits; SIGKILL simulates a crash.
func (s *server) stop(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(90 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("tandem serve did not stop on %v in 90s:\n%s", sig, s.log)
	}
	if s.t.Failed() {
		s.t.Logf("tandem serve log:\n%s", s.log)
	}
}

// restart stops the server with sig and starts it again on the same data.
func (s *server) restart(sig syscall.Signal) {
	s.stop(sig)
	s.start()
}

// tandem runs a CLI command against this server.
func (s *server) tandem(args ...string) (string, error) {
	cmd := exec.Command(s.bin, append([]string{"--admin", s.admin}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// deploy writes a manifest into dir and deploys it through the CLI.
func (s *server) deploy(dir, yaml string) {
	s.t.Helper()
	if dir == "" {
		dir = s.t.TempDir()
	}
	f := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if out, err := s.tandem("deploy", "-f", f); err != nil {
		s.t.Fatalf("deploy: %v\n%s", err, out)
	}
}

func (s *server) status(name string) *controller.Status {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/v1/deployments/" + name)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st controller.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatal(err)
	}
	return &st
}

// waitFor polls cond until it holds, failing after limit (a bound against
// hangs, not a timing assertion).
func (s *server) waitFor(what string, limit time.Duration, cond func(*controller.Status) bool, name string) *controller.Status {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := s.status(name)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", "  ")
			s.t.Fatalf("%s: not reached within %s; status:\n%s", what, limit, b)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

type reply struct {
	code    int
	body    string
	header  http.Header
	err     error
	elapsed time.Duration
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

func (s *server) call(method, path string, body string) reply {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+s.gateway+path, rd)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header, err: err, elapsed: time.Since(start)}
}

func (r reply) String() string {
	return fmt.Sprintf("%d %q (err %v)", r.code, r.body, r.err)
}

// fakeManifest is a manifest for cmd/fakemodel with the given extra YAML
// lines under scaling/timeouts and env.
func fakeManifest(t *testing.T, name, mode string, env map[string]string, scaling, timeouts string) string {
	bin := testbin.Build(t, "tandem/cmd/fakemodel")
	var envYAML strings.Builder
	for k, v := range env {
		fmt.Fprintf(&envYAML, "    %s: %q\n", k, v)
	}
	m := fmt.Sprintf("name: %s\nmode: %s\nruntime:\n  command: [%q]\n  health: /health\n", name, mode, bin)
	if envYAML.Len() > 0 {
		m += "  env:\n" + envYAML.String()
	}
	m += "scaling:\n" + indent(scaling) + "timeouts:\n" + indent(timeouts)
	return m
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString("  " + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

// alive reports whether a process id runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// burst sends n concurrent GETs to path while sampling count every
// interval; it returns the replies and the largest count seen until done,
// called once the replies are in, returns.
func (s *server) burst(n int, path string, interval time.Duration, count func() int, done func()) ([]reply, int) {
	var most atomic.Int64
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			if c := int64(count()); c > most.Load() {
				most.Store(c)
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	var wg sync.WaitGroup
	replies := make([]reply, n)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = s.call("GET", path, "")
		}()
	}
	wg.Wait()
	done()
	close(stop)
	watch.Wait()
	return replies, int(most.Load())
}
