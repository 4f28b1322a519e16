// Package fake is a hand-written backend for unit tests: each instance is
// an in-process HTTP server on a loopback port serving Handler. It records
// calls and can crash instances on demand.
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

var _ backend.Backend = (*Backend)(nil)

// Backend is safe for concurrent use.
type Backend struct {
	// Handler serves every instance's requests.
	Handler http.Handler
	// StartErr, when set, makes Start fail with it.
	StartErr error

	mu    sync.Mutex
	insts map[string]*instance
	calls []string
}

type instance struct {
	info backend.Instance
	srv  *http.Server
	exit chan backend.Exit
	once sync.Once
}

// New returns a backend serving h.
func New(h http.Handler) *Backend { return &Backend{Handler: h, insts: map[string]*instance{}} }

// Name implements backend.Backend.
func (b *Backend) Name() string { return "process" }

// Calls returns the calls made so far, such as "start m-1" or "stop m-1".
func (b *Backend) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	b.mu.Lock()
	b.calls = append(b.calls, "start "+spec.ID)
	err := b.StartErr
	b.mu.Unlock()
	if err != nil {
		return backend.Instance{}, fmt.Errorf("%w: %v", backend.ErrStartFailed, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return backend.Instance{}, err
	}
	in := &instance{
		info: backend.Instance{ID: spec.ID, Deployment: spec.Deployment, Revision: spec.Revision,
			Addr: ln.Addr().String(), StartedAt: time.Now(), Phases: []backend.Phase{{Name: "exec", Duration: time.Microsecond}}},
		srv:  &http.Server{Handler: b.Handler},
		exit: make(chan backend.Exit, 1),
	}
	go in.srv.Serve(ln)
	b.mu.Lock()
	b.insts[spec.ID] = in
	b.mu.Unlock()
	return in.info, nil
}

func (b *Backend) get(id string) *instance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.insts[id]
}

// Wait implements backend.Backend.
func (b *Backend) Wait(id string) (<-chan backend.Exit, error) {
	in := b.get(id)
	if in == nil {
		return nil, backend.ErrNotFound
	}
	return in.exit, nil
}

func (b *Backend) end(in *instance, e backend.Exit) {
	in.once.Do(func() {
		in.srv.Close()
		e.At = time.Now()
		in.exit <- e
		close(in.exit)
		b.mu.Lock()
		delete(b.insts, in.info.ID)
		b.mu.Unlock()
	})
}

// Stop implements backend.Backend.
func (b *Backend) Stop(ctx context.Context, id string, grace time.Duration) error {
	b.mu.Lock()
	b.calls = append(b.calls, "stop "+id)
	b.mu.Unlock()
	if in := b.get(id); in != nil {
		b.end(in, backend.Exit{Code: -1, Signal: "terminated"})
	}
	return nil
}

// Crash ends an instance as if it had been killed.
func (b *Backend) Crash(id string) {
	if in := b.get(id); in != nil {
		b.end(in, backend.Exit{Code: -1, Signal: "killed"})
	}
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context) ([]backend.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []backend.Instance
	for _, in := range b.insts {
		out = append(out, in.info)
	}
	return out, nil
}

// Recover implements backend.Backend: an in-process fake has nothing to recover.
func (b *Backend) Recover(ctx context.Context) ([]backend.Instance, error) { return nil, nil }

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }
