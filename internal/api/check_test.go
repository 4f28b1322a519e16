package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	k8sfake "k8s.io/client-go/kubernetes/fake"

	"tandem/internal/api"
	"tandem/internal/backend"
	"tandem/internal/backend/kubernetes"
	"tandem/internal/controller"
	"tandem/internal/metrics"
	"tandem/internal/store"
)

// A manifest field the backend cannot honour (runtime.network: host on
// the Kubernetes backend, which runs pods on the pod network) is answered
// 400 invalid_manifest naming the field and the backend.
func TestServer_deployRefusesUnhonouredField(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kb := kubernetes.NewWithClient(k8sfake.NewClientset(), kubernetes.Config{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { kb.Close() })
	c := controller.New(controller.Config{Store: st, DefaultBackend: "kubernetes", Tick: 20 * time.Millisecond,
		ReplicaBackends: map[string]backend.ReplicaBackend{"kubernetes": kb}})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown(context.Background()) })
	hs := httptest.NewServer(api.NewServer(c, metrics.New(), api.Info{}, slog.New(slog.DiscardHandler)))
	t.Cleanup(hs.Close)

	body, _ := json.Marshal(api.DeployRequest{Manifest: "name: m\nbackend: kubernetes\nruntime: {image: x, network: host}\n"})
	resp, err := http.Post(hs.URL+"/v1/deployments", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Error struct {
			Code, Message, Field string
			Details              []struct{ Field, Message string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	e := got.Error
	if resp.StatusCode != http.StatusBadRequest || e.Code != "invalid_manifest" || e.Field != "runtime.network" ||
		!strings.Contains(e.Message, "kubernetes backend") || len(e.Details) != 1 || e.Details[0].Field != "runtime.network" {
		t.Fatalf("deploy = %d %+v, want 400 invalid_manifest on runtime.network naming the kubernetes backend", resp.StatusCode, e)
	}
	if _, err := api.NewClient(hs.URL).Status(context.Background(), "m"); err == nil {
		t.Error("the refused deployment exists")
	}
}
