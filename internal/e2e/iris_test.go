package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"tandem/internal/testbin"
)

// The iris Flask example, deployed serverless from its own manifest,
// answers the predictions sklearn made for the committed rows.
func TestIrisFlask_ServerlessPredictsLikeSklearn(t *testing.T) {
	dir := filepath.Join(testbin.RepoRoot(t), "examples", "iris-flask")
	if _, err := os.Stat(filepath.Join(dir, "model.pkl")); err != nil {
		t.Fatalf("examples/iris-flask/model.pkl is missing: run scripts/setup.sh (it trains it): %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "testdata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var td struct {
		Instances   [][]float64 `json:"instances"`
		Predictions []int       `json:"predictions"`
	}
	if err := json.Unmarshal(raw, &td); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "")
	if out, err := s.tandem("deploy", "-f", filepath.Join(dir, "serverless.yaml")); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	body, _ := json.Marshal(map[string]any{"instances": td.Instances})
	r := s.call("POST", "/models/iris/predict", string(body))
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("first prediction: %v (cold start %q)", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	var got struct {
		Predictions []int `json:"predictions"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("answer %q: %v", r.body, err)
	}
	if !reflect.DeepEqual(got.Predictions, td.Predictions) {
		t.Fatalf("predictions %v, sklearn said %v", got.Predictions, td.Predictions)
	}
	// Through the CLI too.
	out, err := s.tandem("invoke", "iris", "predict", "--data", `{"instances": [[6.3, 3.3, 6.0, 2.5]]}`)
	if err != nil {
		t.Fatalf("invoke: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Predictions) != 1 || got.Predictions[0] != 2 {
		t.Fatalf("invoke answered %q", out)
	}
	// A bad row is the app's own 400, passed through.
	if r := s.call("POST", "/models/iris/predict", `{"instances": [[1, 2]]}`); r.code != 400 {
		t.Fatalf("bad row: %v, want the app's 400", r)
	}
	if out, err := s.tandem("logs", "iris"); err != nil || len(out) == 0 {
		t.Fatalf("logs: %v %q", err, out)
	}
}
