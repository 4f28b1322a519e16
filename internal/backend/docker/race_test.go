package docker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"tandem/internal/backend"
)

// TestBackend_StartCancelledDuringCreate checks that a start whose context
// ends while the engine creates the container leaves no container behind
// (the engine finishes an abandoned create).
func TestBackend_StartCancelledDuringCreate(t *testing.T) {
	f := newFakeEngine("img:1")
	b := newFakeBackend(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	f.onCreate = func(context.Context) { cancel() }
	_, err := b.Start(ctx, testSpec("m-1", testManifest(nil)))
	if !errors.Is(err, backend.ErrStartFailed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want a failed start for the cancelled context", err)
	}
	if c := f.byName(containerName("/data", "m-1")); c != nil {
		t.Errorf("container left in state %q after a cancelled start; calls %v", c.state, f.Calls())
	}
}

// TestBackend_CloseDuringStart checks that Close waits for a start in
// progress, and that the container it made is removed by then.
func TestBackend_CloseDuringStart(t *testing.T) {
	f := newFakeEngine("img:1")
	b := newFakeBackend(t, f)
	creating := make(chan struct{})
	f.onCreate = func(context.Context) {
		close(creating)
		// Go on only once Close has begun.
		for {
			b.mu.Lock()
			closed := b.closed
			b.mu.Unlock()
			if closed {
				return
			}
		}
	}
	errc := make(chan error, 1)
	go func() {
		_, err := b.Start(context.Background(), testSpec("m-1", testManifest(nil)))
		errc <- err
	}()
	<-creating
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.record("Close returned")
	f.mu.Unlock()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Start = %v, want ErrClosed", err)
	}
	// The container the start made is removed before Close returns.
	calls := strings.Join(f.Calls(), ", ")
	if i, j := strings.Index(calls, "remove"), strings.Index(calls, "Close returned"); i < 0 || i > j {
		t.Errorf("calls %s: want the container removed before Close returned", calls)
	}
	if c := f.byName(containerName("/data", "m-1")); c != nil {
		t.Errorf("container left in state %q", c.state)
	}
}
