package backendtest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"tandem/internal/backend"
)

// ReplicaHarness adapts a replica backend (a platform that runs the
// replicas, such as Kubernetes) to RunReplicas.
type ReplicaHarness struct {
	// New returns a backend; it is closed when the test ends.
	New func(t *testing.T) backend.ReplicaBackend
	// Spec returns a valid spec for the fake model server named name, its
	// objects deleted when the test ends. Its instances answer GET /health.
	Spec func(t *testing.T, b backend.ReplicaBackend, name string) backend.Spec
	// Name returns a deployment name unique to this run.
	Name func(prefix string) string
	// Within bounds every wait for the platform (a guard against hangs).
	Within time.Duration
}

// RunReplicas runs the behaviour every replica backend shares: objects
// start at zero replicas, scaling up brings ready endpoints that answer,
// re-applying keeps the count (adoption after a restart), scaling down
// removes endpoints, and delete removes the objects.
func RunReplicas(t *testing.T, h ReplicaHarness) {
	t.Run("lifecycle", func(t *testing.T) {
		ctx := context.Background()
		b := h.New(t)
		name := h.Name("suite")
		spec := h.Spec(t, b, name)
		if n, err := b.Replicas(ctx, name); err != nil || n != -1 {
			t.Fatalf("Replicas before Apply = %d, %v; want -1", n, err)
		}
		if err := b.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Replicas(ctx, name); err != nil || n != 0 {
			t.Fatalf("Replicas after Apply = %d, %v; want 0 (new objects start at zero)", n, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := b.Watch(wctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Scale(ctx, name, 2); err != nil {
			t.Fatal(err)
		}
		set := waitFor(t, w, h.Within, "2 ready endpoints", func(s []backend.Instance) bool { return len(s) == 2 })
		if set[0].Addr == set[1].Addr || set[0].ID == set[1].ID {
			t.Fatalf("two replicas share an address or id: %+v", set)
		}
		for _, in := range set {
			if code := health(t, in.Addr); code != 200 {
				t.Fatalf("replica %s at %s: GET /health = %d", in.ID, in.Addr, code)
			}
		}
		// A restarted tandem re-applies the same spec: nothing is redone.
		if err := b.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if n, _ := b.Replicas(ctx, name); n != 2 {
			t.Fatalf("Replicas after re-Apply = %d, want 2 (kept)", n)
		}
		if err := b.Scale(ctx, name, 0); err != nil {
			t.Fatal(err)
		}
		waitFor(t, w, h.Within, "no endpoints after scaling to 0", func(s []backend.Instance) bool { return len(s) == 0 })
		if err := b.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Replicas(ctx, name); err != nil || n != -1 {
			t.Fatalf("Replicas after Delete = %d, %v; want -1", n, err)
		}
	})
}

func waitFor(t *testing.T, w <-chan []backend.Instance, within time.Duration, what string, ok func([]backend.Instance) bool) []backend.Instance {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s, open := <-w:
			if !open {
				t.Fatalf("watch ended waiting for %s", what)
			}
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("%s: not seen within %s", what, within)
		}
	}
}

func health(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		resp, err := c.Get("http://" + addr + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		if i == 20 {
			t.Fatalf("GET http://%s/health: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
