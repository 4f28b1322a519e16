package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tandem/internal/api"
)

// deployment is the name of the measured deployment.
const deployment = "coldstart"

// server is a `tandem serve` started by Measure.
type server struct {
	cmd            *exec.Cmd
	exited         chan struct{}
	gateway, admin string
	log            string
	client         *api.Client
}

// startTandem starts `tandem serve` on free loopback ports and waits until
// its control API answers.
func startTandem(ctx context.Context, cfg Config, work string) (*server, error) {
	gw, err := freePort()
	if err != nil {
		return nil, err
	}
	adm, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{
		gateway: net.JoinHostPort("127.0.0.1", strconv.Itoa(gw)),
		admin:   net.JoinHostPort("127.0.0.1", strconv.Itoa(adm)),
		log:     filepath.Join(work, "tandem.log"),
		exited:  make(chan struct{}),
	}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"serve", "--listen", s.gateway, "--admin-listen", s.admin,
		"--data-dir", filepath.Join(work, "data"), "--autoscale-interval", cfg.Tick.String(), "--log-level", "warn"}
	// Listeners this measurement does not use are turned off, so that they
	// cannot collide with another tandem on their default ports.
	if help, _ := exec.CommandContext(ctx, cfg.Tandem, "serve", "--help").Output(); strings.Contains(string(help), "--grpc-listen") {
		args = append(args, "--grpc-listen", "")
	}
	s.cmd = exec.Command(cfg.Tandem, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Should this program die, tandem stops too (and stops its instances).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting tandem: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	s.client = api.NewClient(s.admin)
	s.client.HTTP = &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := s.client.Info(ctx); err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("tandem serve exited at start: %s", tail(s.log))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("tandem's control API did not answer on %s within 30s: %s", s.admin, tail(s.log))
		}
	}
}

// stop ends tandem (which stops its instances) and waits for it.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// deploy creates the serverless deployment of cfg.Model.
func (s *server) deploy(ctx context.Context, cfg Config) error {
	// JSON is YAML, and needs no quoting rules of its own for odd paths.
	m := map[string]any{
		"name": deployment,
		"mode": "serverless",
		"runtime": map[string]any{
			"command": []string{cfg.Model},
			"health":  cfg.Health,
		},
		"scaling": map[string]any{
			"min":           0,
			"max":           1,
			"idle_timeout":  cfg.IdleTimeout.String(),
			"stable_window": "2s",
			"panic_window":  "1s",
		},
		"timeouts": map[string]any{"startup": "30s"},
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.client.Deploy(ctx, string(b), filepath.Dir(cfg.Model)); err != nil {
		return fmt.Errorf("deploying: %w", err)
	}
	return nil
}

// coldRequest times one GET of path through the gateway, from writing it on
// an already open connection to having read the whole answer, and checks
// that it was a cold start.
func (s *server) coldRequest(ctx context.Context, path string) (time.Duration, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", s.gateway)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	// A first request makes sure the gateway has accepted the connection
	// and is reading from it before the clock starts.
	if resp, _, err := roundTrip(c, br, s.gateway, "/healthz", false); err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("gateway /healthz: %v %v", resp, err)
	}
	t0 := time.Now()
	resp, body, err := roundTrip(c, br, s.gateway, "/models/"+deployment+path, false)
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s: %s", resp.Status, body)
	}
	if v := resp.Header.Get("X-Tandem-Cold-Start"); v != "true" {
		return 0, fmt.Errorf("X-Tandem-Cold-Start: %q: %w", v, ErrNotCold)
	}
	return d, nil
}

// scrape reads the admin /metrics and returns the series that phaseMeans
// uses.
func (s *server) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body, deployment)
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	if s == "" {
		return "(its log is empty)"
	}
	return s
}
