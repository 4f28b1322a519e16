package kubernetes

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"tandem/internal/backend"
)

// Probing a starting host-network pod ourselves, as Knative's activator
// probes pods, saves most of a second on a cold start: the kubelet notices
// a started container only at its next relist (once a second) and only
// then runs its readiness probe. A host-network pod's address is known as
// soon as it is scheduled, so tandem can find it answering first. Once the
// kubelet says Ready, its word counts again.
const (
	probeFirst = 10 * time.Millisecond
	probeMax   = 500 * time.Millisecond
)

var probeClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// earlyProbe starts or ends tandem's own probing of a host-network pod as
// it changes; w.mu is held.
func (w *podWatcher) earlyProbe(p *corev1.Pod) {
	uid := p.UID
	if p.DeletionTimestamp != nil || podReady(p) || restarted(p) {
		// Deleted, or the kubelet has judged: its word counts from now on.
		delete(w.probed, uid)
		return
	}
	if p.Spec.NodeName == "" || w.probing[uid] || w.probed[uid] {
		return
	}
	port := podPort(p)
	if port == 0 {
		return
	}
	w.probing[uid] = true
	addr := net.JoinHostPort(w.hostAddr, strconv.Itoa(port))
	path := ""
	if len(p.Spec.Containers) > 0 {
		if rp := p.Spec.Containers[0].ReadinessProbe; rp != nil && rp.HTTPGet != nil {
			path = rp.HTTPGet.Path
		}
	}
	go w.probe(p.Namespace, p.Name, uid, p.Labels[backend.LabelDeployment], addr, path)
}

// probe polls the pod until it answers, the kubelet decides, or the pod goes.
func (w *podWatcher) probe(ns, name string, uid types.UID, deployment, addr, path string) {
	defer func() {
		w.mu.Lock()
		delete(w.probing, uid)
		w.mu.Unlock()
	}()
	key := ns + "/" + name
	for wait := probeFirst; ; wait = min(wait*2, probeMax) {
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(wait):
		}
		obj, ok, _ := w.inf.GetIndexer().GetByKey(key)
		if !ok {
			return
		}
		p := obj.(*corev1.Pod)
		if p.UID != uid || p.DeletionTimestamp != nil || podReady(p) || restarted(p) {
			return
		}
		if !answers(w.ctx, addr, path) {
			continue
		}
		w.mu.Lock()
		w.probed[uid] = true
		w.notifyLocked(deployment)
		w.mu.Unlock()
		w.log.Debug("pod answered before the kubelet said ready", "pod", name, "addr", addr)
		return
	}
}

func answers(ctx context.Context, addr, path string) bool {
	if path == "" {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	// The kubelet's rule: 2xx and 3xx are success.
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// restarted reports a container that ended or restarted: the kubelet's
// view of the pod is then newer than any answer tandem got.
func restarted(p *corev1.Pod) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.RestartCount > 0 || cs.State.Terminated != nil {
			return true
		}
	}
	return false
}
