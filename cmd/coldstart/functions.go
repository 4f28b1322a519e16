package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The functions mode (-functions) times the first answer from zero of the
// seeds' Python code deployed from the repository's examples, each with
// and without runtime.template: the iris Lambda handler
// (examples/iris-lambda) and the iris Flask app as runtime.wsgi
// (examples/iris-flask). Each deployment gets one untimed request first (a
// template starts then, as it does at a deployment's first cold start);
// then each round, for each deployment in turn, waits until it has no
// instance and times one POST /predict through the gateway on an open
// connection, checking X-Tandem-Cold-Start: true.

// function is one measured deployment: a manifest under examples/.
type function struct {
	Name, File string
}

var functions = []function{
	{"iris-lambda", "iris-lambda/lambda.yaml"},
	{"iris-lambda-template", "iris-lambda/template.yaml"},
	{"iris-wsgi", "iris-flask/wsgi.yaml"},
	{"iris-template", "iris-flask/template.yaml"},
}

// predictBody is one iris row, which the handler and the app both take.
const predictBody = `{"instances": [[6.3, 3.3, 6.0, 2.5]]}`

// FunctionResult holds the cold answers of each deployment.
type FunctionResult struct {
	Rounds int
	Cold   map[string][]time.Duration
	Phases map[string][]Phase
}

// MeasureFunctions deploys the examples under examples (the repository's
// examples folder) and runs cfg.Rounds rounds. It starts and stops its own
// `tandem serve`.
func MeasureFunctions(ctx context.Context, cfg Config, examples string) (*FunctionResult, error) {
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "coldstart-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		work = d
	}
	srv, err := startTandem(ctx, cfg, work)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	res := &FunctionResult{Rounds: cfg.Rounds, Cold: map[string][]time.Duration{}, Phases: map[string][]Phase{}}
	before := map[string]map[string]float64{}
	for _, f := range functions {
		if err := srv.deployExample(ctx, cfg, filepath.Join(examples, f.File)); err != nil {
			return nil, fmt.Errorf("%s: %w", f.File, err)
		}
		// Untimed: starts the template, if any, and pays the first import.
		if _, err := srv.coldPost(ctx, f.Name); err != nil {
			return nil, fmt.Errorf("%s: first request: %w", f.Name, err)
		}
	}
	for _, f := range functions {
		if err := srv.waitZero(ctx, f.Name, cfg.IdleTimeout+30*time.Second); err != nil {
			return nil, err
		}
		if before[f.Name], err = srv.scrapeModel(ctx, f.Name); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Rounds {
		for _, f := range functions {
			if err := srv.waitZero(ctx, f.Name, cfg.IdleTimeout+30*time.Second); err != nil {
				return nil, err
			}
			d, err := srv.coldPost(ctx, f.Name)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, f.Name, err)
			}
			res.Cold[f.Name] = append(res.Cold[f.Name], d)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "round %d/%d: %-22s %s\n", i+1, cfg.Rounds, f.Name, ms(d))
			}
		}
	}
	for _, f := range functions {
		after, err := srv.scrapeModel(ctx, f.Name)
		if err != nil {
			return nil, err
		}
		res.Phases[f.Name] = phaseMeans(before[f.Name], after)
	}
	return res, nil
}

// deployExample deploys a manifest file with the measurement's scaling:
// from zero, one instance, cfg.IdleTimeout.
func (s *server) deployExample(ctx context.Context, cfg Config, file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return err
	}
	m["scaling"] = map[string]any{"min": 0, "max": 1, "idle_timeout": cfg.IdleTimeout.String(),
		"stable_window": "2s", "panic_window": "1s"}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := s.client.Deploy(ctx, string(b), filepath.Dir(file)); err != nil {
		return fmt.Errorf("deploying: %w", err)
	}
	return nil
}

// waitZero blocks until the deployment has no instance in any state.
func (s *server) waitZero(ctx context.Context, name string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := s.client.Status(ctx, name)
		if err != nil {
			return err
		}
		if len(st.Instances) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still had %d instances after %s (desired %d, %s)", name, len(st.Instances), limit, st.Desired, st.Reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return fmt.Errorf("tandem serve exited: %s", tail(s.log))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// coldPost times one POST /predict to name, from writing it on an open
// connection to having read the whole answer.
func (s *server) coldPost(ctx context.Context, name string) (time.Duration, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", s.gateway)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	br := bufio.NewReader(c)
	if resp, _, err := roundTrip(c, br, s.gateway, "/healthz", false); err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("gateway /healthz: %v %v", resp, err)
	}
	t0 := time.Now()
	if _, err := fmt.Fprintf(c, "POST /models/%s/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		name, s.gateway, len(predictBody), predictBody); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"predictions": [2]`) && !strings.Contains(string(body), `"predictions":[2]`) {
		return 0, fmt.Errorf("status %s: %s", resp.Status, body)
	}
	if v := resp.Header.Get("X-Tandem-Cold-Start"); v != "true" {
		return 0, fmt.Errorf("X-Tandem-Cold-Start: %q: %w", v, ErrNotCold)
	}
	return d, nil
}

func (s *server) scrapeModel(ctx context.Context, name string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body, name)
}

// Print writes the medians, with and without a template side by side.
func (r *FunctionResult) Print(w io.Writer, target time.Duration) {
	fmt.Fprintf(w, "first answer from zero (POST /predict through the gateway), %d rounds\n", r.Rounds)
	fmt.Fprintf(w, "%-22s %10s %10s %10s %10s   %s\n", "deployment", "median", "p90", "min", "max", "start phases (mean)")
	for _, f := range functions {
		ds := r.Cold[f.Name]
		if len(ds) == 0 {
			continue
		}
		var ph []string
		for _, p := range r.Phases[f.Name] {
			ph = append(ph, p.Name+" "+ms(p.Mean))
		}
		fmt.Fprintf(w, "%-22s %10s %10s %10s %10s   %s\n", f.Name, ms(percentile(ds, 50)), ms(percentile(ds, 90)),
			ms(slices.Min(ds)), ms(slices.Max(ds)), strings.Join(ph, ", "))
	}
	for _, pair := range [][2]string{{"iris-lambda", "iris-lambda-template"}, {"iris-wsgi", "iris-template"}} {
		a, b := r.Cold[pair[0]], r.Cold[pair[1]]
		if len(a) == 0 || len(b) == 0 {
			continue
		}
		mb := percentile(b, 50)
		verdict := "meets"
		if mb > target {
			verdict = "misses"
		}
		fmt.Fprintf(w, "%s: %s without a template, %s with one (%.1fx); %s the %s target\n",
			strings.TrimSuffix(pair[0], "-wsgi"), ms(percentile(a, 50)), ms(mb), float64(percentile(a, 50))/float64(mb), verdict, ms(target))
	}
}
