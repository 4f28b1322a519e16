package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/runtime/onnx"
	"tandem/internal/testbin"
)

// needCluster returns the local cluster's kubeconfig: in CI it brings the
// cluster up (idempotent); elsewhere it skips loudly when none runs.
func needCluster(t *testing.T) string {
	t.Helper()
	script := filepath.Join(testbin.RepoRoot(t), "hack", "local-cluster.sh")
	if os.Getenv("CI") != "" {
		out, err := exec.Command("bash", script, "up").CombinedOutput()
		if err != nil {
			t.Fatalf("CI: hack/local-cluster.sh up: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1]
	}
	out, err := exec.Command("bash", script, "kubeconfig").Output()
	kc := strings.TrimSpace(string(out))
	if err != nil || kc == "" || exec.Command("kubectl", "--kubeconfig", kc, "get", "--raw", "/readyz").Run() != nil {
		t.Skip("SKIPPED, NOT TESTED: no local cluster (run hack/local-cluster.sh up)")
	}
	return kc
}

// kubeServer starts tandem with the kubernetes backend as default.
func kubeServer(t *testing.T, kubeconfig, ns string) *server {
	t.Helper()
	lib, _ := onnx.FindLibrary()
	s := &server{t: t, bin: testbin.Build(t, "tandem/cmd/tandem"), dataDir: t.TempDir(),
		extraArgs: []string{"--backend", "kubernetes", "--kubeconfig", kubeconfig, "--kube-namespace", ns},
		extraEnv:  []string{"TANDEM_ONNXRUNTIME_LIB=" + lib}}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGTERM) })
	return s
}

func kubectl(t *testing.T, kc string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("kubectl", append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// replicasOf reads the Deployment's spec.replicas (-1 when absent).
func replicasOf(t *testing.T, kc, ns, name string) int {
	t.Helper()
	out, err := kubectl(t, kc, "-n", ns, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}")
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(out)
	return n
}

func kubeNamespace(t *testing.T, kc string) string {
	t.Helper()
	ns := fmt.Sprintf("tandem-e2e-%d", time.Now().UnixNano()%1_000_000)
	if out, err := kubectl(t, kc, "create", "namespace", ns); err != nil {
		t.Fatalf("create namespace: %v %s", err, out)
	}
	t.Cleanup(func() { kubectl(t, kc, "delete", "namespace", ns, "--wait=false") })
	return ns
}

func fakeKube(name, mode, scaling string) string {
	return fmt.Sprintf("name: %s\nmode: %s\nbackend: kubernetes\nruntime:\n  image: tandem-fakemodel:test\n  env: {HOST: 0.0.0.0}\n  health: /health\nscaling:\n%stimeouts:\n  startup: 60s\n  grace: 2s\n",
		name, mode, indent(scaling))
}

// The digits ONNX model on Kubernetes: the first request scales the
// Deployment from 0, is held and answered; idle returns it to 0.
func TestKubernetes_DigitsFromZero(t *testing.T) {
	kc := needCluster(t)
	ns := kubeNamespace(t, kc)
	s := kubeServer(t, kc, ns)
	model := filepath.Join(testbin.RepoRoot(t), "models", "digits.onnx")
	s.deploy("", fmt.Sprintf("name: kdigits\nmode: serverless\nbackend: kubernetes\nruntime:\n  onnx: %s\nscaling:\n  max: 2\n  idle_timeout: 2s\n  stable_window: 3s\n  panic_window: 1s\n", model))
	if n := replicasOf(t, kc, ns, "kdigits"); n != 0 {
		t.Fatalf("replicas before any request = %d, want 0", n)
	}
	td := loadRows(t, "digits_rows.json")
	r := s.call("POST", "/v2/models/kdigits/infer", inferBody("input", td.Rows))
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" || !strings.Contains(r.body, labelsJSON(td.Labels)) {
		t.Fatalf("first request from zero: %v", r)
	}
	s.waitFor("scaled back to zero", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 0 && st.Desired == 0 }, "kdigits")
	deadline := time.Now().Add(30 * time.Second)
	for replicasOf(t, kc, ns, "kdigits") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Deployment replicas = %d after idle_timeout, want 0", replicasOf(t, kc, ns, "kdigits"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func labelsJSON(l []int64) string {
	parts := make([]string, len(l))
	for i, v := range l {
		parts[i] = strconv.FormatInt(v, 10)
	}
	return `"data":[` + strings.Join(parts, ",") + `]`
}

// A burst scales replicas up to max, never beyond, and every request
// succeeds; a dedicated deployment keeps min ready; a crash restart of
// tandem adopts and starts nothing twice; delete removes the objects.
func TestKubernetes_BurstDedicatedRestartDelete(t *testing.T) {
	kc := needCluster(t)
	ns := kubeNamespace(t, kc)
	s := kubeServer(t, kc, ns)
	s.deploy("", fakeKube("kburst", "serverless", "max: 3\ntarget_concurrency: 1\nidle_timeout: 5s\nstable_window: 6s\npanic_window: 1s"))
	replies, most := s.burst(30, "/models/kburst/sleep?d=4s", 50*time.Millisecond,
		func() int { return replicasOf(t, kc, ns, "kburst") },
		func() {
			s.waitFor("3 ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 3 }, "kburst")
		})
	for i, r := range replies {
		if r.code != 200 {
			t.Errorf("burst request %d: %v", i, r)
		}
	}
	if most != 3 {
		t.Fatalf("most replicas = %d, want exactly max 3", most)
	}

	s.deploy("", fakeKube("kded", "dedicated", "min: 2\nmax: 2"))
	st := s.waitFor("2 ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "kded")
	s.restart(syscall.SIGKILL)
	st2 := s.waitFor("2 ready after restart", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "kded")
	if ids(st) != ids(st2) {
		t.Fatalf("pods after restart %s, want the same %s (nothing started twice)", ids(st2), ids(st))
	}
	if r := s.call("GET", "/models/kded/echo", ""); r.code != 200 {
		t.Fatalf("dedicated after restart: %v", r)
	}
	if out, err := s.tandem("delete", "kded"); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	for _, kind := range []string{"deployment", "service"} {
		if out, err := kubectl(t, kc, "-n", ns, "get", kind, "kded"); err == nil {
			t.Errorf("%s kded still exists after delete: %s", kind, out)
		}
	}
}

// Two tandem processes on one cluster share the deployments kept there;
// only the lease holder changes replicas; kill it and the other takes over.
func TestKubernetes_TwoTandemsOneLeader(t *testing.T) {
	kc := needCluster(t)
	ns := kubeNamespace(t, kc)
	a := kubeServer(t, kc, ns)
	b := kubeServer(t, kc, ns)
	leader, follower := leaderOf(t, kc, ns, a, b)
	leader.deploy("", fakeKube("klease", "dedicated", "min: 1\nmax: 3"))
	leader.waitFor("leader serves", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "klease")
	// The follower learns the deployment from the cluster and serves it too.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r := follower.call("GET", "/models/klease/echo", ""); r.code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower never served the deployment made through the leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(follower.log.String(), "msg=scaled") {
		t.Fatalf("the follower changed replicas:\n%s", follower.log)
	}
	if !strings.Contains(leader.log.String(), "msg=scaled") {
		t.Fatalf("the leader never scaled:\n%s", leader.log)
	}
	leader.stop(syscall.SIGKILL)
	deadline = time.Now().Add(60 * time.Second)
	for !holdsLease(t, kc, ns, follower) {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not take the lease (holder %q)", leaseHolder(t, kc, ns))
		}
		time.Sleep(100 * time.Millisecond)
	}
	follower.deploy("", fakeKube("klease", "dedicated", "min: 2\nmax: 3"))
	deadline = time.Now().Add(60 * time.Second)
	for replicasOf(t, kc, ns, "klease") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the new leader did not scale (replicas %d)", replicasOf(t, kc, ns, "klease"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaseHolder returns the holder identity of the tandem-leader Lease in ns.
func leaseHolder(t *testing.T, kc, ns string) string {
	out, _ := kubectl(t, kc, "-n", ns, "get", "lease", "tandem-leader", "-o", "jsonpath={.spec.holderIdentity}")
	return out
}

// holdsLease reports whether tandem s holds the Lease now (a holder
// identity ends in its pid).
func holdsLease(t *testing.T, kc, ns string, s *server) bool {
	return strings.HasSuffix(leaseHolder(t, kc, ns), "-"+strconv.Itoa(s.cmd.Process.Pid))
}

// leaderOf waits until one of two tandems holds the Lease and returns it
// first.
func leaderOf(t *testing.T, kc, ns string, a, b *server) (leader, follower *server) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		switch {
		case holdsLease(t, kc, ns, a):
			return a, b
		case holdsLease(t, kc, ns, b):
			return b, a
		case time.Now().After(deadline):
			t.Fatalf("no tandem holds the lease after 60s (holder %q)", leaseHolder(t, kc, ns))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
