package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/runtime/onnx"
	"tandem/internal/testbin"
)

// kubeKeysServer is kubeServer with --auth keys.
func kubeKeysServer(t *testing.T, kubeconfig, ns string) *server {
	t.Helper()
	lib, _ := onnx.FindLibrary()
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(),
		extraArgs: []string{"--backend", "kubernetes", "--kubeconfig", kubeconfig, "--kube-namespace", ns, "--auth", "keys"},
		extraEnv:  []string{"TANDEM_ONNXRUNTIME_LIB=" + lib}}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s
}

// waitLog waits until s's log holds want.
func waitLog(t *testing.T, s *server, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(s.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %v:\n%s", want, limit, tail(s.log.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two tandem processes with --auth keys on one cluster (separate data
// dirs, as two pods with emptyDir): a tenant and key made through one are
// usable at the other; a tenant at --rate 10/s hit through both is
// admitted about 10/s overall, not 20; a budget spent at one is refused
// at the other; a key revoked at one is refused at the other within the
// catalog's interval.
func TestKubernetes_TenantsAcrossTandems(t *testing.T) {
	kc := needCluster(t)
	ns := kubeNamespace(t, kc)
	a := kubeKeysServer(t, kc, ns)
	b := kubeKeysServer(t, kc, ns)
	for _, s := range []*server{a, b} {
		waitLog(t, s, "tenants and keys are shared through the cluster", 10*time.Second)
	}

	const name = "ktenants"
	a.deploy("", fakeKube(name, "dedicated", "min: 1\nmax: 1"))
	a.waitFor("one ready", 90*time.Second, func(st *controller.Status) bool { return st.Ready >= 1 }, name)

	// Made at a, used at b.
	a.mustTandem("tenant", "create", "acme", "--rate", "10/s")
	_, key := a.newKey("acme")
	path := "/models/" + name + "/echo"
	made := time.Now()
	for {
		r := b.callAs("GET", path, "", bearer(key))
		if r.code == 200 {
			break
		}
		if time.Since(made) > 30*time.Second {
			t.Fatalf("a key made at a is refused at b 30 s later: %v\nb:\n%s", r, tail(b.log.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a key made at a worked at b after %v", time.Since(made).Round(time.Millisecond))
	if out := b.mustTandem("tenant", "ls"); !strings.Contains(out, "acme") {
		t.Fatalf("tandem tenant ls at b:\n%s", out)
	}

	// Both know there are two of them (the leader's reply to each report).
	for _, s := range []*server{a, b} {
		waitLog(t, s, `msg="tenant limits split across tandem replicas" component=tenant replicas=2`, 15*time.Second)
	}

	// The rate: one client per tandem sends its next request as soon as
	// the last is answered, for 5 s. Each tandem runs a bucket of 5/s with
	// a burst of 5, so the cluster admits at most the burst (10) plus 10/s
	// over the time the clients ran; without the split it would be twice
	// that. Each bucket was idle and full when the load began.
	time.Sleep(1500 * time.Millisecond) // refill what the wait above took
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mu sync.Mutex
	counts := map[*server]map[int]int{a: {}, b: {}}
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range []*server{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.gateway+path, nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				mu.Lock()
				counts[s][resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ran := time.Since(start).Seconds()
	okA, okB := counts[a][200], counts[b][200]
	admitted := okA + okB
	most := 10 + 1 + int(10*ran+0.999) // burst 10 (+1: each share of the burst rounded up) + 10/s
	least := int(10*ran) - 10          // 10/s, less a second of slack for the first and last request
	t.Logf("--rate 10/s over two tandems for %.2f s: %d admitted (a %d, b %d), %d + %d refused (429); bounds [%d, %d]",
		ran, admitted, okA, okB, counts[a][429], counts[b][429], least, most)
	if admitted > most || admitted < least {
		t.Fatalf("admitted %d in %.2f s across two tandems at 10/s, want between %d and %d (a: %v, b: %v)",
			admitted, ran, least, most, counts[a], counts[b])
	}
	if counts[a][429] == 0 || counts[b][429] == 0 || okA == 0 || okB == 0 {
		t.Fatalf("each tandem should have admitted and refused some: a %v, b %v", counts[a], counts[b])
	}

	// The budget: spent at a by one request, refused at b, which never
	// served the tenant.
	a.mustTandem("tenant", "create", "spender", "--budget", "0.000000001")
	sid, skey := a.newKey("spender")
	deadline := time.Now().Add(30 * time.Second)
	for out, _ := b.tandem("key", "ls", "--tenant", "spender"); !strings.Contains(out, sid); out, _ = b.tandem("key", "ls", "--tenant", "spender") {
		if time.Now().After(deadline) {
			t.Fatal("b does not know spender's key 30 s after it was made at a")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for r := a.callAs("GET", path, "", bearer(skey)); r.code != 200; r = a.callAs("GET", path, "", bearer(skey)) {
		if time.Now().After(deadline) {
			t.Fatalf("spender's first request at a: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := a.callAs("GET", path, "", bearer(skey)); r.code != 429 || errorCode(r) != "budget_exceeded" {
		t.Fatalf("spender's second request at a: %v, want 429 budget_exceeded", r)
	}
	// The error bound is one report interval (here 100 ms) and a post:
	// after ten of them, b's very first request for spender is refused.
	// b served none of it, so the refusal comes from a's spend.
	time.Sleep(time.Second)
	if r := b.callAs("GET", path, "", bearer(skey)); r.code != 429 || errorCode(r) != "budget_exceeded" {
		t.Fatalf("spender at b 1 s after a spent its budget: %v, want 429 budget_exceeded\nb:\n%s", r, tail(b.log.String(), 30))
	}
	if out := b.mustTandem("tenant", "status", "spender"); !strings.Contains(out, "Requests:    0\n") {
		t.Fatalf("b metered spender's requests itself:\n%s", out)
	}

	// A revocation at b reaches a within the catalog's interval (2 s),
	// plus a listing.
	id := strings.Split(key, "_")[1]
	b.mustTandem("key", "revoke", id)
	if r := b.callAs("GET", path, "", bearer(key)); r.code != 401 {
		t.Fatalf("the revoked key at b: %v, want 401 at once", r)
	}
	revoked := time.Now()
	for {
		r := a.callAs("GET", path, "", bearer(key))
		if r.code == 401 {
			break
		}
		if time.Since(revoked) > 10*time.Second {
			t.Fatalf("a key revoked at b still works at a 10 s later: %v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(revoked)
	t.Logf("a key revoked at b was refused at a after %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("revocation took %v to reach the other tandem, want within about 2 s", took)
	}
	// The catalog holds hashes, never a key.
	if out, err := kubectl(t, kc, "-n", ns, "get", "secret", "tandem-tenants", "-o", "jsonpath={.data}"); err != nil || !strings.Contains(out, "acme") {
		t.Fatalf("the catalog Secret: %v %s", err, out)
	} else if strings.Contains(out, key) || strings.Contains(out, skey) {
		t.Fatal("the catalog Secret holds a key")
	}
}
