package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/controller"
	"tandem/internal/testbin"
)

// needDocker skips loudly without an engine, except in CI where it fails.
func needDocker(t *testing.T, images ...string) {
	t.Helper()
	if err := exec.Command("docker", "version").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: no Docker engine (scripts/docker.sh install start must run first): %v", err)
		}
		t.Skip("SKIPPED, NOT TESTED: no Docker engine here (run scripts/docker.sh install start images)")
	}
	for _, img := range images {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI: image %s missing (scripts/docker.sh images builds it)", img)
			}
			t.Skipf("SKIPPED, NOT TESTED: image %s missing (run scripts/docker.sh images)", img)
		}
	}
}

func dockerManifest(name, mode, image, scaling string, env map[string]string) string {
	m := fmt.Sprintf("name: %s\nmode: %s\nbackend: docker\nruntime:\n  image: %s\n  network: host\n  health: /health\n", name, mode, image)
	if len(env) > 0 {
		m += "  env:\n"
		for k, v := range env {
			m += fmt.Sprintf("    %s: %q\n", k, v)
		}
	}
	return m + "scaling:\n" + indent(scaling) + "timeouts:\n  startup: 60s\n  request: 30s\n  grace: 3s\n"
}

// managedContainers lists the running containers tandem labelled for a deployment.
func managedContainers(t *testing.T, deployment string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-q", "--no-trunc", "--filter", "label=tandem.managed=true",
		"--filter", "label=tandem.deployment="+deployment).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// The fake model as containers: serverless from zero, then dedicated kept
// warm, crash of tandem with SIGKILL adopted without starting anything twice.
func TestDocker_ServerlessDedicatedAndRestart(t *testing.T) {
	needDocker(t, "tandem-fakemodel:test")
	s := startServer(t, "")
	s.deploy("", dockerManifest("dfz", "serverless", "tandem-fakemodel:test", "max: 2\nidle_timeout: 1s\nstable_window: 2s\npanic_window: 500ms", nil))
	r := s.call("GET", "/models/dfz/echo", "")
	if r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "true" {
		t.Fatalf("first request: %v (cold %q)", r, r.header.Get("X-Tandem-Cold-Start"))
	}
	if r := s.call("GET", "/models/dfz/echo", ""); r.code != 200 || r.header.Get("X-Tandem-Cold-Start") != "false" {
		t.Fatalf("second request: %v", r)
	}
	s.waitFor("containers scaled to zero", 30*time.Second, func(st *controller.Status) bool { return len(st.Instances) == 0 }, "dfz")
	if c := managedContainers(t, "dfz"); len(c) != 0 {
		t.Fatalf("containers left after scale to zero: %v", c)
	}

	s.deploy("", dockerManifest("dded", "dedicated", "tandem-fakemodel:test", "min: 2\nmax: 2", nil))
	st := s.waitFor("2 ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "dded")
	before := managedContainers(t, "dded")
	if len(before) != 2 {
		t.Fatalf("containers %v, want 2", before)
	}
	s.restart(syscall.SIGKILL)
	st2 := s.waitFor("2 ready after SIGKILL", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 2 }, "dded")
	if ids(st) != ids(st2) {
		t.Fatalf("instances after restart %s, want adopted %s", ids(st2), ids(st))
	}
	after := managedContainers(t, "dded")
	slices.Sort(before)
	slices.Sort(after)
	if !slices.Equal(before, after) {
		t.Fatalf("containers after restart %v, want the same %v (no orphans, nothing started twice)", after, before)
	}
	if r := s.call("GET", "/models/dded/echo", ""); r.code != 200 {
		t.Fatalf("dedicated after restart: %v", r)
	}
	if out, err := s.tandem("delete", "dded"); err != nil {
		t.Fatalf("delete: %v %s", err, out)
	}
	if c := managedContainers(t, "dded"); len(c) != 0 {
		t.Fatalf("containers left after delete: %v", c)
	}
}

// A memory limit kills the greedy container (reported as OOM); others serve.
func TestDocker_MemoryLimit(t *testing.T) {
	needDocker(t, "tandem-fakemodel:test")
	s := startServer(t, "")
	s.deploy("", dockerManifest("dhungry", "dedicated", "tandem-fakemodel:test", "min: 1\nmax: 1", nil)+"resources:\n  memory: 64Mi\n")
	s.deploy("", dockerManifest("dcalm", "dedicated", "tandem-fakemodel:test", "min: 1\nmax: 1", nil))
	s.waitFor("ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "dhungry")
	s.waitFor("ready", 60*time.Second, func(st *controller.Status) bool { return st.Ready == 1 }, "dcalm")
	r := s.call("GET", "/models/dhungry/alloc?mb=512", "")
	if r.code != 502 || !strings.Contains(r.body, "out of memory") {
		t.Fatalf("allocating past the limit: %v, want 502 out of memory", r)
	}
	s.waitFor("OOM in status", 30*time.Second, func(st *controller.Status) bool { return strings.Contains(st.LastError, "out of memory") }, "dhungry")
	if r := s.call("GET", "/models/dcalm/echo", ""); r.code != 200 {
		t.Fatalf("the other deployment after the OOM kill: %v", r)
	}
}

// A missing image and a container that exits at once give clear errors.
func TestDocker_BadImageAndExitAtOnce(t *testing.T) {
	needDocker(t, "tandem-fakemodel:test")
	s := startServer(t, "")
	s.deploy("", dockerManifest("dnoimage", "serverless", "tandem-no-such-image:1", "max: 1", nil))
	r := s.call("GET", "/models/dnoimage/echo", "")
	if r.code != 502 || !strings.Contains(r.body, "tandem-no-such-image:1") {
		t.Fatalf("missing image: %v, want a 502 naming the image", r)
	}
	s.deploy("", dockerManifest("dexit", "serverless", "tandem-fakemodel:test", "max: 1", map[string]string{"FAKE_EXIT_AT_ONCE": "3"}))
	r = s.call("GET", "/models/dexit/echo", "")
	if r.code != 502 || !strings.Contains(r.body, "code 3") {
		t.Fatalf("exit at once: %v, want a 502 naming exit code 3", r)
	}
}

// The iris Flask image, serverless from zero, predicts like sklearn.
func TestDocker_IrisFlask(t *testing.T) {
	needDocker(t, "tandem-iris:latest")
	raw, err := os.ReadFile(filepath.Join(testbin.RepoRoot(t), "examples", "iris-flask", "testdata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var td struct {
		Instances   [][]float64 `json:"instances"`
		Predictions []int       `json:"predictions"`
	}
	json.Unmarshal(raw, &td)
	s := startServer(t, "")
	for _, mode := range []string{"serverless", "dedicated"} {
		name := "diris-" + mode
		s.deploy("", dockerManifest(name, mode, "tandem-iris:latest", "max: 1", nil))
		body, _ := json.Marshal(map[string]any{"instances": td.Instances})
		r := s.call("POST", "/models/"+name+"/predict", string(body))
		var got struct {
			Predictions []int `json:"predictions"`
		}
		if r.code != 200 || json.Unmarshal([]byte(r.body), &got) != nil || !reflect.DeepEqual(got.Predictions, td.Predictions) {
			t.Fatalf("%s: %v, want predictions %v", mode, r, td.Predictions)
		}
	}
}

// The digits ONNX model as containers of tandem's runtime image, serverless
// from zero and dedicated, answers like sklearn.
func TestDocker_DigitsONNX(t *testing.T) {
	needDocker(t, "tandem-onnx:latest")
	td := loadRows(t, "digits_rows.json")
	model := filepath.Join(testbin.RepoRoot(t), "models", "digits.onnx")
	s := startServer(t, "")
	for _, mode := range []string{"serverless", "dedicated"} {
		name := "ddigits-" + mode
		s.deploy("", fmt.Sprintf("name: %s\nmode: %s\nbackend: docker\nruntime:\n  onnx: %s\n  network: host\nscaling:\n  max: 1\n", name, mode, model))
		r := s.call("POST", "/v2/models/"+name+"/infer", inferBody("input", td.Rows))
		var resp struct {
			Outputs []struct {
				Name string          `json:"name"`
				Data json.RawMessage `json:"data"`
			} `json:"outputs"`
		}
		if r.code != 200 || json.Unmarshal([]byte(r.body), &resp) != nil {
			t.Fatalf("%s: %v", mode, r)
		}
		var labels []int64
		for _, o := range resp.Outputs {
			if o.Name == "label" {
				json.Unmarshal(o.Data, &labels)
			}
		}
		if !reflect.DeepEqual(labels, td.Labels) {
			t.Fatalf("%s: labels %v, sklearn says %v", mode, labels, td.Labels)
		}
		if c := managedContainers(t, name); len(c) != 1 {
			t.Fatalf("%s: containers %v, want 1", mode, c)
		}
	}
}
