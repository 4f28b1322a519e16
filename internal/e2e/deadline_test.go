package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"tandem/internal/controller"
	"tandem/internal/inference/pb"
)

// callH is call with request headers.
func (s *server) callH(method, path string, h map[string]string, body ...string) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+s.gateway+path, strings.NewReader(strings.Join(body, "")))
	for k, v := range h {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, rerr := resp.Body.Read(buf)
		b.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	return reply{code: resp.StatusCode, body: b.String(), header: resp.Header, elapsed: time.Since(start)}
}

// A request whose deadline is shorter than the measured cold start of a
// slow-starting instance gets 503 cold_start_exceeds_deadline at once on
// every door, with Retry-After and the estimate; an instance starts
// anyway, and the retry after Retry-After is served warm. With a warm
// fallback the request is answered by the fallback, marked so.
func TestDeadline_ColdStartExceedsDeadline(t *testing.T) {
	s := startServer(t, "")
	const idle = "3s"
	slow := fakeManifest(t, "slow", "serverless", map[string]string{"FAKE_READY_DELAY": "1s"}, "max: 1\nidle_timeout: "+idle, "startup: 30s")
	s.deploy("", slow)
	atZero := func(st *controller.Status) bool { return st.Ready+st.Starting+st.Draining == 0 }
	deadline := map[string]string{"X-Tandem-Deadline": "150ms"}

	// Before any start was measured there is no estimate: the request
	// waits for the cold start as any other.
	if r := s.callH("GET", "/models/slow/echo", deadline); r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("first request, nothing measured: %v %v", r, r.header)
	}
	st := s.waitFor("back to zero", 30*time.Second, atZero, "slow")
	if st.Prewarm == nil || st.Prewarm.ColdStartEstimate == "" {
		t.Fatalf("no cold start estimate in status after a measured start: %+v", st.Prewarm)
	}
	measured, err := time.ParseDuration(st.Prewarm.ColdStartEstimate)
	if err != nil || measured < time.Second {
		t.Fatalf("estimate %q (%v): the instance takes 1s to listen", st.Prewarm.ColdStartEstimate, err)
	}

	// A malformed deadline is the client's error.
	if r := s.callH("GET", "/models/slow/echo", map[string]string{"X-Tandem-Deadline": "soon"}); r.code != 400 || !strings.Contains(r.body, "invalid_deadline") {
		t.Fatalf("bad deadline: %v", r)
	}

	// Pass-through: 503 with the estimate, Retry-After rounded up.
	r := s.callH("GET", "/models/slow/echo", deadline)
	if r.code != 503 {
		t.Fatalf("deadline 150ms, cold start %s: %v", measured, r)
	}
	var p struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(r.body), &p); err != nil || p.Error.Code != "cold_start_exceeds_deadline" {
		t.Fatalf("problem %q: %v", r.body, err)
	}
	est, err := time.ParseDuration(r.header.Get("X-Tandem-Cold-Start-Estimate"))
	if err != nil || est != measured {
		t.Fatalf("X-Tandem-Cold-Start-Estimate %q, status says %s", r.header.Get("X-Tandem-Cold-Start-Estimate"), measured)
	}
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if want := int((est + time.Second - 1) / time.Second); err != nil || retry != want {
		t.Fatalf("Retry-After %q, want %d (the estimate %s rounded up)", r.header.Get("Retry-After"), want, est)
	}
	if !strings.Contains(p.Error.Message, est.String()) || !strings.Contains(p.Error.Message, "150ms") {
		t.Fatalf("message %q does not give the estimate and the deadline", p.Error.Message)
	}
	// It started an instance anyway, and status says why.
	st = s.waitFor("an instance started for the retry", 10*time.Second, func(st *controller.Status) bool { return st.Starting+st.Ready >= 1 }, "slow")
	if ev := st.Prewarm.Events; len(ev) == 0 || ev[len(ev)-1].To != 1 || !strings.Contains(ev[len(ev)-1].Reason, "deadline") {
		t.Errorf("status has no event for the instance started for the retry: %+v", st.Prewarm)
	}

	// The v2 REST and gRPC doors answer the same in their own shapes
	// while nothing is warm yet (the instance takes 1s).
	if r := s.callH("POST", "/v2/models/slow/infer", deadline, `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`); r.code != 503 || !strings.Contains(r.body, `"error":`) ||
		!strings.Contains(r.body, "cold_start_exceeds_deadline") || r.header.Get("X-Tandem-Cold-Start-Estimate") == "" || r.header.Get("Retry-After") == "" {
		t.Errorf("v2 REST: %v %v", r, r.header)
	}
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gctx, gcancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	_, gerr := pb.NewGRPCInferenceServiceClient(conn).ModelInfer(gctx, &pb.ModelInferRequest{ModelName: "slow"})
	gcancel()
	if st, _ := status.FromError(gerr); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "cold_start_exceeds_deadline") || !strings.Contains(st.Message(), est.String()) {
		t.Errorf("gRPC with a 150ms deadline: %v", gerr)
	}

	// The retry after Retry-After finds the instance warm.
	time.Sleep(time.Duration(retry) * time.Second)
	if r := s.callH("GET", "/models/slow/echo", deadline); r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "false" {
		t.Fatalf("retry after Retry-After: %v %v", r, r.header)
	}

	// With a warm fallback, the fallback answers.
	s.deploy("", fakeManifest(t, "small", "dedicated", nil, "min: 1", ""))
	s.waitFor("small warm", 30*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "small")
	smallPid := s.call("GET", "/models/small/pid", "").body
	s.deploy("", slow+"fallback: small\n")
	s.waitFor("slow back to zero", 30*time.Second, atZero, "slow")
	r = s.callH("GET", "/models/slow/pid", deadline)
	if r.code != 200 || r.header.Get("X-Tandem-Fallback") != "small" || r.body != smallPid {
		t.Fatalf("with a warm fallback: %v %v (small's pid %q)", r, r.header, smallPid)
	}
	// ... and slow was started for the next one.
	s.waitFor("slow started after the fallback", 10*time.Second, func(st *controller.Status) bool { return st.Starting+st.Ready >= 1 }, "slow")
}
