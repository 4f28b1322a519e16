package e2e

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"tandem/internal/inference/pb"
	"tandem/internal/testbin"
)

// keysServer runs tandem serve --auth keys with extra flags.
func keysServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(),
		extraArgs: append([]string{"--auth", "keys"}, args...)}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s
}

// mustTandem runs a CLI command and fails the test if it fails.
func (s *server) mustTandem(args ...string) string {
	s.t.Helper()
	out, err := s.tandem(args...)
	if err != nil {
		s.t.Fatalf("tandem %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// newKey makes a key for a tenant with the CLI: its last line.
func (s *server) newKey(tenant string) (id, key string) {
	s.t.Helper()
	out := s.mustTandem("key", "create", "--tenant", tenant)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key = lines[len(lines)-1]
	id = strings.Fields(lines[0])[1]
	if !strings.HasPrefix(key, "tdm_") || !strings.Contains(key, id) {
		s.t.Fatalf("tandem key create printed:\n%s", out)
	}
	return id, key
}

// callAs sends a gateway request with headers (for example a key).
func (s *server) callAs(method, path, body string, hdr map[string]string) reply {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+s.gateway+path, rd)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header, err: err, elapsed: time.Since(start)}
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

// errorCode reads the code of a gateway error body (pass-through shape).
func errorCode(r reply) string {
	var e struct{ Error struct{ Code string } }
	json.Unmarshal([]byte(r.body), &e)
	return e.Error.Code
}

// atZero asserts that model has never had an instance: rejected requests
// must not wake it.
func (s *server) atZero(model string) {
	s.t.Helper()
	st := s.status(model)
	if len(st.Instances) != 0 || st.Ready+st.Starting != 0 || st.Restarts != 0 {
		b, _ := json.Marshal(st)
		s.t.Fatalf("%s was woken by rejected requests: %s", model, b)
	}
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(b), `tandem_cold_starts_total{model="`+model+`"} `) &&
		!strings.Contains(string(b), `tandem_cold_starts_total{model="`+model+`"} 0`) {
		s.t.Fatalf("%s had a cold start from rejected requests", model)
	}
}

// noLeaks stops the server and asserts that no key text is in its log, in
// any file under its data dir, or in any body it answered.
func (s *server) noLeaks(keys []string, bodies []string) {
	s.t.Helper()
	s.stop(syscall.SIGTERM) // usage and last-used times are written at stop
	var where []string
	for i, k := range keys {
		if strings.Contains(s.log.String(), k) {
			where = append(where, "the server's log (key "+strconv.Itoa(i)+")")
		}
		for j, b := range bodies {
			if strings.Contains(b, k) {
				where = append(where, "answer "+strconv.Itoa(j)+": "+b)
			}
		}
	}
	files := 0
	err := filepath.WalkDir(s.dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, k := range keys {
			if strings.Contains(string(b), k) || strings.Contains(string(b), k[len(k)-43:]) {
				where = append(where, path)
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		s.t.Fatalf("walking the data dir: %d files, %v", files, err)
	}
	if len(where) > 0 {
		s.t.Fatalf("a key leaked into: %s", strings.Join(where, "; "))
	}
}

func grpcCall(t *testing.T, addr, model, key string) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	_, err = pb.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, &pb.ModelInferRequest{ModelName: model,
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1},
			Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}}})
	return err
}

// Two tenants keep apart on every door; revoked, unknown and missing keys
// are refused; rejected requests wake nothing and no key leaks.
func TestTenant_IsolationAndKeys(t *testing.T) {
	s := keysServer(t)
	for _, m := range []string{"a", "b"} {
		s.deploy("", fakeManifest(t, m, "serverless", nil, "max: 1\nidle_timeout: 60s", "startup: 20s\nrequest: 10s"))
	}
	s.mustTandem("tenant", "create", "acme", "--models", "a")
	s.mustTandem("tenant", "create", "beta", "--models", "b")
	s.mustTandem("tenant", "create", "slow", "--rate", "1/h")
	_, acme := s.newKey("acme")
	_, beta := s.newKey("beta")
	_, slow := s.newKey("slow")
	var bodies []string
	keep := func(r reply) reply { bodies = append(bodies, r.body); return r }

	// Refused before anything is touched: b stays at zero throughout.
	unknown := "tdm_ffffffffffffffff_" + beta[len("tdm_")+16+1:] // beta's secret under an unknown id
	for _, c := range []struct {
		what   string
		method string
		path   string
		body   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"acme on b, pass-through", "GET", "/models/b/echo", "", bearer(acme), 403, "forbidden"},
		{"acme on b, v2 REST", "POST", "/v2/models/b/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}`, bearer(acme), 403, ""},
		{"no key", "GET", "/models/b/echo", "", nil, 401, "unauthenticated"},
		{"no key, v2", "POST", "/v2/models/b/infer", `{"inputs":[]}`, nil, 401, ""},
		{"unknown key", "GET", "/models/b/echo", "", bearer(unknown), 401, "unauthenticated"},
		{"garbage key", "GET", "/models/b/echo", "", bearer("tdm_" + strings.Repeat("x", 60)), 401, "unauthenticated"},
		{"wrong scheme", "GET", "/models/b/echo", "", map[string]string{"Authorization": "Basic " + beta}, 401, "unauthenticated"},
	} {
		r := keep(s.callAs(c.method, c.path, c.body, c.hdr))
		if r.code != c.status || (c.code != "" && errorCode(r) != c.code) {
			t.Errorf("%s: %v, want %d %s", c.what, r, c.status, c.code)
		}
	}
	if err := grpcCall(t, s.grpc, "b", acme); status.Code(err) != codes.PermissionDenied {
		t.Errorf("acme on b, gRPC: %v, want PermissionDenied", err)
	}
	if err := grpcCall(t, s.grpc, "b", ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no key, gRPC: %v, want Unauthenticated", err)
	}
	if err := grpcCall(t, s.grpc, "b", unknown); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown key, gRPC: %v, want Unauthenticated", err)
	} else if strings.Contains(err.Error(), unknown) {
		t.Errorf("gRPC error repeats the key: %v", err)
	}
	// Over the rate: slow's one request goes to a, the next (to b) is refused.
	if r := keep(s.callAs("GET", "/models/a/echo", "", bearer(slow))); r.code != 200 {
		t.Fatalf("slow's first request: %v", r)
	}
	if r := keep(s.callAs("GET", "/models/b/echo", "", bearer(slow))); r.code != 429 || errorCode(r) != "rate_limited" {
		t.Errorf("slow's second request: %v, want 429 rate_limited", r)
	}
	s.atZero("b")

	// The right keys work, by either header.
	if r := keep(s.callAs("GET", "/models/a/echo", "", bearer(acme))); r.code != 200 {
		t.Fatalf("acme on a: %v", r)
	}
	if r := keep(s.callAs("GET", "/models/a/echo", "", map[string]string{"X-API-Key": acme})); r.code != 200 {
		t.Fatalf("acme on a with X-API-Key: %v", r)
	}
	if r := keep(s.callAs("GET", "/models/b/echo", "", map[string]string{"X-API-Key": beta})); r.code != 200 {
		t.Fatalf("beta on b: %v", r)
	}
	// The model never sees the key: the instance echoes what arrived.
	for _, h := range []map[string]string{bearer(acme), {"X-API-Key": acme}} {
		if r := keep(s.callAs("GET", "/models/a/echo", "", h)); r.code != 200 || strings.Contains(r.body, acme) {
			t.Errorf("the instance received the tenant's key: %v", r)
		}
	}

	// Revocation takes effect at once.
	id2, acme2 := s.newKey("acme")
	if r := keep(s.callAs("GET", "/models/a/echo", "", bearer(acme2))); r.code != 200 {
		t.Fatalf("acme's second key: %v", r)
	}
	s.mustTandem("key", "revoke", id2)
	if r := keep(s.callAs("GET", "/models/a/echo", "", bearer(acme2))); r.code != 401 || errorCode(r) != "unauthenticated" {
		t.Fatalf("revoked key: %v, want 401 at once", r)
	}
	if err := grpcCall(t, s.grpc, "a", acme2); status.Code(err) != codes.Unauthenticated {
		t.Errorf("revoked key, gRPC: %v, want Unauthenticated", err)
	}
	// key ls shows ids and last use, never a key.
	out := s.mustTandem("key", "ls")
	if strings.Contains(out, acme) || strings.Contains(out, acme2) || strings.Contains(out, id2) {
		t.Errorf("key ls shows a key or a revoked id:\n%s", out)
	}
	s.noLeaks([]string{acme, beta, slow, acme2}, bodies)
}

// --rate 5/s: of 50 requests fired at once, between 5 and 5 plus what
// the bucket refilled while they were answered get through; the rest are
// 429 rate_limited with a Retry-After that, honoured, succeeds.
func TestTenant_RateLimit(t *testing.T) {
	s := keysServer(t)
	s.deploy("", fakeManifest(t, "a", "serverless", nil, "max: 1\nidle_timeout: 60s\nmax_queue: 100", "startup: 20s\nrequest: 10s"))
	s.mustTandem("tenant", "create", "warm")
	s.mustTandem("tenant", "create", "acme", "--rate", "5/s")
	_, warm := s.newKey("warm")
	_, acme := s.newKey("acme")
	if r := s.callAs("GET", "/models/a/echo", "", bearer(warm)); r.code != 200 { // a cold start is not part of the bound
		t.Fatalf("warming a: %v", r)
	}
	replies := make([]reply, 50)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range replies {
		wg.Add(1)
		go func() { defer wg.Done(); replies[i] = s.callAs("GET", "/models/a/echo", "", bearer(acme)) }()
	}
	wg.Wait()
	elapsed := time.Since(start)
	ok, limited := 0, 0
	retry := 0
	for i, r := range replies {
		if strings.Contains(r.body, acme) {
			t.Errorf("request %d: the answer repeats the key: %s", i, r.body)
		}
		switch {
		case r.code == 200:
			ok++
		case r.code == 429 && errorCode(r) == "rate_limited":
			limited++
			n, err := strconv.Atoi(r.header.Get("Retry-After"))
			if err != nil || n < 1 {
				t.Errorf("request %d: Retry-After %q", i, r.header.Get("Retry-After"))
			}
			retry = max(retry, n)
		default:
			t.Errorf("request %d: %v", i, r)
		}
	}
	most := 5 + int(math.Ceil(elapsed.Seconds()*5))
	t.Logf("50 requests in %v: %d admitted (bound %d..%d), %d rate limited", elapsed, ok, 5, most, limited)
	if ok < 5 || ok > most || ok+limited != 50 {
		t.Fatalf("%d admitted and %d limited of 50 in %v; want 5..%d admitted, the rest limited", ok, limited, elapsed, most)
	}
	time.Sleep(time.Duration(retry) * time.Second)
	if r := s.callAs("GET", "/models/a/echo", "", bearer(acme)); r.code != 200 {
		t.Fatalf("after Retry-After %ds: %v", retry, r)
	}
	// Update keeps the tenant's usage.
	s.mustTandem("tenant", "update", "acme", "--rate", "")
	out := s.mustTandem("tenant", "status", "acme")
	if !strings.Contains(out, "Requests:    "+strconv.Itoa(ok+1)) || !strings.Contains(out, "Rate:        no limit") {
		t.Errorf("status after update:\n%s", out)
	}
}

// A $0.0001 budget at $0.00005 a request: requests succeed until the
// metered spend reaches it, then 429 budget_exceeded; tandem cost --tenant
// shows the spend.
func TestTenant_Budget(t *testing.T) {
	prices := filepath.Join(t.TempDir(), "prices.yaml")
	writeFile(t, prices, "serverless:\n  per_million_requests: 50\n")
	s := keysServer(t, "--prices", prices)
	s.deploy("", fakeManifest(t, "a", "serverless", nil, "max: 1\nidle_timeout: 60s", "startup: 20s\nrequest: 10s"))
	s.mustTandem("tenant", "create", "acme", "--budget", "0.0001", "--budget-period", "30d")
	_, acme := s.newKey("acme")
	ok := 0
	var refused reply
	for range 20 {
		r := s.callAs("GET", "/models/a/echo", "", bearer(acme))
		if r.code != 200 {
			refused = r
			break
		}
		ok++
	}
	if refused.code != 429 || errorCode(refused) != "budget_exceeded" || refused.header.Get("Retry-After") == "" {
		t.Fatalf("after %d requests: %v (Retry-After %q), want 429 budget_exceeded", ok, refused, refused.header.Get("Retry-After"))
	}
	// Two requests spend $0.0001; a request is metered as it finishes, so at
	// most one more may be admitted before the previous one is counted.
	if ok < 2 || ok > 3 {
		t.Fatalf("%d requests admitted on a budget of two", ok)
	}
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out = s.mustTandem("cost", "--tenant", "acme")
		if strings.Contains(out, "Requests:    "+strconv.Itoa(ok)+"\n") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"Tenant:      acme", "Requests:    " + strconv.Itoa(ok) + "\n", "Spent:       $0.000", "of $0.000100 per 30d"} {
		if !strings.Contains(out, want) {
			t.Errorf("tandem cost --tenant acme lacks %q:\n%s", want, out)
		}
	}
	var ti struct {
		Usage struct {
			Spend       float64 `json:"spend_usd"`
			PeriodSpend float64 `json:"period_spend_usd"`
		}
	}
	json.Unmarshal([]byte(s.mustTandem("cost", "--tenant", "acme", "-o", "json")), &ti)
	// Each request costs $0.00005 and its busy time (the cold start's
	// included) at the deployment's size.
	if ti.Usage.Spend < 0.0001 || ti.Usage.Spend < float64(ok)*0.00005 || ti.Usage.PeriodSpend != ti.Usage.Spend {
		t.Errorf("metered spend %+v for %d requests at $0.00005", ti.Usage, ok)
	}
	// Raising the budget lets the tenant in again.
	s.mustTandem("tenant", "update", "acme", "--budget", "1")
	if r := s.callAs("GET", "/models/a/echo", "", bearer(acme)); r.code != 200 {
		t.Fatalf("after raising the budget: %v", r)
	}
}
