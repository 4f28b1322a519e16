package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tandem/internal/api"
	"tandem/internal/controller"
	"tandem/internal/cost"
)

// ErrNoMeter means the server has no cost meter (GET /v1/cost/live).
var ErrNoMeter = errors.New("tandem serve has no cost meter (GET /v1/cost/live is missing)")

// ServerConfig says how to run `tandem serve`.
type ServerConfig struct {
	// Binary is the tandem executable.
	Binary string
	// DataDir is the server's own data directory (it must not be shared).
	DataDir string
	// Tick is --autoscale-interval (the server's default when zero).
	Tick time.Duration
	// Args are added to the serve command line (--backend docker, say).
	Args []string
	// Env is added to the server's environment.
	Env []string
}

// Server is one `tandem serve` process on loopback ports of its own.
type Server struct {
	Gateway, Admin string
	cfg            ServerConfig
	cmd            *exec.Cmd
	exited         chan struct{}
	out            *tail
	client         *api.Client
	http           *http.Client
}

// StartServer runs `tandem serve` on free loopback ports and waits until
// its control API answers. Stop it with Stop.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var s *Server
		if s, err = startServer(ctx, cfg); err == nil {
			return s, nil
		}
		// Another program may have taken a port between our look and the
		// server's listen: try other ports.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	gw, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	// No gRPC listener: bench calls the gateway over HTTP, and a fixed
	// default port would clash between servers.
	args := []string{"serve", "--listen", gw, "--admin-listen", admin, "--grpc-listen=", "--data-dir", cfg.DataDir}
	if cfg.Tick > 0 {
		args = append(args, "--autoscale-interval", cfg.Tick.String())
	}
	args = append(args, cfg.Args...)
	s := &Server{Gateway: gw, Admin: admin, cfg: cfg, out: &tail{max: 64 << 10}, exited: make(chan struct{})}
	s.cmd = exec.Command(cfg.Binary, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Env = append(os.Environ(), cfg.Env...)
	// Its own process group: a Ctrl-C meant for bench must not reach it
	// before bench has read the figures; Stop ends it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s serve: %w", cfg.Binary, err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	s.http = &http.Client{Timeout: 30 * time.Second}
	s.client = api.NewClient(admin)
	s.client.HTTP = s.http
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		resp, err := s.http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("tandem serve exited at start: %s", strings.TrimSpace(s.out.String()))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-deadline.C:
			s.Stop()
			return nil, fmt.Errorf("tandem serve did not answer within 30s: %s", s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Client returns a client of the server's control API.
func (s *Server) Client() *api.Client { return s.client }

// Log returns the end of the server's output.
func (s *Server) Log() string { return s.out.String() }

// Stop sends SIGTERM, which stops every instance, and waits for the
// server to exit (SIGKILL after a minute).
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(time.Minute):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		return fmt.Errorf("tandem serve did not stop within a minute of SIGTERM; killed")
	}
}

// Status returns a deployment's status.
func (s *Server) Status(ctx context.Context, name string) (*controller.Status, error) {
	return s.client.Status(ctx, name)
}

// Live returns the cost meter's running totals.
func (s *Server) Live(ctx context.Context) (*cost.Live, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Admin+"/v1/cost/live", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrNoMeter
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /v1/cost/live: %s: %s", resp.Status, b)
	}
	var l cost.Live
	return &l, json.NewDecoder(resp.Body).Decode(&l)
}

// Starts reads how many instances of model have started and the total of
// their start times (decision to ready), from the server's metrics.
func (s *Server) Starts(ctx context.Context, name string) (n int, total time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Admin+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("reading /metrics: %w", err)
	}
	f := families["tandem_instance_start_phase_seconds"]
	if f == nil {
		return 0, 0, nil
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["model"] == name && labels["phase"] == "total" {
			h := m.GetHistogram()
			return int(h.GetSampleCount()), time.Duration(h.GetSampleSum() * float64(time.Second)), nil
		}
	}
	return 0, 0, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
