package docker

import (
	"context"
	"testing"

	"github.com/moby/moby/client"

	"tandem/internal/backend"
	"tandem/internal/backend/backendtest"
	"tandem/internal/manifest"
)

// TestBackend runs the behaviour suite shared with the other backends
// against the real engine, with containers of the fakemodel image on the
// host network (the engine here has no bridge).
func TestBackend(t *testing.T) {
	requireEngine(t)
	backendtest.Run(t, backendtest.Harness{
		New: func(t *testing.T, dir string) backend.Backend {
			b, err := New(Config{DataDir: dir, Logger: testLogger})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return b
		},
		Manifest: func(t *testing.T, name string, env map[string]string, memory manifest.ByteSize) *manifest.Manifest {
			m := fakeManifest(name, env)
			m.Resources.Memory = memory
			return m
		},
		SupportsMemoryLimit: memoryLimitSupported(t),
	})
}

// memoryLimitSupported asks the engine whether it can limit memory; in CI
// it must.
func memoryLimitSupported(t *testing.T) bool {
	info, err := rawClient(t).Info(context.Background(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Info.MemoryLimit && inCI() {
		t.Error("CI is set but the engine cannot limit memory")
	}
	return info.Info.MemoryLimit
}
