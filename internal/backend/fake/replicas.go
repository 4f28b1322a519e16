package fake

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"tandem/internal/backend"
)

var (
	_ backend.ReplicaBackend = (*Replicas)(nil)
	_ backend.Leader         = (*Replicas)(nil)
	_ backend.Catalog        = (*Replicas)(nil)
)

// Replicas is a hand-written replica backend: Scale starts or stops
// in-process HTTP servers serving Handler, and Watch reports them.
type Replicas struct {
	Handler http.Handler
	// Leading is what IsLeader answers.
	Leading bool

	mu       sync.Mutex
	replicas map[string]int
	servers  map[string][]*replica
	watchers map[string][]chan []backend.Instance
	annots   map[string]map[string]string
	calls    []string
	seq      int
}

type replica struct {
	info backend.Instance
	srv  *http.Server
}

// NewReplicas returns a leading replica backend serving h.
func NewReplicas(h http.Handler) *Replicas {
	return &Replicas{Handler: h, Leading: true, replicas: map[string]int{},
		servers: map[string][]*replica{}, watchers: map[string][]chan []backend.Instance{},
		annots: map[string]map[string]string{}}
}

// Name implements backend.ReplicaBackend.
func (r *Replicas) Name() string { return "kubernetes" }

// IsLeader implements backend.Leader.
func (r *Replicas) IsLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Leading
}

// SetLeading changes what IsLeader answers.
func (r *Replicas) SetLeading(v bool) {
	r.mu.Lock()
	r.Leading = v
	r.mu.Unlock()
}

// Calls returns "apply NAME" and "scale NAME N" calls so far.
func (r *Replicas) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// Apply implements backend.ReplicaBackend.
func (r *Replicas) Apply(ctx context.Context, spec backend.Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "apply "+spec.Deployment)
	if _, ok := r.replicas[spec.Deployment]; !ok {
		r.replicas[spec.Deployment] = 0
	}
	r.annots[spec.Deployment] = spec.Annotations
	return nil
}

// Annotation implements backend.Catalog.
func (r *Replicas) Annotation(ctx context.Context, key string) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for name := range r.replicas {
		out[name] = r.annots[name][key]
	}
	return out, nil
}

// Scale implements backend.ReplicaBackend.
func (r *Replicas) Scale(ctx context.Context, name string, n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("scale %s %d", name, n))
	if _, ok := r.replicas[name]; !ok {
		return fmt.Errorf("deployment %s has no objects", name)
	}
	r.replicas[name] = n
	for len(r.servers[name]) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		r.seq++
		rp := &replica{info: backend.Instance{ID: fmt.Sprintf("%s-pod-%d", name, r.seq), Deployment: name,
			Addr: ln.Addr().String(), StartedAt: time.Now()}, srv: &http.Server{Handler: r.Handler}}
		go rp.srv.Serve(ln)
		r.servers[name] = append(r.servers[name], rp)
	}
	for len(r.servers[name]) > n {
		last := r.servers[name][len(r.servers[name])-1]
		last.srv.Close()
		r.servers[name] = r.servers[name][:len(r.servers[name])-1]
	}
	r.notify(name)
	return nil
}

// notify sends the ready set to watchers; r.mu must be held.
func (r *Replicas) notify(name string) {
	set := make([]backend.Instance, 0, len(r.servers[name]))
	for _, rp := range r.servers[name] {
		set = append(set, rp.info)
	}
	for _, ch := range r.watchers[name] {
		select {
		case ch <- set:
		default: // watcher is behind; it will get the next one
		}
	}
}

// Replicas implements backend.ReplicaBackend.
func (r *Replicas) Replicas(ctx context.Context, name string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.replicas[name]
	if !ok {
		return -1, nil
	}
	return n, nil
}

// Watch implements backend.ReplicaBackend.
func (r *Replicas) Watch(ctx context.Context, name string) (<-chan []backend.Instance, error) {
	ch := make(chan []backend.Instance, 16)
	r.mu.Lock()
	r.watchers[name] = append(r.watchers[name], ch)
	r.notify(name)
	r.mu.Unlock()
	return ch, nil
}

// Delete implements backend.ReplicaBackend.
func (r *Replicas) Delete(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "delete "+name)
	for _, rp := range r.servers[name] {
		rp.srv.Close()
	}
	delete(r.servers, name)
	delete(r.replicas, name)
	delete(r.annots, name)
	return nil
}

// Close implements backend.ReplicaBackend.
func (r *Replicas) Close() error { return nil }
