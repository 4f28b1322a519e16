package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// ErrNotCold means an answer that should have been a cold start said
// X-Tandem-Cold-Start: false (an instance was still up).
var ErrNotCold = errors.New("the answer was not a cold start")

// Config says what to measure and how.
type Config struct {
	Tandem, Model string
	// Health is the model's readiness path; Path is what the timed request
	// asks for through the gateway.
	Health, Path string
	Rounds       int
	// Poll is the pause between two readiness polls of the program alone;
	// zero is a busy loop.
	Poll time.Duration
	// Tick is tandem serve's --autoscale-interval; IdleTimeout the
	// deployment's scaling.idle_timeout.
	Tick, IdleTimeout time.Duration
	// WorkDir holds tandem's data folder and logs; empty means a temporary
	// folder removed at the end.
	WorkDir string
	// Progress, when not nil, gets a line per round.
	Progress io.Writer
}

// Result is what Measure found.
type Result struct {
	Rounds int
	// Exec holds the instance's own exec-to-ready times; Cold the times to
	// the first whole answer through tandem from zero, one per round.
	Exec, Cold []time.Duration
	// Phases are the means of tandem's start phases over the rounds, from
	// its /metrics, in the order tandem reports them.
	Phases []Phase
}

// Phase is the mean of one start phase over the measured cold starts.
type Phase struct {
	Name  string
	Mean  time.Duration
	Count int
}

// Measure runs cfg.Rounds rounds, each one exec-to-ready run of the model
// alone and then one cold request through tandem. It starts and stops its
// own `tandem serve`. It blocks until done or ctx ends.
func Measure(ctx context.Context, cfg Config) (*Result, error) {
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "coldstart-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		work = d
	}
	model, err := filepath.Abs(cfg.Model)
	if err != nil {
		return nil, err
	}
	cfg.Model = model

	srv, err := startTandem(ctx, cfg, work)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	if err := srv.deploy(ctx, cfg); err != nil {
		return nil, err
	}
	before, err := srv.scrape(ctx)
	if err != nil {
		return nil, err
	}

	res := &Result{Rounds: cfg.Rounds}
	for i := 1; i <= cfg.Rounds; i++ {
		if err := srv.waitZero(ctx, deployment, 30*time.Second+cfg.IdleTimeout); err != nil {
			return nil, fmt.Errorf("round %d: %w", i, err)
		}
		e, err := execToReady(ctx, cfg.Model, cfg.Health, cfg.Poll, filepath.Join(work, "exec.log"))
		if err != nil {
			return nil, fmt.Errorf("round %d: exec-to-ready: %w", i, err)
		}
		c, err := srv.coldRequest(ctx, cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("round %d: through tandem: %w", i, err)
		}
		res.Exec = append(res.Exec, e)
		res.Cold = append(res.Cold, c)
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "round %2d: exec-to-ready %s, first answer through tandem %s\n", i, ms(e), ms(c))
		}
	}

	after, err := srv.scrape(ctx)
	if err != nil {
		return nil, err
	}
	res.Phases = phaseMeans(before, after)
	return res, nil
}

// execToReady execs program with a free PORT and returns the time from just
// before exec to the first 200 on its health path, polled every poll (zero:
// in a busy loop). The program's output goes to logPath, as tandem sends it
// to a log file.
func execToReady(ctx context.Context, program, health string, poll time.Duration, logPath string) (time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(program)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logf, logf

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := t0.Add(30 * time.Second)
	for {
		if ok := pollOnce(addr, health); ok {
			return time.Since(t0), nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s was not ready on %s%s within 30s", program, addr, health)
		}
		if poll > 0 {
			time.Sleep(poll)
		}
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ms formats d in milliseconds with two decimals.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}
