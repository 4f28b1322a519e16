package incluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"

	k8s "k8s.io/client-go/kubernetes"

	"tandem/internal/testbin"
)

// Two tandem replicas in the cluster share deploy/kubernetes/jetstream.yaml's
// queue: jobs accepted by one replica, which is then killed (its pod
// deleted at once), are all run by the other ones; none is lost.
func TestInCluster_JobsSurviveAReplica(t *testing.T) {
	needCluster(t)
	began := time.Now()
	root := testbin.RepoRoot(t)
	buildAndLoad(t, root)
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
	sysNS, modelNS := "tandem-ij-system-"+suffix, "tandem-ij-"+suffix
	t.Cleanup(func() { deleteNamespaces(t, c, sysNS, modelNS) })
	fwd := forwardAPIServer(t, nodeAddress(t, c), rc.Host)
	objs := readKustomization(t, filepath.Join(root, "deploy", "kubernetes"))
	token, natsToken := randomToken(t), randomToken(t)

	// The namespaces, then the queue: jetstream.yaml as written, with an
	// emptyDir in place of the volume claim (the local cluster has no
	// provisioner, as the manifest's comment says).
	for _, o := range objs {
		if ns, ok := o.(*corev1.Namespace); ok {
			n := ns.DeepCopy()
			switch n.Name {
			case "tandem-system":
				n.Name = sysNS
			case "tandem":
				n.Name = modelNS
			}
			must(t, "namespace", create(ctx, c, n))
		}
	}
	must(t, "jetstream secret", create(ctx, c, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tandem-jetstream", Namespace: sysNS},
		StringData: map[string]string{"token": natsToken},
	}))
	for _, o := range readYAML(t, filepath.Join(root, "deploy", "kubernetes", "jetstream.yaml")) {
		m, err := metaOf(o)
		if err != nil {
			t.Fatal(err)
		}
		m.SetNamespace(sysNS)
		if ss, ok := o.(*appsv1.StatefulSet); ok {
			ss.Spec.VolumeClaimTemplates = nil
			ss.Spec.Template.Spec.Volumes = append(ss.Spec.Template.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
		must(t, fmt.Sprintf("%T %s", o, m.GetName()), create(ctx, c, o))
	}
	natsIP := waitPod(t, ctx, c, sysNS, "app.kubernetes.io/name=tandem-jetstream")
	t.Logf("jetstream ready at %s after %s", natsIP, time.Since(began).Round(time.Second))

	// tandem as deploy/kubernetes has it, plus the two flags and the token
	// volume jetstream.yaml says to add (the queue by its pod's address:
	// the local cluster resolves no Service names).
	applyDeploy(t, ctx, c, objs, sysNS, modelNS, token, fwd, func(d *appsv1.Deployment) {
		ps := &d.Spec.Template.Spec
		i := slices.IndexFunc(ps.Containers, func(c corev1.Container) bool { return c.Name == "tandem" })
		ct := &ps.Containers[i]
		ct.Args = append(ct.Args, "--jobs-nats=nats://"+natsIP+":4222", "--jobs-nats-token-file=/etc/tandem/jetstream/token")
		ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: "jetstream-token", MountPath: "/etc/tandem/jetstream", ReadOnly: true})
		mode := int32(0o440)
		ps.Volumes = append(ps.Volumes, corev1.Volume{Name: "jetstream-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "tandem-jetstream", DefaultMode: &mode, Items: []corev1.KeyToPath{{Key: "token", Path: "token"}},
		}}})
	})
	pods := waitTandemPods(t, ctx, c, sysNS, 2, nil)
	a, b := pods[0], pods[1]
	admin := &http.Client{Timeout: 30 * time.Second}
	auth := map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/yaml"}
	man := "name: echo\nmode: dedicated\nbackend: kubernetes\nruntime:\n  image: " + podserverImage +
		"\n  health: /health\nscaling: {min: 2, max: 2}\ntimeouts: {grace: 1s}\n"
	if code, body := call(t, admin, "POST", "http://"+a.Status.PodIP+":8081/v1/deployments", man, auth); code != http.StatusCreated {
		t.Fatalf("deploy = %d %q", code, body)
	}
	models := waitModelPods(t, ctx, c, modelNS, "echo", 2)
	for _, p := range pods {
		waitAnswer(t, "http://"+p.Status.PodIP+":8080/models/echo/name", models)
	}

	// 30 jobs of 3 seconds each, all accepted by replica a (both replicas
	// take them from the shared queue, at most 8 at a time each).
	const total = 30
	client := &http.Client{Timeout: 30 * time.Second}
	var ids []string
	for i := range total {
		code, body := call(t, client, "POST", "http://"+a.Status.PodIP+":8080/v1/async/echo/sleep?d=3s", fmt.Sprintf(`{"n":%d}`, i), nil)
		var acc struct{ ID string }
		if code != http.StatusAccepted || json.Unmarshal([]byte(body), &acc) != nil || acc.ID == "" {
			t.Fatalf("job %d: %d %q, want 202 with an id", i, code, body)
		}
		ids = append(ids, acc.ID)
	}
	// Once the first jobs are done, a's pod is deleted at once: the jobs
	// it holds are cut mid-attempt.
	waitJobs(t, client, a.Status.PodIP, ids, func(done int) bool { return done >= 1 }, "the first job done")
	zero := int64(0)
	t.Logf("deleting %s (%s) with no grace", a.Name, a.Status.PodIP)
	if err := c.CoreV1().Pods(sysNS).Delete(ctx, a.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	// Every job ends, read from replica b (the records are in the queue's
	// bucket, not in a's data folder).
	st := waitJobs(t, client, b.Status.PodIP, ids, func(done int) bool { return done == total }, "every job done")
	again := 0
	for id, s := range st {
		if s.Status != "succeeded" {
			t.Errorf("job %s: %s, want succeeded", id, s.Status)
		}
		if s.Attempts > 1 {
			again++
		}
	}
	// The jobs a was running when it died were run again by the others.
	if again == 0 {
		t.Errorf("no job needed a second attempt: the replica was deleted holding none, so the test proved nothing")
	}
	t.Logf("%d of %d jobs were cut on the deleted replica and run again", again, total)
	t.Logf("all %d jobs ended after %s", total, time.Since(began).Round(time.Second))
}

// readYAML decodes every object of a YAML file.
func readYAML(t *testing.T, path string) []runtime.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		if len(strings.TrimSpace(string(stripComments(doc)))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, obj)
	}
	return out
}

// waitPod waits for one ready pod matching selector and returns its IP.
func waitPod(t *testing.T, ctx context.Context, c k8s.Interface, ns, selector string) string {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	for {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			if ready(&list.Items[i]) {
				return list.Items[i].Status.PodIP
			}
		}
		if time.Now().After(deadline) {
			dumpPods(t, c, ns, list.Items)
			t.Fatalf("no ready pod %s after %s", selector, readyWithin)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// jobState is what the test reads of a job.
type jobState struct {
	Status   string
	Attempts int
}

// waitJobs polls GET /v1/jobs/{id} on a replica until enough jobs ended
// (succeeded or failed); it returns each job's status.
func waitJobs(t *testing.T, client *http.Client, ip string, ids []string, enough func(done int) bool, what string) map[string]jobState {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // past a delivery's 30 s ack wait, against a hang
	for {
		st := map[string]jobState{}
		done := 0
		for _, id := range ids {
			code, body := call(t, client, "GET", "http://"+ip+":8080/v1/jobs/"+id, "", nil)
			var j jobState
			if code == 200 && json.Unmarshal([]byte(body), &j) == nil {
				st[id] = j
				if j.Status == "succeeded" || j.Status == "failed" {
					done++
				}
			}
		}
		if enough(done) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d jobs ended after 3m: %v", what, done, len(ids), st)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
