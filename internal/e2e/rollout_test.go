package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"tandem/internal/controller"
	"tandem/internal/cost"
	pb "tandem/internal/inference/pb"
	"tandem/internal/testbin"
)

// versionManifest is the fake model answering /version with version, kept
// warm (dedicated, min 1) so that splits are measured without cold starts.
func versionManifest(t *testing.T, name, version string, env map[string]string, extra string) string {
	e := map[string]string{"FAKE_VERSION": version}
	for k, v := range env {
		e[k] = v
	}
	return fakeManifest(t, name, "dedicated", e, "min: 1\nmax: 3\ntarget_concurrency: 4", "startup: 20s\nrequest: 30s\ngrace: 2s") + extra
}

// deployFlags writes a manifest and deploys it with CLI flags.
func (s *server) deployFlags(yaml string, flags ...string) string {
	s.t.Helper()
	f := filepath.Join(s.t.TempDir(), "manifest.yaml")
	writeFile(s.t, f, yaml)
	out, err := s.tandem(append([]string{"deploy", "-f", f}, flags...)...)
	if err != nil {
		s.t.Fatalf("deploy %v: %v\n%s", flags, err, out)
	}
	return out
}

func (s *server) revisions(name string) []controller.RevisionStatus {
	s.t.Helper()
	out, err := s.tandem("revisions", name, "-o", "json")
	if err != nil {
		s.t.Fatalf("revisions: %v\n%s", err, out)
	}
	var revs []controller.RevisionStatus
	if err := json.Unmarshal([]byte(out), &revs); err != nil {
		s.t.Fatalf("revisions: %v\n%s", err, out)
	}
	return revs
}

func (s *server) traffic(name string) *controller.TrafficStatus {
	s.t.Helper()
	out, err := s.tandem("rollout", "status", name, "-o", "json")
	if err != nil {
		s.t.Fatalf("rollout status: %v\n%s", err, out)
	}
	var ts controller.TrafficStatus
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		s.t.Fatalf("rollout status: %v\n%s", err, out)
	}
	return &ts
}

// waitRunning waits until every revision with traffic has a ready instance.
func (s *server) waitRunning(name string, n int) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := 0
		for _, r := range s.traffic(name).Running {
			if r.Ready > 0 {
				ready++
			}
		}
		if ready >= n {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d revisions of %s not ready: %+v", n, name, s.traffic(name).Running)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// prober sends a request every 10 ms (Knative's way of scoring a rollout)
// until stopped, and counts what did not answer 200.
type prober struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	fails        []string
	stop         chan struct{}
	done         chan struct{}
}

func (s *server) probe(path string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := s.call("GET", path, "")
				p.sent.Add(1)
				if r.code != 200 {
					p.failed.Add(1)
					p.mu.Lock()
					p.fails = append(p.fails, r.String())
					p.mu.Unlock()
				}
			}()
		}
	}()
	return p
}

func (p *prober) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	t.Logf("prober: %d requests, %d failed, success rate %.4f", p.sent.Load(), p.failed.Load(),
		1-float64(p.failed.Load())/float64(max(1, p.sent.Load())))
	if p.failed.Load() != 0 {
		t.Fatalf("prober: %d of %d requests failed: %v", p.failed.Load(), p.sent.Load(), p.fails[:min(5, len(p.fails))])
	}
}

// share sends n requests to path and returns how many answered want.
func (s *server) share(t *testing.T, path string, n int, h map[string]string, want string) int {
	t.Helper()
	got := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := s.callH("GET", path, h)
			if r.code != 200 {
				t.Errorf("GET %s: %v", path, r)
				return
			}
			if r.body == want {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

// withinBinomial fails unless got of n is within 5 standard deviations of
// n*p. The gateway draws each request's revision independently with
// probability p, so the count is Binomial(n, p): a correct split falls
// outside ±5σ with probability below 1e-6, so the test does not flake,
// while a split that ignores the weight is far outside (at n=400, p=0.3
// the band is 120±46).
func withinBinomial(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	mean, sd := float64(n)*p, math.Sqrt(float64(n)*p*(1-p))
	t.Logf("%s: %d of %d (%.1f%%), expected %.0f ± %.0f", what, got, n, 100*float64(got)/float64(n), mean, 5*sd)
	if math.Abs(float64(got)-mean) > 5*sd {
		t.Fatalf("%s: %d of %d, want %.0f ± %.0f (5 sd)", what, got, n, mean, 5*sd)
	}
}

// A canary at 20% under a steady prober: its share over 1,000 requests is
// within the binomial bound; rollback returns everything to the old
// revision, a second canary is promoted to 100%; no probe fails through
// any of it; `tandem revisions` and `tandem cost` show both revisions.
func TestRollout_CanaryPromoteRollback(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", versionManifest(t, "cr", "v1", nil, ""))
	s.waitFor("v1 ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "cr")
	p := s.probe("/models/cr/version")

	s.deployFlags(versionManifest(t, "cr", "v2", nil, ""), "--canary", "20")
	s.waitRunning("cr", 2)
	withinBinomial(t, "canary 20%", s.share(t, "/models/cr/version", 1000, nil, "v2"), 1000, 0.2)
	revs := s.revisions("cr")
	if len(revs) != 2 || revs[0].Percent != 20 || revs[1].Percent != 80 || !revs[1].Main || revs[0].Requests == 0 {
		t.Fatalf("revisions: %+v", revs)
	}
	if out, err := s.tandem("revisions", "cr"); err != nil || !strings.Contains(out, "20%") || !strings.Contains(out, "80% main") {
		t.Fatalf("tandem revisions:\n%s %v", out, err)
	}

	if out, err := s.tandem("rollout", "rollback", "cr"); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if got := s.share(t, "/models/cr/version", 200, nil, "v1"); got != 200 {
		t.Fatalf("after rollback %d of 200 answered v1", got)
	}
	revs = s.revisions("cr")
	if revs[0].Failed == "" || revs[0].State != "failed" {
		t.Fatalf("rolled back revision not marked failed: %+v", revs[0])
	}

	s.deployFlags(versionManifest(t, "cr", "v3", nil, ""), "--canary", "20")
	s.waitRunning("cr", 2)
	if out, err := s.tandem("rollout", "promote", "cr"); err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	if got := s.share(t, "/models/cr/version", 200, nil, "v3"); got != 200 {
		t.Fatalf("after promote %d of 200 answered v3", got)
	}
	p.finish(t)
	ts := s.traffic("cr")
	if len(ts.Traffic.Split) != 1 || ts.Traffic.Split[ts.Main] != 100 {
		t.Fatalf("after promote the split is %v (main %s)", ts.Traffic.Split, ts.Main)
	}
	// Cost per revision: the first unit and each revision's own.
	out, err := s.tandem("cost", "cr", "-o", "json")
	if err != nil {
		t.Fatalf("cost: %v\n%s", err, out)
	}
	var rep cost.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Models) != 1 || len(rep.Models[0].Revisions) < 2 {
		t.Fatalf("cost per revision: %v\n%s", err, out)
	}
}

// Tags and header routes reach their revision whatever the split, on
// pass-through, v2 REST and gRPC (the revision's own request counter
// tells which one served).
func TestRollout_TagsAndRoutes(t *testing.T) {
	s := onnxServer(t)
	// Pass-through.
	s.deploy("", versionManifest(t, "tr", "v1", nil, ""))
	s.waitFor("v1 ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "tr")
	s.deployFlags(versionManifest(t, "tr", "v2", nil, ""), "--tag", "next", "--route", "X-Variant=b")
	for _, tc := range []struct {
		path string
		h    map[string]string
		want string
	}{
		{"/models/tr/version", nil, "v1"}, // a tag alone gets no untagged traffic
		{"/models/tr@next/version", nil, "v2"},
		{"/models/tr/version", map[string]string{"X-Tandem-Revision": "next"}, "v2"},
		{"/models/tr/version", map[string]string{"X-Variant": "b"}, "v2"},
		{"/models/tr/version", map[string]string{"X-Variant": "a"}, "v1"},
	} {
		if got := s.share(t, tc.path, 50, tc.h, tc.want); got != 50 {
			t.Fatalf("%s %v: %d of 50 answered %s", tc.path, tc.h, got, tc.want)
		}
	}
	if r := s.call("GET", "/models/tr@nope/version", ""); r.code != 404 || !strings.Contains(r.body, "revision_not_found") {
		t.Fatalf("unknown tag: %v", r)
	}

	// v2 REST and gRPC: two revisions of the iris model.
	root := testbin.RepoRoot(t)
	onnxYAML := func(threads int) string {
		return fmt.Sprintf("name: ir\nmode: dedicated\nruntime:\n  onnx: %s\n  threads: %d\nscaling: {min: 1, max: 1}\n",
			filepath.Join(root, "models/iris.onnx"), threads)
	}
	s.deploy("", onnxYAML(1))
	s.waitFor("iris ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "ir")
	s.deployFlags(onnxYAML(2), "--tag", "next", "--route", "X-Variant=b")
	s.waitRunning("ir", 2)
	td := loadRows(t, "iris_rows.json")
	counts := func() (main, next int64) {
		for _, r := range s.revisions("ir") {
			if r.Main {
				main = r.Requests
			} else if len(r.Tags) > 0 {
				next = r.Requests
			}
		}
		return
	}
	m0, n0 := counts()
	for _, h := range []map[string]string{{"X-Tandem-Revision": "next"}, {"X-Variant": "b"}} {
		for range 10 {
			if r := s.callH("POST", "/v2/models/ir/infer", h, inferBody("input", td.Rows[:2])); r.code != 200 {
				t.Fatalf("v2 REST %v: %v", h, r)
			}
		}
	}
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := pb.NewGRPCInferenceServiceClient(conn)
	var flat []float32
	for _, row := range td.Rows[:2] {
		flat = append(flat, row...)
	}
	req := &pb.ModelInferRequest{ModelName: "ir", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32",
		Shape: []int64{2, int64(len(td.Rows[0]))}, Contents: &pb.InferTensorContents{Fp32Contents: flat}}}}
	for _, md := range []metadata.MD{metadata.Pairs("x-tandem-revision", "next"), metadata.Pairs("x-variant", "b")} {
		for range 10 {
			ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 30*time.Second)
			_, err := cl.ModelInfer(ctx, req)
			cancel()
			if err != nil {
				t.Fatalf("gRPC %v: %v", md, err)
			}
		}
	}
	m1, n1 := counts()
	if m1 != m0 || n1-n0 != 40 {
		t.Fatalf("tagged and routed v2 calls: main served %d, next %d; want 0 and 40", m1-m0, n1-n0)
	}
	// Untagged ones stay on main.
	for range 5 {
		if r := s.call("POST", "/v2/models/ir/infer", inferBody("input", td.Rows[:2])); r.code != 200 {
			t.Fatalf("v2 REST: %v", r)
		}
	}
	if m2, n2 := counts(); m2-m1 != 5 || n2 != n1 {
		t.Fatalf("untagged v2 calls: main served %d, next %d; want 5 and 0", m2-m1, n2-n1)
	}
}

// Shadow at 50%: callers only see the primary's answers; mismatches are
// counted exactly when the shadow answers differently; a shadow that
// hangs does not hold the primary's requests.
func TestRollout_Shadow(t *testing.T) {
	s := startServer(t, "")
	s.deploy("", versionManifest(t, "sh", "v1", nil, ""))
	s.waitFor("v1 ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "sh")
	type shadowStats struct {
		Revision   string `json:"revision"`
		Sent       int64  `json:"sent"`
		Matched    int64  `json:"matched"`
		Mismatched int64  `json:"mismatched"`
		Errors     int64  `json:"errors"`
		Dropped    int64  `json:"dropped"`
	}
	stats := func(rev string) shadowStats {
		raw, _ := json.Marshal(s.traffic("sh").ShadowStats)
		var all []shadowStats
		json.Unmarshal(raw, &all)
		for _, st := range all {
			if st.Revision == rev {
				return st
			}
		}
		return shadowStats{}
	}
	settle := func(rev string) shadowStats {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := stats(rev)
			if st.Matched+st.Mismatched+st.Errors+st.Dropped >= st.Sent && st.Sent > 0 {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("shadow of %s never settled: %+v", rev, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		version string
		env     map[string]string
		same    bool
	}{
		{"v2", nil, false}, // answers differently
		{"v1", map[string]string{"OTHER": "x"}, true}, // another revision, same answers
	} {
		s.deployFlags(versionManifest(t, "sh", tc.version, tc.env, ""), "--shadow", "50")
		s.waitRunning("sh", 2)
		rev := s.traffic("sh").Traffic.Shadow.Revision
		if got := s.share(t, "/models/sh/version", 400, nil, "v1"); got != 400 {
			t.Fatalf("with a shadow %d of 400 callers saw the primary's answer", got)
		}
		st := settle(rev)
		t.Logf("shadow %s (%s): %+v", rev, tc.version, st)
		withinBinomial(t, "shadow 50%", int(st.Sent+st.Dropped), 400, 0.5)
		if tc.same && (st.Matched != st.Sent || st.Mismatched != 0) || !tc.same && (st.Mismatched != st.Sent || st.Matched != 0) {
			t.Fatalf("shadow answering the same=%v: %+v", tc.same, st)
		}
	}
	// A shadow that hangs: the primary's answers come all the same.
	s.deployFlags(versionManifest(t, "sh", "v1", map[string]string{"FAKE_DELAY": "1h"}, ""), "--shadow", "50")
	s.waitRunning("sh", 2)
	var lat []time.Duration
	for range 200 {
		r := s.call("GET", "/models/sh/version", "")
		if r.code != 200 || r.body != "v1" {
			t.Fatalf("with a hanging shadow: %v", r)
		}
		lat = append(lat, r.elapsed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("primary p99 with a hanging shadow: %s (p50 %s)", lat[len(lat)*99/100], lat[len(lat)/2])
}

// A progressive rollout of a revision that answers 500 to one request in
// ten rolls back by itself, and the status says why; a healthy one reaches
// 100% and becomes the main revision with no probe failing.
func TestRollout_Progressive(t *testing.T) {
	s := startServer(t, "")
	const ro = "rollout:\n  steps: [20, 50, 100]\n  interval: 2s\n  failures: 2\n  min_requests: 10\n  max_error_rate: 1%\n"
	s.deploy("", versionManifest(t, "pr", "v1", nil, ""))
	s.waitFor("v1 ready", 30*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, "pr")

	load := s.probe("/models/pr/version")
	s.deployFlags(versionManifest(t, "pr", "bad", map[string]string{"FAKE_FAIL_EVERY": "10"}, ro))
	start := time.Now()
	var ts *controller.TrafficStatus
	for {
		ts = s.traffic("pr")
		if p := ts.Traffic.Rollout; p != nil && p.State.Phase == "failed" {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the failing rollout was not rolled back: %+v", ts.Traffic.Rollout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(load.stop)
	<-load.done
	took := time.Since(start)
	p := ts.Traffic.Rollout
	t.Logf("rolled back after %s (bound failures x interval + interval = 6s, plus the new revision's start): %s", took.Round(time.Millisecond), p.State.Reason)
	// Judged within failures intervals, plus at most one held while the
	// new revision started and had too few requests.
	if n := len(p.State.History); n > 3 {
		t.Fatalf("rolled back after %d intervals, want at most failures (2) + 1: %+v", n, p.State.History)
	}
	if !strings.Contains(p.State.Reason, "error rate") || ts.Traffic.Split[ts.Main] != 100 {
		t.Fatalf("failed rollout: reason %q, split %v", p.State.Reason, ts.Traffic.Split)
	}
	if out, _ := s.tandem("rollout", "status", "pr"); !strings.Contains(out, "error rate") || !strings.Contains(out, "fail") {
		t.Fatalf("rollout status does not say why:\n%s", out)
	}
	if got := s.share(t, "/models/pr/version", 100, nil, "v1"); got != 100 {
		t.Fatalf("after the rollback %d of 100 answered v1", got)
	}

	prob := s.probe("/models/pr/version")
	s.deployFlags(versionManifest(t, "pr", "good", nil, ro))
	deadline := time.Now().Add(90 * time.Second)
	for {
		ts = s.traffic("pr")
		if p := ts.Traffic.Rollout; p != nil && p.State.Phase == "succeeded" {
			break
		}
		if p := ts.Traffic.Rollout; p != nil && p.State.Phase == "failed" {
			t.Fatalf("the healthy rollout failed: %s", p.State.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the healthy rollout did not finish: %+v", ts.Traffic.Rollout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := s.share(t, "/models/pr/version", 100, nil, "good"); got != 100 {
		t.Fatalf("after the rollout %d of 100 answered good", got)
	}
	prob.finish(t)
	weights := []int{}
	for _, iv := range ts.Traffic.Rollout.State.History {
		weights = append(weights, iv.Weight)
	}
	t.Logf("healthy rollout intervals at weights %v", weights)
}
