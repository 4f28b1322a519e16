package cost

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestMeter_Mount(t *testing.T) {
	m := NewMeter(nil, time.Now().Add(-time.Hour))
	web := mustParse(t, "name: web\nmode: serverless\nruntime: {command: [x]}\n")
	now := time.Now()
	m.Deployment(web, now.Add(-time.Minute))
	m.InstanceStarting("web", "a", now.Add(-50*time.Second))
	m.InstanceReady("web", "a", fakeBusy{now.Add(-40 * time.Second), 0.5}, now.Add(-40*time.Second))
	m.Requests("web").Add(time.Second, true)
	mux := http.NewServeMux()
	m.Mount(mux.Handle)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path     string
		wantCode int
		check    func(t *testing.T, body map[string]any)
	}{
		{"/v1/cost?since=1h", 200, func(t *testing.T, b map[string]any) {
			models := b["models"].([]any)
			if len(models) != 1 || models[0].(map[string]any)["model"] != "web" {
				t.Fatalf("models %v", models)
			}
		}},
		{"/v1/cost?since=1h&model=nope", 200, func(t *testing.T, b map[string]any) {
			if models := b["models"].([]any); len(models) != 0 {
				t.Fatalf("models %v", models)
			}
		}},
		{"/v1/cost?since=yesterday", 400, func(t *testing.T, b map[string]any) {
			if e := b["error"].(map[string]any); e["field"] != "since" || e["code"] != "invalid_query" {
				t.Fatalf("error %v", e)
			}
		}},
		{"/v1/cost/live", 200, func(t *testing.T, b map[string]any) {
			u := b["models"].(map[string]any)["web"].(map[string]any)
			if u["requests"].(float64) != 1 || u["starting"].(map[string]any)["seconds"].(float64) < 9.9 {
				t.Fatalf("live usage %v", u)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.wantCode, body)
			}
			tt.check(t, body)
		})
	}
}
