package kubernetes

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tandem/internal/backend"
)

// A pod on the pod network is probed by tandem at its IP as soon as its
// status has one: it is in the set while it answers, before the kubelet
// says Ready, and leaves at once when it stops answering, is terminating
// or is deleted. Once the kubelet has said Ready, its word counts.
func TestBackend_WatchProbesPodNetworkPods(t *testing.T) {
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	addr := "127.0.0.1:" + strconv.Itoa(port)

	ctx := t.Context()
	c, opened := fakeCluster(t)
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()
	w, err := b.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	<-w
	<-opened
	pods := c.CoreV1().Pods(DefaultNamespace)
	mk := func(name string) *corev1.Pod {
		p := pod(name, "web", "127.0.0.1", false)
		p.Spec.Containers[0].Ports[0].ContainerPort = int32(port)
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health"}}}
		return p
	}
	next := func(what string) []backend.Instance {
		t.Helper()
		select {
		case set := <-w:
			return set
		case <-time.After(10 * time.Second):
			t.Fatalf("no set %s", what)
			return nil
		}
	}
	in := func(set []backend.Instance, name string) bool {
		return len(set) == 1 && set[0].ID == name && set[0].Addr == addr
	}

	// Scheduled, no IP yet: nothing to probe. Then an IP, not answering.
	p := mk("web-a")
	p.Status.PodIP = ""
	pods.Create(ctx, p, metav1.CreateOptions{})
	p = mk("web-a")
	pods.Update(ctx, p, metav1.UpdateOptions{})
	select {
	case set := <-w:
		t.Fatalf("reported %v while the pod answers 503", set)
	case <-time.After(300 * time.Millisecond):
	}
	healthy.Store(true)
	if set := next("once the pod answers"); !in(set, "web-a") {
		t.Fatalf("set %v, want web-a at %s", set, addr)
	}
	healthy.Store(false)
	if set := next("once the pod stops answering"); len(set) != 0 {
		t.Fatalf("set %v after the pod failed its probe, want empty", set)
	}
	healthy.Store(true)
	if set := next("once the pod answers again"); !in(set, "web-a") {
		t.Fatalf("set %v, want web-a back", set)
	}
	term := mk("web-a")
	term.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	pods.Update(ctx, term, metav1.UpdateOptions{})
	if set := next("once the pod is terminating"); len(set) != 0 {
		t.Fatalf("set %v with web-a terminating, want empty", set)
	}
	pods.Delete(ctx, "web-a", metav1.DeleteOptions{})

	// Deleted outright while tandem's word counts.
	pods.Create(ctx, mk("web-b"), metav1.CreateOptions{})
	if set := next("once web-b answers"); !in(set, "web-b") {
		t.Fatalf("set %v, want web-b", set)
	}
	pods.Delete(ctx, "web-b", metav1.DeleteOptions{})
	if set := next("once web-b is deleted"); len(set) != 0 {
		t.Fatalf("set %v after web-b was deleted, want empty", set)
	}

	// Ready by the kubelet: its word counts, not tandem's probe.
	pods.Create(ctx, mk("web-c"), metav1.CreateOptions{})
	if set := next("once web-c answers"); !in(set, "web-c") {
		t.Fatalf("set %v, want web-c", set)
	}
	ready := mk("web-c")
	ready.Status.Conditions[0].Status = corev1.ConditionTrue
	pods.Update(ctx, ready, metav1.UpdateOptions{})
	healthy.Store(false)
	select {
	case set := <-w:
		t.Fatalf("set %v changed while the kubelet says web-c is Ready", set)
	case <-time.After(3 * probeMax):
	}
	// Not ready by the kubelet after Ready: out, and tandem does not
	// judge it again although it answers.
	healthy.Store(true)
	pods.Update(ctx, mk("web-c"), metav1.UpdateOptions{})
	if set := next("once the kubelet says web-c is not ready"); len(set) != 0 {
		t.Fatalf("set %v, want empty", set)
	}
	select {
	case set := <-w:
		t.Fatalf("set %v: tandem judged web-c again after the kubelet had", set)
	case <-time.After(3 * probeMax):
	}
	b.pods.mu.Lock()
	probing, probed := len(b.pods.probing), len(b.pods.probed)
	b.pods.mu.Unlock()
	if probed != 0 {
		t.Errorf("%d pods still judged by tandem, want none", probed)
	}
	if probing != 0 {
		t.Errorf("%d pods still probed, want none once the kubelet has judged", probing)
	}
}
