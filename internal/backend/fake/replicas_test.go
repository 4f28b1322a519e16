package fake_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"tandem/internal/backend"
	"tandem/internal/backend/backendtest"
	"tandem/internal/backend/fake"
)

// The hand-written replica backend behaves as the shared suite demands, so
// controller tests that use it stand for the real platforms.
func TestReplicas_Suite(t *testing.T) {
	n := 0
	backendtest.RunReplicas(t, backendtest.ReplicaHarness{
		New: func(t *testing.T) backend.ReplicaBackend {
			return fake.NewReplicas(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		},
		Spec: func(t *testing.T, b backend.ReplicaBackend, name string) backend.Spec {
			return backend.Spec{Deployment: name, Revision: "r1"}
		},
		Name:   func(p string) string { n++; return fmt.Sprintf("%s-%d", p, n) },
		Within: 5 * time.Second,
	})
}
