package kubernetes

import (
	"context"
	"fmt"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/backendtest"
	"tandem/internal/manifest"
)

// The shared replica-backend suite, on the real cluster's pod network.
func TestBackend_ReplicaSuite(t *testing.T) {
	needCluster(t)
	loadImages(t)
	backendtest.RunReplicas(t, backendtest.ReplicaHarness{
		New: func(t *testing.T) backend.ReplicaBackend { return newClusterBackend(t, Config{}) },
		Spec: func(t *testing.T, b backend.ReplicaBackend, name string) backend.Spec {
			y := fmt.Sprintf("name: %s\nbackend: kubernetes\nruntime:\n  image: %s\n  env: {HOST: 0.0.0.0}\n  health: /health\ntimeouts: {grace: 1s}\n", name, fakemodelImage)
			m, err := manifest.Parse([]byte(y), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				b.Delete(ctx, name)
			})
			return backend.Spec{Deployment: name, Revision: m.Hash(), Manifest: m}
		},
		Name:   uniqueName,
		Within: readyWithin,
	})
}
