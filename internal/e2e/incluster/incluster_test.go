// Package incluster runs tandem itself in the test cluster, as
// deploy/kubernetes describes it: the image built by scripts/docker.sh, two
// replicas behind the Service tandem-gateway, a model deployed through the
// control API, and a prober through the Service while tandem pods are
// deleted gracefully and killed.
package incluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	sigsyaml "sigs.k8s.io/yaml"

	"tandem/internal/testbin"
)

// The cluster: hack/local-cluster.sh's, brought up by TestMain when
// CI=true, or used when it is already up; TANDEM_KUBECONFIG names another.
var (
	kubeconfig string
	clusterErr error
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
		if _, err := os.Stat(filepath.Join(d, "hack", "local-cluster.sh")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("repository root not found")
}

func needCluster(t *testing.T) {
	t.Helper()
	if clusterErr != nil {
		t.Fatalf("cluster: %v", clusterErr)
	}
	if kubeconfig == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cluster in CI")
		}
		t.Skip("SKIPPING tandem-in-the-cluster: no local cluster is up. Start one with " +
			"`hack/local-cluster.sh up` or run with CI=true.")
	}
}

const (
	tandemImage    = "tandem:latest"
	podserverImage = "tandem-podserver:test"
	// Bounds on waiting for the cluster: they only bound failures.
	readyWithin = 120 * time.Second
	goneWithin  = 120 * time.Second
	// proxyLag is how late the stand-in for kube-proxy forgets an endpoint
	// the Service no longer has ready: kube-proxy's iptables mode syncs at
	// most once a second by default (--iptables-min-sync-period), and real
	// clusters, with many Services and nodes, are slower still. A new
	// ready endpoint it uses at once (a quiet kube-proxy syncs at once):
	// the worst of both for tandem.
	proxyLag = time.Second
	// probeEvery is the prober's period; a phase lasts until the prober has
	// sent at least minProbes (as Knative's HA tests ask a minimum of
	// probes), so that a rate means the same on a slow machine.
	probeEvery = 10 * time.Millisecond
	minProbes  = 500
)

// buildAndLoad builds tandem:latest and the model image with
// scripts/docker.sh and imports both into the cluster's node.
func buildAndLoad(t *testing.T, root string) {
	t.Helper()
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
	}
	run("scripts/docker.sh", "install", "start", "images", "tandem", "images", "podserver")
	run("hack/local-cluster.sh", "load", tandemImage, podserverImage)
}

// The whole path: tandem's image, deploy/kubernetes applied as written
// (namespaces renamed, so that the backend's other cluster tests keep their
// lease), a model deployed through the control API, traffic through the
// Service, then a tandem pod deleted gracefully (every probe must succeed)
// and one killed with SIGKILL (at least 99% must).
func TestInCluster_TandemServesAndSurvivesPodLoss(t *testing.T) {
	needCluster(t)
	began := time.Now()
	root := testbin.RepoRoot(t)
	buildAndLoad(t, root)
	t.Logf("images built and loaded in %s", time.Since(began).Round(time.Second))

	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k8s.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000)
	sysNS, modelNS := "tandem-ic-system-"+suffix, "tandem-ic-"+suffix
	t.Cleanup(func() { deleteNamespaces(t, c, sysNS, modelNS) })

	// The local cluster runs no kube-proxy and its API server listens on
	// loopback, so a pod cannot reach it at the kubernetes Service: the
	// pods reach it through a forwarder on the node's bridge address, with
	// their own service account's token (so deploy/kubernetes/rbac.yaml is
	// what authorizes them).
	nodeIP := nodeAddress(t, c)
	fwd := forwardAPIServer(t, nodeIP, rc.Host)

	objs := readKustomization(t, filepath.Join(root, "deploy", "kubernetes"))
	token := randomToken(t)
	applyDeploy(t, ctx, c, objs, sysNS, modelNS, token, fwd)

	tandemPods := waitTandemPods(t, ctx, c, sysNS, 2, nil)
	t.Logf("two tandem pods ready after %s: %s", time.Since(began).Round(time.Second), strings.Join(podNames(tandemPods), ", "))

	svc := followService(t, ctx, c, sysNS, "tandem-gateway", "http")

	// The control API through the Service tandem-admin: 401 without the
	// token, the deploy with it.
	admin := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: followService(t, ctx, c, sysNS, "tandem-admin", "admin").dialer()}}
	if code, body := call(t, admin, "GET", "http://tandem-admin/v1/deployments", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("control API without the token = %d %q, want 401", code, body)
	}
	auth := map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/yaml"}
	man := "name: echo\nmode: dedicated\nbackend: kubernetes\nruntime:\n  image: " + podserverImage +
		"\n  health: /health\nscaling: {min: 2, max: 2}\ntimeouts: {grace: 1s}\n"
	if code, body := call(t, admin, "POST", "http://tandem-admin/v1/deployments", man, auth); code != http.StatusCreated {
		t.Fatalf("deploy through the control API = %d %q, want 201", code, body)
	}

	// Both model pods ready, and every tandem pod (the one that took the
	// deploy and the one that follows it through the cluster) answering.
	models := waitModelPods(t, ctx, c, modelNS, "echo", 2)
	for _, p := range tandemPods {
		waitAnswer(t, "http://"+p.Status.PodIP+":8080/models/echo/name", models)
	}
	t.Logf("model echo served by both tandem pods after %s", time.Since(began).Round(time.Second))

	// Traffic through the Service: every answer is right.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: svc.dialer()}}
	seen := map[string]int{}
	for i := 0; i < 100; i++ {
		code, body, err := get(client, "http://tandem-gateway/models/echo/name")
		if err != nil || code != 200 || !models[body] {
			t.Fatalf("request %d through the Service = %d %q (%v), want a pod of echo (%v)", i, code, body, err, models)
		}
		seen[body]++
	}
	t.Logf("100 requests through the Service, answers by model pod: %v", seen)

	// Graceful delete: the pod that the keep-alive prober's connection
	// goes to, so that the prober meets the drain.
	phase := time.Now()
	keep, fresh := startProbers(t, svc, models)
	time.Sleep(time.Second)
	victim := podAt(t, tandemPods, keep.endpoint())
	t.Logf("graceful: deleting %s (%s)", victim.Name, victim.Status.PodIP)
	if err := c.CoreV1().Pods(sysNS).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ctx, c, sysNS, victim.Name)
	tandemPods = waitTandemPods(t, ctx, c, sysNS, 2, nil)
	svc.waitReady(t, 2)
	time.Sleep(time.Second)
	keep.waitProbes(t, minProbes)
	keepR, freshR := keep.stop(), fresh.stop()
	t.Logf("graceful delete (%s): success rate %s (keep-alive), %s (a connection per probe)",
		time.Since(phase).Round(100*time.Millisecond), keepR, freshR)
	if keepR.rate() != 1 || freshR.rate() != 1 {
		t.Errorf("graceful delete of a tandem pod: success rates %s and %s, want 1.0", keepR, freshR)
	}

	// SIGKILL: the tandem process of the pod the keep-alive prober uses
	// dies at once; the kubelet restarts it in the same pod.
	phase = time.Now()
	keep, fresh = startProbers(t, svc, models)
	time.Sleep(time.Second)
	victim = podAt(t, tandemPods, keep.endpoint())
	restarts := restartCount(&victim)
	t.Logf("SIGKILL: killing tandem in %s (%s)", victim.Name, victim.Status.PodIP)
	sigkill(t, victim)
	waitTandemPods(t, ctx, c, sysNS, 2, func(p *corev1.Pod) bool {
		return p.Name != victim.Name || restartCount(p) > restarts
	})
	svc.waitReady(t, 2)
	time.Sleep(time.Second)
	keep.waitProbes(t, minProbes)
	keepR, freshR = keep.stop(), fresh.stop()
	t.Logf("SIGKILL (%s): success rate %s (keep-alive), %s (a connection per probe; not asserted: "+
		"until the kubelet notices the death, every new connection to the dead pod is refused)",
		time.Since(phase).Round(100*time.Millisecond), keepR, freshR)
	if keepR.rate() < 0.99 {
		t.Errorf("SIGKILL of a tandem pod: success rate %s, want at least 0.99", keepR)
	}
	t.Logf("test ran %s", time.Since(began).Round(time.Second))
}

// readKustomization decodes the objects of every resource the
// kustomization lists, in its order.
func readKustomization(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := sigsyaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var objs []runtime.Object
	for _, res := range k.Resources {
		f, err := os.Open(filepath.Join(dir, res))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", res, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", res, err)
			}
			objs = append(objs, obj)
		}
		f.Close()
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if l := bytes.TrimSpace(line); len(l) > 0 && l[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// applyDeploy creates deploy/kubernetes' objects with the namespaces
// tandem-system and tandem renamed to sysNS and modelNS, the Secret
// tandem-admin-token, and what the local cluster needs to reach its API
// server (see forwardAPIServer).
func applyDeploy(t *testing.T, ctx context.Context, c k8s.Interface, objs []runtime.Object, sysNS, modelNS, token, apiAddr string, adapt ...func(*appsv1.Deployment)) {
	t.Helper()
	rename := func(ns string) string {
		switch ns {
		case "tandem-system":
			return sysNS
		case "tandem":
			return modelNS
		}
		t.Fatalf("deploy/kubernetes uses namespace %q: the test knows tandem-system and tandem", ns)
		return ""
	}
	// Namespaces first, then the Secret and the kubeconfig that the pods
	// mount, then the rest in the kustomization's order.
	for _, o := range objs {
		if ns, ok := o.(*corev1.Namespace); ok {
			ns.Name = rename(ns.Name)
			must(t, "namespace", create(ctx, c, ns))
		}
	}
	must(t, "secret", create(ctx, c, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tandem-admin-token", Namespace: sysNS},
		StringData: map[string]string{"token": token},
	}))
	must(t, "kubeconfig", create(ctx, c, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "tandem-test-kubeconfig", Namespace: sysNS},
		Data:       map[string]string{"config": podKubeconfig(apiAddr)},
	}))
	var deployments int
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			continue
		case *rbacv1.RoleBinding:
			for i := range o.Subjects {
				if o.Subjects[i].Namespace != "" {
					o.Subjects[i].Namespace = rename(o.Subjects[i].Namespace)
				}
			}
		case *appsv1.Deployment:
			deployments++
			adaptTandem(t, o, modelNS)
			for _, f := range adapt {
				f(o)
			}
		}
		m, err := metaOf(o)
		if err != nil {
			t.Fatal(err)
		}
		m.SetNamespace(rename(m.GetNamespace()))
		must(t, fmt.Sprintf("%T %s", o, m.GetName()), create(ctx, c, o))
	}
	if deployments != 1 {
		t.Fatalf("deploy/kubernetes has %d Deployments, want tandem's one", deployments)
	}
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", o)
	}
	return m, nil
}

// adaptTandem points tandem's container at the models' namespace and at
// the kubeconfig that reaches the API server; everything else (replicas,
// probes, preStop, grace, security context) stays as deploy/kubernetes
// has it.
func adaptTandem(t *testing.T, d *appsv1.Deployment, modelNS string) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Fatalf("deploy/kubernetes runs %v tandem replicas, the test expects 2", d.Spec.Replicas)
	}
	ps := &d.Spec.Template.Spec
	i := slices.IndexFunc(ps.Containers, func(c corev1.Container) bool { return c.Name == "tandem" })
	if i < 0 {
		t.Fatal("deploy/kubernetes' Deployment has no container named tandem")
	}
	ct := &ps.Containers[i]
	ct.Args = slices.DeleteFunc(ct.Args, func(a string) bool {
		return strings.HasPrefix(a, "--kube-namespace") || strings.HasPrefix(a, "--kubeconfig")
	})
	ct.Args = append(ct.Args, "--kube-namespace="+modelNS, "--kubeconfig=/etc/tandem/kubeconfig/config")
	ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: "test-kubeconfig", MountPath: "/etc/tandem/kubeconfig", ReadOnly: true})
	ps.Volumes = append(ps.Volumes, corev1.Volume{Name: "test-kubeconfig", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "tandem-test-kubeconfig"}},
	}})
}

// podKubeconfig reaches the API server at addr with the pod's own service
// account token, checking the server's certificate against the cluster's
// CA under the name the certificate carries.
func podKubeconfig(addr string) string {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount"
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://%s
    certificate-authority: %s/ca.crt
    tls-server-name: kubernetes.default
users:
- name: tandem
  user:
    tokenFile: %s/token
contexts:
- name: local
  context: {cluster: local, user: tandem}
current-context: local
`, addr, sa, sa)
}

func create(ctx context.Context, c k8s.Interface, o runtime.Object) error {
	opts := metav1.CreateOptions{}
	var err error
	switch o := o.(type) {
	case *corev1.Namespace:
		if _, err = c.CoreV1().Namespaces().Create(ctx, o, opts); apierrors.IsAlreadyExists(err) {
			err = nil // a test that made it first (to put something there before tandem)
		}
	case *corev1.Secret:
		_, err = c.CoreV1().Secrets(o.Namespace).Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = c.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.Service:
		_, err = c.CoreV1().Services(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
	case *appsv1.Deployment:
		_, err = c.AppsV1().Deployments(o.Namespace).Create(ctx, o, opts)
	case *appsv1.StatefulSet:
		_, err = c.AppsV1().StatefulSets(o.Namespace).Create(ctx, o, opts)
	default:
		err = fmt.Errorf("the test does not create a %T: add it", o)
	}
	return err
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("create %s: %v", what, err)
	}
}

// deleteNamespaces deletes the test's namespaces (and so everything in
// them) and waits until they are gone. Their pods go at once, without
// preStop or grace: a terminating namespace lets nothing replace them.
func deleteNamespaces(t *testing.T, c k8s.Interface, names ...string) {
	began := time.Now()
	defer func() { t.Logf("cleanup: namespaces deleted in %s", time.Since(began).Round(100*time.Millisecond)) }()
	ctx, cancel := context.WithTimeout(context.Background(), goneWithin)
	defer cancel()
	for _, n := range names {
		if err := c.CoreV1().Namespaces().Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete namespace %s: %v", n, err)
		}
	}
	now := int64(0)
	for _, n := range names {
		err := c.CoreV1().Pods(n).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &now}, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("cleanup: pods of %s: %v (the namespace's deletion removes them)", n, err)
		}
	}
	for _, n := range names {
		for {
			_, err := c.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if ctx.Err() != nil {
				t.Errorf("cleanup: namespace %s still there after %s", n, goneWithin)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func nodeAddress(t *testing.T, c k8s.Interface) string {
	t.Helper()
	nodes, err := c.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				return a.Address
			}
		}
	}
	t.Fatal("no node has an internal IP")
	return ""
}

// forwardAPIServer listens on the node's address and forwards every
// connection to the API server (TLS passes through). It stops when the
// test ends; it returns its address.
func forwardAPIServer(t *testing.T, nodeIP, apiURL string) string {
	t.Helper()
	target := strings.TrimPrefix(apiURL, "https://")
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		t.Fatalf("forwarder on the node's address: %v", err)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	track := func(cs ...net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		for _, c := range cs {
			conns[c] = true
		}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			if !track(in, out) {
				in.Close()
				out.Close()
				return
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func randomToken(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitTandemPods waits until exactly n tandem pods exist, all ready (and
// all satisfying ok when given), and returns them.
func waitTandemPods(t *testing.T, ctx context.Context, c k8s.Interface, ns string, n int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=tandem"})
		if err != nil {
			t.Fatal(err)
		}
		good := 0
		for i := range list.Items {
			if p := &list.Items[i]; ready(p) && (ok == nil || ok(p)) {
				good++
			}
		}
		if good == n && len(list.Items) == n {
			return list.Items
		}
		if time.Now().After(deadline) {
			dumpPods(t, c, ns, list.Items)
			t.Fatalf("%d of %d tandem pods ready after %s", good, n, readyWithin)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dumpPods logs the pods' states and the tail of their logs.
func dumpPods(t *testing.T, c k8s.Interface, ns string, pods []corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		t.Logf("pod %s: phase %s, conditions %+v, containers %+v", p.Name, p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
		tail := int64(40)
		b, err := c.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(context.Background())
		t.Logf("logs of %s (%v):\n%s", p.Name, err, b)
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name+" "+p.Status.PodIP)
	}
	return out
}

// waitModelPods waits for n ready pods of deployment name and returns
// their names (what podserver answers on /name).
func waitModelPods(t *testing.T, ctx context.Context, c k8s.Interface, ns, name string, n int) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "tandem.deployment=" + name})
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for i := range list.Items {
			if ready(&list.Items[i]) {
				names[list.Items[i].Name] = true
			}
		}
		if len(names) == n {
			return names
		}
		if time.Now().After(deadline) {
			dumpPods(t, c, ns, list.Items)
			t.Fatalf("%d of %d pods of %s ready after %s", len(names), n, name, readyWithin)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitGone(t *testing.T, ctx context.Context, c k8s.Interface, ns, pod string) {
	t.Helper()
	deadline := time.Now().Add(goneWithin)
	for {
		_, err := c.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there after %s (%v)", pod, goneWithin, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAnswer polls url until it answers 200 with a name in want.
func waitAnswer(t *testing.T, url string, want map[string]bool) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(readyWithin)
	for {
		code, body, err := get(client, url)
		if err == nil && code == 200 && want[body] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q (%v) after %s, want a pod of %v", url, code, body, err, readyWithin, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func call(t *testing.T, client *http.Client, method, url, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func podAt(t *testing.T, pods []corev1.Pod, endpoint string) corev1.Pod {
	t.Helper()
	host, _, _ := net.SplitHostPort(endpoint)
	for _, p := range pods {
		if p.Status.PodIP == host {
			return p
		}
	}
	t.Fatalf("no tandem pod at %q (pods %v)", endpoint, podNames(pods))
	return corev1.Pod{}
}

func restartCount(p *corev1.Pod) int32 {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "tandem" {
			return s.RestartCount
		}
	}
	return 0
}

// sigkill kills the pod's tandem process with SIGKILL through the node's
// containerd (hack/local-cluster.sh's, beside the kubeconfig): no SIGTERM,
// no preStop, no drain.
func sigkill(t *testing.T, p corev1.Pod) {
	t.Helper()
	var id string
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "tandem" {
			id = strings.TrimPrefix(s.ContainerID, "containerd://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s: no containerd container id in %+v", p.Name, p.Status.ContainerStatuses)
	}
	sock := filepath.Join(filepath.Dir(kubeconfig), "containerd", "containerd.sock")
	out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks kill -s SIGKILL %s: %v\n%s", id, err, out)
	}
}

// serviceProxy stands in for kube-proxy, which the local cluster does not
// run: it follows the Service's EndpointSlices and balances each new
// connection across the ready endpoints, round-robin (kube-proxy's IPVS
// mode), using a new endpoint at once and forgetting a gone one proxyLag
// late. Like kube-proxy it never retries: a connection to a dead pod fails.
type serviceProxy struct {
	mu  sync.Mutex
	eps []string
	seq uint64 // changes seen
}

func followService(t *testing.T, ctx context.Context, c k8s.Interface, ns, service, port string) *serviceProxy {
	t.Helper()
	p := &serviceProxy{}
	ctx, cancel := context.WithCancel(ctx)
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + service }))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	update := func() {
		var eps []string
		for _, o := range inf.GetStore().List() {
			s := o.(*discoveryv1.EndpointSlice)
			var num int32
			for _, sp := range s.Ports {
				if sp.Name != nil && *sp.Name == port && sp.Port != nil {
					num = *sp.Port
				}
			}
			for _, e := range s.Endpoints {
				if num == 0 || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
					continue
				}
				for _, a := range e.Addresses {
					eps = append(eps, net.JoinHostPort(a, fmt.Sprint(num)))
				}
			}
		}
		slices.Sort(eps)
		eps = slices.Compact(eps)
		p.mu.Lock()
		p.seq++
		seq := p.seq
		union := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(p.eps), eps...))))
		p.eps = union // additions now
		p.mu.Unlock()
		time.AfterFunc(proxyLag, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if seq == p.seq { // else a later change applies its own set
				p.eps = eps
			}
		})
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	})
	f.Start(ctx.Done())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("EndpointSlice informer never synced")
	}
	p.waitReady(t, 2)
	return p
}

// waitReady waits until the proxy balances across n endpoints.
func (p *serviceProxy) waitReady(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for {
		p.mu.Lock()
		got := slices.Clone(p.eps)
		p.mu.Unlock()
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Service has endpoints %v after %s, want %d", got, readyWithin, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialer returns a dial function for one client: it ignores the address
// asked for and sends every connection to the Service. Each client has its
// own round-robin turn, so that one client's connections alternate between
// the endpoints whatever the others do: a kept-alive client meets a dead
// pod at most once in a row (with one turn for all, as IPVS has, or random
// picks, as iptables mode makes, k times with a chance of 2^-k, and the
// SIGKILL threshold would fail a run in about 60).
func (p *serviceProxy) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	var next int
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		p.mu.Lock()
		if len(p.eps) == 0 {
			p.mu.Unlock()
			return nil, errors.New("the Service has no ready endpoint")
		}
		ep := p.eps[next%len(p.eps)]
		next++
		p.mu.Unlock()
		return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", ep)
	}
}

// prober sends GET /models/echo/name through the Service every probeEvery
// and counts the answers that are 200 with one of the model's pod names.
type prober struct {
	stopc chan struct{}
	done  chan struct{}
	last  atomic.Value // endpoint of its newest connection
	sent  atomic.Int64
	res   result
}

type result struct {
	total, ok   int
	errs        []string // the first few failures
	first, last time.Time
}

func (r result) rate() float64 {
	if r.total == 0 {
		return 0
	}
	return float64(r.ok) / float64(r.total)
}

func (r result) String() string {
	s := fmt.Sprintf("%.4f (%d of %d)", r.rate(), r.ok, r.total)
	if len(r.errs) > 0 {
		s += fmt.Sprintf(", failures over %s, the first: %q", r.last.Sub(r.first).Round(time.Millisecond), r.errs)
	}
	return s
}

// startProbers starts two probers: one whose connections are kept alive,
// as most HTTP clients do (kube-proxy balances connections, not
// requests), and one that opens a connection per probe, so that every
// probe is balanced afresh.
func startProbers(t *testing.T, svc *serviceProxy, models map[string]bool) (keep, fresh *prober) {
	return startProber(t, svc, models, false), startProber(t, svc, models, true)
}

func startProber(t *testing.T, svc *serviceProxy, models map[string]bool, fresh bool) *prober {
	p := &prober{stopc: make(chan struct{}), done: make(chan struct{})}
	p.last.Store("")
	dial := svc.dialer()
	tr := &http.Transport{DisableKeepAlives: fresh, MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				p.last.Store(c.RemoteAddr().String())
			}
			return c, err
		}}
	client := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	go func() {
		defer close(p.done)
		defer tr.CloseIdleConnections()
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-tick.C:
			}
			code, body, err := get(client, "http://tandem-gateway/models/echo/name")
			p.sent.Add(1)
			p.res.total++
			if err == nil && code == 200 && models[body] {
				p.res.ok++
				continue
			}
			if p.res.first.IsZero() {
				p.res.first = time.Now()
			}
			p.res.last = time.Now()
			if len(p.res.errs) < 5 {
				p.res.errs = append(p.res.errs, fmt.Sprintf("%s: %d %.80q %v", time.Now().Format("15:04:05.000"), code, body, err))
			}
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *prober) endpoint() string { return p.last.Load().(string) }

// waitProbes waits until the prober has sent at least n probes.
func (p *prober) waitProbes(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for p.sent.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the prober sent %d probes in %s, want %d", p.sent.Load(), readyWithin, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the prober (once) and returns what it counted.
func (p *prober) stop() result {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	<-p.done
	return p.res
}
