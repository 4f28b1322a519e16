package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"k8s.io/apimachinery/pkg/types"

	"tandem/internal/backend"
)

const byDeployment = "deployment"

// podWatcher follows tandem's pods in one namespace with a single informer
// and tells each Watch of its deployment's changes. The informer owns the
// pod cache; subs is guarded by mu; each Watch goroutine owns what it last
// sent.
type podWatcher struct {
	inf cache.SharedIndexInformer
	log *slog.Logger
	// hostAddr replaces a host-network pod's IP (see Config.HostNetwork).
	hostAddr string

	ctx context.Context

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	// probing and probed hold the pods tandem probes itself (probe.go),
	// by UID: probed ones answered before the kubelet said Ready. wasReady
	// holds those the kubelet has called Ready since this process saw
	// them: tandem no longer judges them.
	probing  map[types.UID]bool
	probed   map[types.UID]bool
	wasReady map[types.UID]bool
	done     chan struct{}
}

func newPodWatcher(ctx context.Context, client k8s.Interface, namespace string, hostNetwork bool, log *slog.Logger) *podWatcher {
	selector := backend.LabelManaged + "=true"
	pods := client.CoreV1().Pods(namespace)
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return pods.List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{
		byDeployment: func(obj any) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok {
				return []string{p.Labels[backend.LabelDeployment]}, nil
			}
			return nil, nil
		},
	})
	// The cache keeps every pod; managed fields are most of a pod's size.
	inf.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			p.ManagedFields = nil
		}
		return obj, nil
	})
	w := &podWatcher{inf: inf, log: log, ctx: ctx, subs: map[string]map[chan struct{}]struct{}{},
		probing: map[types.UID]bool{}, probed: map[types.UID]bool{}, wasReady: map[types.UID]bool{}, done: make(chan struct{})}
	if hostNetwork {
		// Host-network pods may listen on the node's loopback only, and
		// tandem runs on that node (single-node test clusters).
		w.hostAddr = "127.0.0.1"
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.changed,
		UpdateFunc: func(_, obj any) { w.changed(obj) },
		DeleteFunc: w.deleted,
	})
	return w
}

// run runs the informer until ctx is done.
func (w *podWatcher) run(ctx context.Context) {
	defer close(w.done)
	w.inf.Run(ctx.Done())
}

// podOf returns the pod an informer handler was given (unwrapping a
// deletion whose final state the informer missed), or nil.
func podOf(obj any) *corev1.Pod {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, _ := obj.(*corev1.Pod)
	return p
}

func (w *podWatcher) changed(obj any) {
	p := podOf(obj)
	if p == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.earlyProbe(p)
	w.notifyLocked(p.Labels[backend.LabelDeployment])
}

// deleted forgets a pod that is gone (its last state may not say it was
// being deleted) and wakes its deployment's Watch goroutines.
func (w *podWatcher) deleted(obj any) {
	p := podOf(obj)
	if p == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.probed, p.UID)
	delete(w.wasReady, p.UID)
	w.notifyLocked(p.Labels[backend.LabelDeployment])
}

// notifyLocked wakes the deployment's Watch goroutines; w.mu is held.
func (w *podWatcher) notifyLocked(deployment string) {
	for c := range w.subs[deployment] {
		select {
		case c <- struct{}{}:
		default: // a wake-up is pending already: it will see this change too.
		}
	}
}

func (w *podWatcher) subscribe(deployment string) (chan struct{}, func()) {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs[deployment] == nil {
		w.subs[deployment] = map[chan struct{}]struct{}{}
	}
	w.subs[deployment][c] = struct{}{}
	return c, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs[deployment], c)
		if len(w.subs[deployment]) == 0 {
			delete(w.subs, deployment)
		}
	}
}

// ready returns the deployment's ready, not terminating pods from the
// informer's cache, sorted by name.
func (w *podWatcher) ready(deployment string) []backend.Instance {
	objs, _ := w.inf.GetIndexer().ByIndex(byDeployment, deployment)
	out := []backend.Instance{}
	for _, obj := range objs {
		p := obj.(*corev1.Pod)
		w.mu.Lock()
		probed := w.probed[p.UID]
		w.mu.Unlock()
		if inst, ok := readyInstance(p, w.hostAddr, probed); ok {
			out = append(out, inst)
		}
	}
	slices.SortFunc(out, func(a, b backend.Instance) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// readyInstance reports a pod as an instance when it is ready to serve:
// Ready (or probed by tandem), not being deleted, and with an address. A
// host-network pod is reported at hostAddr when that is set.
func readyInstance(p *corev1.Pod, hostAddr string, probed bool) (backend.Instance, bool) {
	if p.DeletionTimestamp != nil || !(probed || podReady(p)) {
		return backend.Instance{}, false
	}
	port := podPort(p)
	ip := p.Status.PodIP
	if p.Spec.HostNetwork && hostAddr != "" {
		ip = hostAddr
	}
	if port == 0 || ip == "" {
		return backend.Instance{}, false
	}
	var started time.Time
	if p.Status.StartTime != nil {
		started = p.Status.StartTime.Time
	}
	return backend.Instance{
		ID:         p.Name,
		Deployment: p.Labels[backend.LabelDeployment],
		Revision:   p.Labels[backend.LabelRevision],
		Addr:       net.JoinHostPort(ip, strconv.Itoa(port)),
		StartedAt:  started,
	}, true
}

func podPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == PortName {
				return int(cp.ContainerPort)
			}
		}
	}
	return 0
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Watch sends the deployment's ready endpoints each time they change, the
// current set first (once the pod cache has synced), until ctx is done;
// then it closes the channel. A slow reader gets the latest set, not every
// step. It reads the informer's cache only: no API call per change.
func (b *Backend) Watch(ctx context.Context, deployment string) (<-chan []backend.Instance, error) {
	select {
	case <-b.pods.done:
		return nil, fmt.Errorf("kubernetes: watch %s: backend closed", deployment)
	default:
	}
	wake, unsubscribe := b.pods.subscribe(deployment)
	out := make(chan []backend.Instance, 1)
	go func() {
		defer close(out)
		defer unsubscribe()
		stop := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
			case <-b.pods.done:
			}
			close(stop)
		}()
		if !cache.WaitForCacheSync(stop, b.pods.inf.HasSynced) {
			return
		}
		var last []backend.Instance
		for first := true; ; first = false {
			cur := b.pods.ready(deployment)
			if first || !sameInstances(cur, last) {
				select {
				case out <- cur:
				case <-stop:
					return
				}
				last = cur
			}
			select {
			case <-wake:
			case <-stop:
				return
			}
		}
	}()
	return out, nil
}

func sameInstances(a, b []backend.Instance) bool {
	return slices.EqualFunc(a, b, func(x, y backend.Instance) bool {
		return x.ID == y.ID && x.Addr == y.Addr && x.Revision == y.Revision
	})
}
