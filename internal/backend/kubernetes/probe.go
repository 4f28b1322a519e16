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

// Probing a starting pod ourselves, as Knative's activator probes pods,
// saves the kubelet's readiness period: the kubelet runs a pod's readiness
// probe once a second (runtime.health, PeriodSeconds 1), so a program that
// is not listening yet at the first probe is reported Ready up to a second
// after it is. tandem probes the same path (or port) at the address it
// routes to, as soon as it knows that address:
//   - a host-network pod reached at hostAddr (Config.HostNetwork), as soon
//     as it is scheduled: the kubelet notices a started container only at
//     its next relist (once a second), and only then probes it;
//   - any other pod as soon as its status has an IP (the kubelet reports
//     the IP with the first status after the sandbox is up, which follows
//     its relist too: tandem cannot learn a pod-network address sooner).
//
// A pod that answers joins the ready set; one that stops answering leaves
// it at once; tandem keeps probing it until the kubelet says Ready, then
// the kubelet's word counts for good (a pod it later calls not ready is
// not probed again). A pod that is terminating, gone, or whose container
// ended or restarted is the kubelet's again at once.
const (
	probeFirst = 10 * time.Millisecond
	probeMax   = 200 * time.Millisecond
)

var probeClient = &http.Client{
	Timeout:   time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// earlyProbe starts or ends tandem's own probing of a pod as it changes;
// w.mu is held.
func (w *podWatcher) earlyProbe(p *corev1.Pod) {
	uid := p.UID
	if podReady(p) {
		w.wasReady[uid] = true
	}
	if !w.unjudgedLocked(p) {
		// Deleted, or the kubelet has judged: its word counts from now on.
		delete(w.probed, uid)
		return
	}
	if w.probing[uid] {
		return
	}
	addr := w.probeAddr(p)
	if addr == "" {
		return
	}
	w.probing[uid] = true
	path := ""
	if len(p.Spec.Containers) > 0 {
		if rp := p.Spec.Containers[0].ReadinessProbe; rp != nil && rp.HTTPGet != nil {
			path = rp.HTTPGet.Path
		}
	}
	go w.probe(p.Namespace+"/"+p.Name, uid, p.Labels[backend.LabelDeployment], addr, path)
}

// unjudgedLocked reports a pod tandem may judge itself: not being
// deleted, never Ready by the kubelet, and its container neither ended nor
// restarted (the kubelet's view of the pod is then newer than any answer
// tandem got); w.mu is held.
func (w *podWatcher) unjudgedLocked(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && !podReady(p) && !w.wasReady[p.UID] && !restarted(p)
}

// probeAddr is where tandem probes p, the address readyInstance reports:
// hostAddr for a scheduled host-network pod when that is set, else the
// pod's IP once it has one; "" while unknown.
func (w *podWatcher) probeAddr(p *corev1.Pod) string {
	port := podPort(p)
	ip := p.Status.PodIP
	if p.Spec.HostNetwork && w.hostAddr != "" && p.Spec.NodeName != "" {
		ip = w.hostAddr
	}
	if port == 0 || ip == "" {
		return ""
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// probe polls the pod until the kubelet judges it or it goes, and keeps
// w.probed[uid] to what the pod last answered.
func (w *podWatcher) probe(key string, uid types.UID, deployment, addr, path string) {
	defer func() {
		w.mu.Lock()
		delete(w.probing, uid)
		w.mu.Unlock()
	}()
	for wait := probeFirst; ; {
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(wait):
		}
		w.mu.Lock()
		may := w.mayJudgeLocked(key, uid)
		w.mu.Unlock()
		if !may {
			return
		}
		ok := answers(w.ctx, addr, path)
		w.mu.Lock()
		// The informer updates its cache before it calls changed: a pod
		// judged meanwhile is seen here, or changed clears what is set.
		if !w.mayJudgeLocked(key, uid) {
			w.mu.Unlock()
			return
		}
		was := w.probed[uid]
		if ok != was {
			if ok {
				w.probed[uid] = true
			} else {
				delete(w.probed, uid)
			}
			w.notifyLocked(deployment)
		}
		w.mu.Unlock()
		switch {
		case ok:
			if !was {
				w.log.Debug("pod answered before the kubelet said ready", "pod", key, "addr", addr)
			}
			wait = probeMax
		case was:
			w.log.Debug("pod stopped answering tandem's probe", "pod", key, "addr", addr)
			wait = probeFirst
		default:
			wait = min(wait*2, probeMax)
		}
	}
}

// mayJudgeLocked reports whether the informer's cache holds the pod uid
// under key and tandem may still judge it; w.mu is held.
func (w *podWatcher) mayJudgeLocked(key string, uid types.UID) bool {
	obj, ok, _ := w.inf.GetIndexer().GetByKey(key)
	if !ok {
		return false
	}
	p := obj.(*corev1.Pod)
	return p.UID == uid && w.unjudgedLocked(p)
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
