package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"tandem/internal/backend"
	"tandem/internal/manifest"
	"tandem/internal/testbin"
)

// The cluster the tests run against: hack/local-cluster.sh's, started by
// TestMain when CI=true, or used when it is already up. TANDEM_KUBECONFIG
// names another cluster instead.
var (
	kubeconfig string
	clusterErr error
)

// Bounds on waiting for the cluster. They only bound failures.
const (
	readyWithin = 90 * time.Second
	goneWithin  = 90 * time.Second
)

func TestMain(m *testing.M) {
	kubeconfig, clusterErr = testbin.FindCluster()
	os.Exit(m.Run())
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && filepath.Base(d) != "cluster" {
			if _, err := os.Stat(filepath.Join(d, "hack", "local-cluster.sh")); err == nil {
				return d, nil
			}
		}
	}
	return "", errors.New("repository root not found")
}

// needCluster skips (loudly, and never in CI) when no cluster is up.
func needCluster(t testing.TB) {
	t.Helper()
	if clusterErr != nil {
		t.Fatalf("cluster: %v", clusterErr)
	}
	if kubeconfig == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cluster in CI")
		}
		t.Skip("SKIPPING the Kubernetes cluster tests: no local cluster is up. Start one with " +
			"`hack/local-cluster.sh up` (builds the Kubernetes binaries once, several minutes) or run with CI=true.")
	}
}

var images struct {
	once sync.Once
	err  error
}

// Images the cluster tests run: cmd/fakemodel (listens on 127.0.0.1, so
// host network only) and testdata/podserver (listens on every interface).
const (
	fakemodelImage = "tandem-fakemodel:test"
	podserverImage = "tandem-podserver:test"
)

// loadImages builds both images with Docker (scripts/docker.sh) and imports
// them into the cluster's node, once per test binary.
func loadImages(t testing.TB) {
	t.Helper()
	images.once.Do(func() { images.err = buildAndLoad(t) })
	if images.err != nil {
		t.Fatalf("images: %v", images.err)
	}
}

func buildAndLoad(t testing.TB) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	run := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return nil
	}
	if err := run("scripts/docker.sh", "install", "start", "images", "fakemodel"); err != nil {
		return err
	}
	ctx, err := os.MkdirTemp("", "podserver-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctx)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctx, "podserver"), "./internal/backend/kubernetes/testdata/podserver")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build podserver: %w\n%s", err, out)
	}
	df := "FROM scratch\nCOPY podserver /podserver\nENTRYPOINT [\"/podserver\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		return err
	}
	docker := "docker"
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		docker = "/usr/bin/docker"
	}
	cmd := exec.Command(docker, "build", "-q", "-t", podserverImage, ctx)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker build podserver: %w\n%s", err, out)
	}
	return run("hack/local-cluster.sh", "load", fakemodelImage, podserverImage)
}

// clusterClient is a plain clientset for the tests' own checks.
func clusterClient(t testing.TB) k8s.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k8s.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testLogger writes the backend's log lines to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newClusterBackend connects a Backend to the test cluster and closes it
// when the test ends.
func newClusterBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	cfg.Kubeconfig = kubeconfig
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var nameSeq struct {
	sync.Mutex
	n int
}

// uniqueName returns a deployment name no other test (or earlier run) uses.
func uniqueName(prefix string) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	nameSeq.n++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e6, nameSeq.n)
}

// specFor returns a spec for image, deleting the deployment when the test ends.
func specFor(t testing.TB, b *Backend, name, image, yamlExtra string) backend.Spec {
	t.Helper()
	y := fmt.Sprintf("name: %s\nbackend: kubernetes\nruntime:\n  image: %s\n  health: /health\ntimeouts: {grace: 1s}\n%s", name, image, yamlExtra)
	m, err := manifest.Parse([]byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Delete(ctx, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return backend.Spec{Deployment: name, Revision: m.Hash(), Manifest: m}
}

// waitSet reads w until a set satisfies ok, and returns it.
func waitSet(t testing.TB, w <-chan []backend.Instance, within time.Duration, what string, ok func([]backend.Instance) bool) []backend.Instance {
	t.Helper()
	deadline := time.After(within)
	var last []backend.Instance
	for {
		select {
		case set, open := <-w:
			if !open {
				t.Fatalf("watch closed while waiting for %s (last %v)", what, last)
			}
			last = set
			if ok(set) {
				return set
			}
		case <-deadline:
			t.Fatalf("no %s within %s (last set %v)", what, within, last)
		}
	}
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestBackend_ScaleFromZeroHostNetwork(t *testing.T) {
	needCluster(t)
	loadImages(t)
	ctx := t.Context()
	b := newClusterBackend(t, Config{HostNetwork: true})
	name := uniqueName("fake")
	spec := specFor(t, b, name, fakemodelImage, "")

	if n, err := b.Replicas(ctx, name); err != nil || n != -1 {
		t.Fatalf("Replicas before Apply = %d, %v; want -1", n, err)
	}
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Replicas(ctx, name); err != nil || n != 0 {
		t.Fatalf("Replicas after Apply = %d, %v; want 0", n, err)
	}
	w, err := b.Watch(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if first := <-w; len(first) != 0 {
		t.Fatalf("first set %v, want empty", first)
	}
	if err := b.Scale(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	set := waitSet(t, w, readyWithin, "ready endpoint", func(s []backend.Instance) bool { return len(s) == 1 })
	inst := set[0]
	if !strings.HasPrefix(inst.Addr, "127.0.0.1:") || inst.Deployment != name || inst.Revision != spec.Revision || !strings.HasPrefix(inst.ID, name+"-") {
		t.Errorf("instance %+v: want a pod of %s at 127.0.0.1 with revision %s", inst, name, spec.Revision)
	}
	if code, body := get(t, "http://"+inst.Addr+"/health"); code != 200 || body != "ok" {
		t.Errorf("GET /health = %d %q", code, body)
	}
	if n, err := b.Replicas(ctx, name); err != nil || n != 1 {
		t.Errorf("Replicas = %d, %v; want 1", n, err)
	}

	if err := b.Scale(ctx, name, 0); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, goneWithin, "empty set after scaling to 0", func(s []backend.Instance) bool { return len(s) == 0 })
}

func TestBackend_PodNetwork(t *testing.T) {
	needCluster(t)
	loadImages(t)
	ctx := t.Context()
	b := newClusterBackend(t, Config{})
	name := uniqueName("pods")
	spec := specFor(t, b, name, podserverImage, "")
	// A mounted file (as a runtime.onnx model is) reaches every pod.
	model := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(model, []byte("model-bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = []backend.Mount{{Source: model, Target: "/models/model.onnx", ReadOnly: true}}
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Scale(ctx, name, 2); err != nil {
		t.Fatal(err)
	}
	set := waitSet(t, w, readyWithin, "two ready pods", func(s []backend.Instance) bool { return len(s) == 2 })
	seen := map[string]bool{}
	for _, inst := range set {
		// Pods have their own addresses on the cluster's bridge.
		if !strings.HasPrefix(inst.Addr, "10.244.0.") || !strings.HasSuffix(inst.Addr, fmt.Sprintf(":%d", DefaultPort)) {
			t.Errorf("addr %q, want a pod IP on 10.244.0.0/24, port %d", inst.Addr, DefaultPort)
		}
		code, body := get(t, "http://"+inst.Addr+"/name")
		if code != 200 || body != inst.ID {
			t.Errorf("GET /name at %s = %d %q, want the pod's name %q", inst.Addr, code, body, inst.ID)
		}
		if code, body := get(t, "http://"+inst.Addr+"/cat?path=/models/model.onnx"); code != 200 || body != "model-bytes" {
			t.Errorf("mounted file at %s = %d %q, want model-bytes", inst.Addr, code, body)
		}
		seen[inst.Addr] = true
	}
	if len(seen) != 2 {
		t.Errorf("addresses %v, want two different ones", set)
	}
	if err := b.Scale(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, goneWithin, "one pod after scaling to 1", func(s []backend.Instance) bool { return len(s) == 1 })
}

func TestBackend_ApplyAdoptsAndUpdates(t *testing.T) {
	needCluster(t)
	ctx := t.Context()
	b := newClusterBackend(t, Config{})
	name := uniqueName("adopt")
	spec := specFor(t, b, name, podserverImage, "")
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := b.Scale(ctx, name, 3); err != nil {
		t.Fatal(err)
	}
	c := clusterClient(t)
	before, err := c.AppsV1().Deployments(DefaultNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A restarted tandem applies the same spec: the Deployment's spec is not
	// changed (its generation counts spec changes), so nothing rolls.
	b2 := newClusterBackend(t, Config{})
	if err := b2.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	after, err := c.AppsV1().Deployments(DefaultNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation {
		t.Errorf("re-applying the same spec changed the Deployment (generation %d -> %d)", before.Generation, after.Generation)
	}
	if n, _ := b2.Replicas(ctx, name); n != 3 {
		t.Errorf("Replicas after restart = %d, want 3", n)
	}

	// A new revision changes the template and keeps the replica count.
	spec.Manifest.Runtime.Env = map[string]string{"COLOUR": "blue"}
	spec.Revision = spec.Manifest.Hash()
	if err := b2.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	after, err = c.AppsV1().Deployments(DefaultNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Spec.Template.Labels[backend.LabelRevision]; got != spec.Revision {
		t.Errorf("template revision %q, want %q", got, spec.Revision)
	}
	if *after.Spec.Replicas != 3 {
		t.Errorf("replicas after a new revision = %d, want 3", *after.Spec.Replicas)
	}
}

func TestBackend_DeleteRemovesObjects(t *testing.T) {
	needCluster(t)
	loadImages(t)
	ctx := t.Context()
	b := newClusterBackend(t, Config{})
	name := uniqueName("del")
	spec := specFor(t, b, name, podserverImage, "")
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Scale(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, readyWithin, "a ready pod", func(s []backend.Instance) bool { return len(s) == 1 })
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, goneWithin, "no pods after Delete", func(s []backend.Instance) bool { return len(s) == 0 })
	c := clusterClient(t)
	if _, err := c.AppsV1().Deployments(DefaultNamespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment after Delete: err %v, want NotFound", err)
	}
	if _, err := c.CoreV1().Services(DefaultNamespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Service after Delete: err %v, want NotFound", err)
	}
	sel := backend.LabelDeployment + "=" + name
	deadline := time.Now().Add(goneWithin)
	for {
		pods, err := c.CoreV1().Pods(DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods left %s after Delete", len(pods.Items), goneWithin)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n, err := b.Replicas(ctx, name); err != nil || n != -1 {
		t.Errorf("Replicas after Delete = %d, %v; want -1", n, err)
	}
	if err := b.Scale(ctx, name, 1); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Scale after Delete: %v, want ErrNotFound", err)
	}
}

func TestBackend_LeaderTakeover(t *testing.T) {
	needCluster(t)
	for _, tt := range []struct {
		name    string
		release bool // false: the leader dies without giving the lease up
	}{
		{"close releases the lease", true},
		{"a dead leader's lease expires", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lease := uniqueName("lease")
			const d = 2 * time.Second
			mk := func(id string, release bool) *Backend {
				rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
				if err != nil {
					t.Fatal(err)
				}
				c, err := k8s.NewForConfig(rc)
				if err != nil {
					t.Fatal(err)
				}
				b := newBackend(c, Config{Identity: id, LeaseName: lease, LeaseDuration: d, Logger: testLogger(t)}, release)
				t.Cleanup(func() { b.Close() })
				return b
			}
			a := mk("tandem-a", tt.release)
			waitFor(t, 3*d, "a to lead", a.IsLeader)
			bb := mk("tandem-b", true)
			// b follows while a renews: several renewals of a, b never leads.
			for range 10 {
				if bb.IsLeader() {
					t.Fatal("b leads while a holds the lease")
				}
				time.Sleep(d / 5)
			}
			if !a.IsLeader() {
				t.Fatal("a lost the lease while alive")
			}
			start := time.Now()
			a.Close()
			if a.IsLeader() {
				t.Error("a still leads after Close")
			}
			_, retry := leaseTimes(d)
			waitFor(t, d+4*retry+time.Second, "b to take over", bb.IsLeader)
			t.Logf("b took over %s after a stopped (lease %s)", time.Since(start).Round(time.Millisecond), d)
		})
	}
}

func waitFor(t testing.TB, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExport_AppliesWithServerDryRun(t *testing.T) {
	needCluster(t)
	onnx := filepath.Join(t.TempDir(), "digits.onnx")
	if err := os.WriteFile(onnx, bytes.Repeat([]byte{7}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, yaml string
		cfg        Config
		mounts     []backend.Mount
	}{
		{"image", "name: web\nbackend: kubernetes\nmode: dedicated\nruntime: {image: 'tandem-fakemodel:test', health: /health, env: {A: b}}\nresources: {cpu: 0.5, memory: 256Mi, gpus: 1}\n", Config{}, nil},
		{"host network", "name: web\nbackend: kubernetes\nruntime: {image: 'tandem-fakemodel:test', port: 9000}\n", Config{HostNetwork: true}, nil},
		// What the controller's PrepareSpec makes of runtime.onnx.
		{"mounted model", "name: digits\nbackend: kubernetes\nruntime: {image: 'tandem-onnx:latest', command: [tandem, runtime, onnx, --model, /models/digits.onnx]}\n", Config{},
			[]backend.Mount{{Source: onnx, Target: "/models/digits.onnx", ReadOnly: true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := manifest.Parse([]byte(tt.yaml), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			spec := backend.Spec{Deployment: m.Name, Revision: m.Hash(), Manifest: m, Mounts: tt.mounts}
			if err := Export(&out, spec, tt.cfg); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", "-")
			cmd.Stdin = &out
			res, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, res)
			}
			if !strings.Contains(string(res), "deployment.apps/"+m.Name) || !strings.Contains(string(res), "service/") {
				t.Errorf("kubectl said %q, want a deployment and a service", res)
			}
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestDeployManifests applies deploy/kubernetes to the cluster (tandem's
// own Deployment with server-side dry run: its image is built elsewhere)
// and runs the backend with the service account's token alone, so that
// the RBAC rules are shown to be enough.
func TestDeployManifests(t *testing.T) {
	needCluster(t)
	loadImages(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "deploy", "kubernetes")
	kubectl := func(args ...string) {
		t.Helper()
		out, err := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	kubectl("apply", "-f", filepath.Join(dir, "namespace.yaml"), "-f", filepath.Join(dir, "rbac.yaml"))
	kubectl("apply", "--dry-run=server", "-f", filepath.Join(dir, "tandem.yaml"))

	ctx := t.Context()
	admin := clusterClient(t)
	tok, err := admin.CoreV1().ServiceAccounts("tandem-system").CreateToken(ctx, "tandem",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.BearerToken, rc.BearerTokenFile = tok.Status.Token, ""
	rc.Username, rc.Password = "", ""
	sa, err := k8s.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets(DefaultNamespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as tandem: %v, want Forbidden (least privilege)", err)
	}

	// The lease: another tandem (another package's tests) may hold
	// tandem-leader, so check the rights leader election uses directly.
	leases := sa.CoordinationV1().Leases(DefaultNamespace)
	probe := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("rbac-probe")}}
	if _, err := leases.Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		t.Errorf("creating a lease as tandem: %v", err)
	}
	t.Cleanup(func() {
		admin.CoordinationV1().Leases(DefaultNamespace).Delete(context.Background(), probe.Name, metav1.DeleteOptions{})
	})
	b := NewWithClient(sa, Config{Logger: testLogger(t)})
	t.Cleanup(func() { b.Close() })
	waitFor(t, 30*time.Second, "the lease tandem-leader", func() bool {
		_, err := admin.CoordinationV1().Leases(DefaultNamespace).Get(ctx, DefaultLeaseName, metav1.GetOptions{})
		return err == nil
	})
	l, err := leases.Get(ctx, DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the lease as tandem: %v", err)
	}
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
		t.Errorf("updating the lease as tandem: %v", err)
	}
	name := uniqueName("rbac")
	spec := specFor(t, b, name, podserverImage, "")
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Scale(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, readyWithin, "a ready pod", func(s []backend.Instance) bool { return len(s) == 1 })
	if n, err := b.Replicas(ctx, name); err != nil || n != 1 {
		t.Errorf("Replicas = %d, %v", n, err)
	}
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
}
