package kubernetes

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tandem/internal/backend"
)

// On the pod network tandem probes each starting pod at its IP itself. The
// pod here answers tandem but never the kubelet (SHUN_KUBELET), so it is
// in the set by tandem's probe alone; it leaves the set when it fails that
// probe, when it is terminating (a finalizer keeps it there to look at)
// and when it is deleted outright.
func TestBackend_PodNetworkProbedByTandem(t *testing.T) {
	needCluster(t)
	loadImages(t)
	ctx := t.Context()
	b := newClusterBackend(t, Config{})
	name := uniqueName("probe")
	spec := specFor(t, b, name, podserverImage, "")
	spec.Manifest.Runtime.Env = map[string]string{"SHUN_KUBELET": "1"}
	spec.Revision = spec.Manifest.Hash()
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
	has := func(id string) func([]backend.Instance) bool {
		return func(s []backend.Instance) bool {
			return slices.ContainsFunc(s, func(i backend.Instance) bool { return i.ID == id })
		}
	}
	not := func(f func([]backend.Instance) bool) func([]backend.Instance) bool {
		return func(s []backend.Instance) bool { return !f(s) }
	}
	inst := waitSet(t, w, readyWithin, "a pod probed by tandem", func(s []backend.Instance) bool { return len(s) == 1 })[0]
	pods := clusterClient(t).CoreV1().Pods(DefaultNamespace)
	p, err := pods.Get(ctx, inst.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if podReady(p) {
		t.Fatalf("the kubelet says %s is Ready; it should never be (SHUN_KUBELET)", p.Name)
	}
	if want := p.Status.PodIP + ":8080"; inst.Addr != want {
		t.Errorf("addr %s, want the pod's IP and port %s", inst.Addr, want)
	}

	// Failing tandem's probe.
	post(t, "http://"+inst.Addr+"/sick")
	waitSet(t, w, goneWithin, "the pod out after failing its probe", not(has(inst.ID)))
	if p, err := pods.Get(ctx, inst.ID, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("pod %s: %v, deleting %v; it should be running", inst.ID, err, p.DeletionTimestamp)
	}
	post(t, "http://"+inst.Addr+"/well")
	waitSet(t, w, readyWithin, "the pod back once it answers", has(inst.ID))

	// Terminating.
	hold := func(id string, on bool) error {
		patch := `{"metadata":{"finalizers":null}}`
		if on {
			patch = `{"metadata":{"finalizers":["tandem.test/hold"]}}`
		}
		_, err := pods.Patch(context.Background(), id, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
	if err := hold(inst.ID, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hold(inst.ID, false); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("releasing %s: %v", inst.ID, err)
		}
	})
	if err := pods.Delete(ctx, inst.ID, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, goneWithin, "the terminating pod out", not(has(inst.ID)))
	if p, err := pods.Get(ctx, inst.ID, metav1.GetOptions{}); err != nil || p.DeletionTimestamp == nil {
		t.Fatalf("pod %s: %v, deleting %v; it should be terminating, held by its finalizer", inst.ID, err, p.DeletionTimestamp)
	}
	if err := hold(inst.ID, false); err != nil {
		t.Fatal(err)
	}

	// Deleted outright: the Deployment's next pod.
	set := waitSet(t, w, readyWithin, "the replacement pod", func(s []backend.Instance) bool { return len(s) == 1 && s[0].ID != inst.ID })
	if err := pods.Delete(ctx, set[0].ID, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, goneWithin, "the deleted pod out", not(has(set[0].ID)))
}

func post(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}
