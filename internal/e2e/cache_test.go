package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/testbin"
)

// The test 4 with the real binary and a real ONNX model: the
// second identical v2 infer (its JSON in another key order, with
// whitespace) is answered from the response cache, with the model's
// labels, while the model stays at zero; a new revision misses.
func TestCache_ONNXHitFromZero(t *testing.T) {
	s := onnxServer(t)
	model := filepath.Join(testbin.RepoRoot(t), "models", "digits.onnx")
	manifest := func(threads int) string {
		return fmt.Sprintf("name: digits-cache\nruntime: {onnx: %q, threads: %d}\n"+
			"scaling: {idle_timeout: 300ms, stable_window: 1s, panic_window: 200ms}\ncache: {ttl: 5m, max_bytes: 1Mi}\n", model, threads)
	}
	s.deploy("", manifest(1))
	td := loadRows(t, "digits_rows.json")
	body := inferBody("input", td.Rows[:3])
	labels := func(r reply) []int64 {
		t.Helper()
		var resp struct {
			Outputs []struct {
				Name string          `json:"name"`
				Data json.RawMessage `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal([]byte(r.body), &resp); err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		for _, o := range resp.Outputs {
			if o.Name == "label" {
				var l []int64
				json.Unmarshal(o.Data, &l)
				return l
			}
		}
		t.Fatalf("no label output: %s", r.body)
		return nil
	}
	r := s.call("POST", "/v2/models/digits-cache/infer", body)
	if r.code != 200 || r.header.Get("X-Tandem-Cache") != "miss" || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("first infer: %v %v", r, r.header)
	}
	if got := labels(r); !reflect.DeepEqual(got, td.Labels[:3]) {
		t.Fatalf("labels %v, sklearn says %v", got, td.Labels[:3])
	}
	first := r.body
	s.waitFor("scaled to zero", 60*time.Second, func(st *controller.Status) bool { return len(st.Instances) == 0 }, "digits-cache")

	// The same request, written otherwise.
	var v map[string]any
	json.Unmarshal([]byte(body), &v)
	input := v["inputs"].([]any)[0].(map[string]any)
	variant := fmt.Sprintf("{\n  \"inputs\": [ {\"shape\": %s, \"data\": %s, \"name\": \"input\", \"datatype\": \"FP32\"} ],\n  \"id\": \"req-7\"\n}",
		mustJSON(input["shape"]), mustJSON(input["data"]))
	r = s.call("POST", "/v2/models/digits-cache/infer", variant)
	if r.code != 200 || r.header.Get("X-Tandem-Cache") != "hit" || r.header.Get("X-Tandem-Cold-Start") != "false" || r.body != first {
		t.Fatalf("second infer: %v %v, want the first answer from the cache", r, r.header)
	}
	if st := s.status("digits-cache"); len(st.Instances) != 0 {
		t.Fatalf("the hit woke the model: %+v", st.Instances)
	}

	// A new revision misses.
	s.deploy("", manifest(2))
	r = s.call("POST", "/v2/models/digits-cache/infer", body)
	if r.code != 200 || r.header.Get("X-Tandem-Cache") != "miss" {
		t.Fatalf("after redeploy: %v %v", r, r.header)
	}
	if got := labels(r); !reflect.DeepEqual(got, td.Labels[:3]) {
		t.Fatalf("labels %v, sklearn says %v", got, td.Labels[:3])
	}
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(text), `tandem_cache_requests_total{model="digits-cache",result="hit"} 1`) {
		t.Errorf("/metrics does not count the hit")
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
