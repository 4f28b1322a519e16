package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// TestParse_Defaults checks the defaults docs/manifest.md documents. The
// wanted values are written out, not taken from the Default constants, so a
// change of default shows up here and in the docs.
func TestParse_Defaults(t *testing.T) {
	const base = "/srv/models/iris"
	wantScaling := func(min, max int) Scaling {
		return Scaling{
			Min: ptr(min), Max: max, TargetConcurrency: 1, ContainerConcurrency: 0,
			IdleTimeout: Duration(30 * time.Second), MaxQueue: 100,
			StableWindow: Duration(60 * time.Second), PanicWindow: Duration(6 * time.Second), PanicThreshold: 2,
		}
	}
	wantTimeouts := Timeouts{
		Startup: Duration(60 * time.Second), Request: Duration(30 * time.Second), Grace: Duration(10 * time.Second),
	}
	tests := []struct {
		name string
		yaml string
		want Manifest
	}{
		{
			name: "serverless by default",
			yaml: "name: iris\nruntime:\n  command: [python3, app.py]\n",
			want: Manifest{
				Name: "iris", Mode: Serverless,
				Runtime:  Runtime{Command: []string{"python3", "app.py"}, Workdir: base},
				Scaling:  wantScaling(0, 4),
				Timeouts: wantTimeouts,
			},
		},
		{
			name: "dedicated keeps one",
			yaml: "name: iris\nmode: dedicated\nruntime:\n  command: [python3, app.py]\n",
			want: Manifest{
				Name: "iris", Mode: Dedicated,
				Runtime:  Runtime{Command: []string{"python3", "app.py"}, Workdir: base},
				Scaling:  wantScaling(1, 4),
				Timeouts: wantTimeouts,
			},
		},
		{
			name: "max follows a large min",
			yaml: "name: iris\nmode: dedicated\nruntime: {command: [x]}\nscaling: {min: 6}\n",
			want: Manifest{
				Name: "iris", Mode: Dedicated,
				Runtime:  Runtime{Command: []string{"x"}, Workdir: base},
				Scaling:  wantScaling(6, 6),
				Timeouts: wantTimeouts,
			},
		},
		{
			name: "panic window no longer than a short stable window",
			yaml: "name: iris\nruntime: {command: [x]}\nscaling: {stable_window: 2s}\n",
			want: Manifest{
				Name: "iris", Mode: Serverless,
				Runtime: Runtime{Command: []string{"x"}, Workdir: base},
				Scaling: func() Scaling {
					s := wantScaling(0, 4)
					s.StableWindow, s.PanicWindow = Duration(2*time.Second), Duration(2*time.Second)
					return s
				}(),
				Timeouts: wantTimeouts,
			},
		},
		{
			name: "batching defaults when the section is present",
			yaml: "name: iris\nruntime: {command: [x]}\nbatching: {}\n",
			want: Manifest{
				Name: "iris", Mode: Serverless,
				Runtime:  Runtime{Command: []string{"x"}, Workdir: base},
				Scaling:  wantScaling(0, 4),
				Timeouts: wantTimeouts,
				Batching: &Batching{MaxBatchSize: 32, MaxDelay: Duration(2 * time.Millisecond)},
			},
		},
		{
			name: "given values are kept",
			yaml: `
name: iris
mode: serverless
runtime:
  command: ["/usr/bin/python3", "app.py"]
  workdir: .
  env: {MODEL_PATH: model.pkl}
  health: /health
scaling: {min: 0, max: 2, target_concurrency: 3, idle_timeout: 5s, max_queue: 7}
timeouts: {startup: 1m, request: 2s, grace: 250ms}
resources: {memory: 512Mi, cpu: 1.5}
`,
			want: Manifest{
				Name: "iris", Mode: Serverless,
				Runtime: Runtime{
					Command: []string{"/usr/bin/python3", "app.py"}, Workdir: base,
					Env: map[string]string{"MODEL_PATH": "model.pkl"}, Health: "/health",
				},
				Scaling: func() Scaling {
					s := wantScaling(0, 2)
					s.TargetConcurrency, s.IdleTimeout, s.MaxQueue = 3, Duration(5*time.Second), 7
					return s
				}(),
				Timeouts:  Timeouts{Startup: Duration(time.Minute), Request: Duration(2 * time.Second), Grace: Duration(250 * time.Millisecond)},
				Resources: Resources{Memory: 512 << 20, CPU: 1.5},
			},
		},
		{
			name: "image needs no workdir",
			yaml: "name: web\nbackend: docker\nruntime: {image: 'nginx:1'}\n",
			want: Manifest{
				Name: "web", Mode: Serverless, Backend: BackendDocker,
				Runtime:  Runtime{Image: "nginx:1"},
				Scaling:  wantScaling(0, 4),
				Timeouts: wantTimeouts,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml), base)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("Parse got\n%s\nwant\n%s", g, w)
			}
			if got.Scaling.MinInstances() != *tt.want.Scaling.Min {
				t.Errorf("MinInstances() = %d, want %d", got.Scaling.MinInstances(), *tt.want.Scaling.Min)
			}
		})
	}
}

// TestParse_Paths checks that workdir and onnx are taken relative to the
// manifest's folder.
func TestParse_Paths(t *testing.T) {
	tests := []struct {
		name        string
		runtime     string
		base        string
		wantWorkdir string
		wantONNX    string
	}{
		{"dot is the manifest folder", "{command: [x], workdir: .}", "/m", "/m", ""},
		{"relative workdir", "{command: [x], workdir: ../app/src}", "/m/iris", "/m/app/src", ""},
		{"absolute workdir kept", "{command: [x], workdir: /opt/app}", "/m", "/opt/app", ""},
		{"no workdir means the manifest folder", "{command: [x]}", "/m", "/m", ""},
		{"relative onnx", "{onnx: models/digits.onnx}", "/m", "", "/m/models/digits.onnx"},
		{"absolute onnx kept", "{onnx: /data/digits.onnx}", "/m", "", "/data/digits.onnx"},
		{"no base leaves paths alone", "{command: [x], workdir: app}", "", "app", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte("name: m\nruntime: "+tt.runtime+"\n"), tt.base)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.Runtime.Workdir != tt.wantWorkdir {
				t.Errorf("workdir = %q, want %q", m.Runtime.Workdir, tt.wantWorkdir)
			}
			if m.Runtime.ONNX != tt.wantONNX {
				t.Errorf("onnx = %q, want %q", m.Runtime.ONNX, tt.wantONNX)
			}
		})
	}
}

// TestLoad resolves a relative manifest path and its relative workdir into
// absolute paths.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "iris", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "iris", "m.yaml")
	if err := os.WriteFile(path, []byte("name: iris\nruntime: {command: [x], workdir: app}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	m, err := Load(filepath.Join("iris", "m.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// t.TempDir may sit behind a symlink; compare what Getwd reports.
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "iris", "app"); m.Runtime.Workdir != want {
		t.Errorf("workdir = %q, want %q", m.Runtime.Workdir, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error matching os.ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: iris\nruntime: {command: [x]}\nscaling: {maxx: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load(bad) = %v, want ErrInvalid", err)
	}
}

// TestParse_Errors checks that bad manifests are rejected with every problem
// listed by field path in one error. want maps each expected field path to
// a piece of its message; no other problems may be reported.
func TestParse_Errors(t *testing.T) {
	const ok = "name: m\nruntime:\n  command: [python3, app.py]\n"
	tests := []struct {
		name string
		yaml string
		want map[string]string
	}{
		{"unknown top-level field", ok + "replicas: 3\n", map[string]string{
			"replicas": "unknown field (known: async, backend, batching, burst, cache, fallback, mode, name, openai, prewarm, resources, rollout, runtime, scaling, timeouts)",
		}},
		{"unknown nested field", ok + "scaling:\n  maxx: 3\n", map[string]string{
			"scaling.maxx": "unknown field",
		}},
		{"bad duration", ok + "timeouts:\n  startup: 10 parsecs\n", map[string]string{
			"timeouts.startup": `invalid duration "10 parsecs"`,
		}},
		{"duration without unit", ok + "scaling: {idle_timeout: 30}\n", map[string]string{
			"scaling.idle_timeout": `invalid duration "30"`,
		}},
		{"min greater than max", ok + "scaling: {min: 5, max: 2}\n", map[string]string{
			"scaling.min": "min (5) is greater than max (2)",
		}},
		{"dedicated with min 0", ok + "mode: dedicated\nscaling: {min: 0}\n", map[string]string{
			"scaling.min": "dedicated deployments keep at least one instance",
		}},
		{"missing command", "name: m\nruntime:\n  health: /health\n", map[string]string{
			"runtime.command": "required",
		}},
		{"no runtime at all", "name: m\n", map[string]string{
			"runtime.command": "required",
		}},
		{"wrong type", ok + "scaling:\n  max: lots\n", map[string]string{
			"scaling.max": `must be an integer, got "lots"`,
		}},
		{"list where a mapping belongs", ok + "scaling: [1, 2]\n", map[string]string{
			"scaling": "must be a mapping of fields",
		}},
		{"string where a list belongs", "name: m\nruntime: {command: python3 app.py}\n", map[string]string{
			"runtime.command": "must be a list",
		}},
		{"field given twice", ok + "scaling: {max: 2, max: 3}\n", map[string]string{
			"scaling.max": "given twice",
		}},
		{"bad size", ok + "resources: {memory: 12 parsecs}\n", map[string]string{
			"resources.memory": `invalid size "12 parsecs"`,
		}},
		{"several structural problems at once", `
name: m
replicas: 3
runtime:
  command: [x]
  cmd: [y]
scaling:
  maxx: 3
  max: lots
  target_concurrency: high
timeouts:
  startup: 10 parsecs
  request: [1s]
`, map[string]string{
			"replicas":                   "unknown field",
			"runtime.cmd":                "unknown field",
			"scaling.maxx":               "unknown field",
			"scaling.max":                "must be an integer",
			"scaling.target_concurrency": "must be a number",
			"timeouts.startup":           "invalid duration",
			"timeouts.request":           "must be a duration",
		}},
		{"several semantic problems at once", `
name: Iris_1
mode: sometimes
backend: lambda
runtime:
  command: [""]
  health: health
  port: 70000
  network: bridge
  threads: -1
  env: {"A=B": x}
scaling:
  min: 5
  max: 2
  target_concurrency: -1
  container_concurrency: -1
  max_queue: -1
  idle_timeout: -1s
  stable_window: 2s
  panic_window: 3s
  panic_threshold: 0.5
timeouts: {startup: -1s, request: -2s, grace: -3s}
resources: {cpu: -1, gpus: -1}
batching: {max_batch_size: -1, max_delay: -1ms}
`, map[string]string{
			"name":                          `"Iris_1" must be 1-63 characters`,
			"mode":                          `"sometimes" is not a mode`,
			"backend":                       `"lambda" is not a backend`,
			"runtime.command[0]":            "must name a program",
			"runtime.health":                "must be a path starting with /",
			"runtime.port":                  "70000 is not a port",
			"runtime.network":               `"bridge" is not a network mode`,
			"runtime.threads":               "must not be negative",
			"runtime.env":                   `"A=B" is not a valid variable name`,
			"scaling.min":                   "min (5) is greater than max (2)",
			"scaling.target_concurrency":    "must be greater than 0",
			"scaling.container_concurrency": "must not be negative",
			"scaling.max_queue":             "must not be negative",
			"scaling.idle_timeout":          "must not be negative",
			"scaling.panic_window":          "no longer than stable_window (2s)",
			"scaling.panic_threshold":       "must be at least 1",
			"timeouts.startup":              "must be positive",
			"timeouts.request":              "must be positive",
			"timeouts.grace":                "must be positive",
			"resources.cpu":                 "must not be negative",
			"resources.gpus":                "must not be negative",
			"batching.max_batch_size":       "must be at least 1",
			"batching.max_delay":            "must be positive",
		}},
		{"runtime sources conflict", "name: m\nruntime: {onnx: a.onnx, command: [x]}\n", map[string]string{
			"runtime.onnx": "cannot be combined",
		}},
		{"docker without an image", "name: m\nbackend: docker\nruntime: {command: [x]}\n", map[string]string{
			"runtime.image": "required with backend docker",
		}},
		{"missing name", "runtime: {command: [x]}\n", map[string]string{
			"name": "required",
		}},
		{"not a mapping", "- name: m\n", map[string]string{
			"": "must be a mapping of fields",
		}},
		{"not YAML", "name: [m\n", map[string]string{
			"": "not valid YAML",
		}},
		// A user fixing a manifest should see all its problems in one go,
		// whether the decoder or Validate finds them.
		{"structural and semantic problems at once", `
name: m
mode: dedicated
runtime: {command: [x]}
scaling: {min: 0, maxx: 3}
timeouts: {startup: 10 parsecs}
`, map[string]string{
			"scaling.maxx":     "unknown field",
			"timeouts.startup": "invalid duration",
			"scaling.min":      "dedicated deployments keep at least one instance",
		}},
		// Values that pass the field check but that the YAML decoder refuses
		// (a quoted number is a string in YAML; "NaN" is not YAML's .nan)
		// must still be reported with their field paths.
		{"values the decoder refuses", ok + "scaling: {max: \"4\"}\nresources: {cpu: NaN}\n", map[string]string{
			"scaling.max":   "",
			"resources.cpu": "",
		}},
		// tandem stores manifests as JSON, which cannot carry invalid UTF-8.
		{"string that is not UTF-8", "name: m\nruntime: {command: [!!binary /w==]}\n", map[string]string{
			"runtime.command[0]": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.yaml), "/m")
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", m)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			var merr *Error
			if !errors.As(err, &merr) {
				t.Fatalf("error %T is not a *manifest.Error: %v", err, err)
			}
			got := map[string][]string{}
			for _, p := range merr.Problems {
				got[p.Field] = append(got[p.Field], p.Message)
				if !strings.Contains(err.Error(), p.String()) {
					t.Errorf("Error() %q does not list %q", err.Error(), p.String())
				}
			}
			for field, msg := range tt.want {
				msgs, ok := got[field]
				if !ok {
					t.Errorf("no problem reported for field %q (want one containing %q)", field, msg)
					continue
				}
				if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, msg) }) {
					t.Errorf("%s: messages %q, want one containing %q", field, msgs, msg)
				}
			}
			for field, msgs := range got {
				if _, ok := tt.want[field]; !ok {
					t.Errorf("unexpected problem %q: %q", field, msgs)
				}
			}
			if t.Failed() {
				t.Logf("full error: %v", err)
			}
		})
	}
}

// TestError_Error checks the shape users see: "invalid manifest: " and then
// "field: message" pairs joined by "; ".
func TestError_Error(t *testing.T) {
	err := &Error{Problems: []Problem{
		{Field: "scaling.maxx", Message: "unknown field"},
		{Message: "not valid YAML: oops"},
	}}
	if got, want := err.Error(), "invalid manifest: scaling.maxx: unknown field; not valid YAML: oops"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestManifest_Hash checks that the hash follows content: equal manifests
// agree, any change of a field changes it.
func TestManifest_Hash(t *testing.T) {
	const base = "name: iris\nruntime: {command: [python3, app.py]}\n"
	parse := func(s string) *Manifest {
		t.Helper()
		m, err := Parse([]byte(s), "/m")
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		return m
	}
	h := parse(base).Hash()
	if len(h) != 12 {
		t.Errorf("Hash() = %q, want 12 hex digits", h)
	}
	if again := parse("runtime: {command: [python3, app.py]}\nname: iris\n").Hash(); again != h {
		t.Errorf("same manifest in another order hashes to %s, want %s", again, h)
	}
	if explicit := parse(base + "scaling: {max: 4, idle_timeout: 30s}\n").Hash(); explicit != h {
		t.Errorf("defaults written out hash to %s, want %s", explicit, h)
	}
	for _, change := range []string{
		"scaling: {max: 5}\n",
		"timeouts: {startup: 61s}\n",
		"runtime: {command: [python3, app.py], env: {A: b}}\n",
	} {
		s := base + change
		if strings.HasPrefix(change, "runtime:") {
			s = "name: iris\n" + change
		}
		if got := parse(s).Hash(); got == h {
			t.Errorf("%q did not change the hash", change)
		}
	}
}

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and any
// manifest it accepts must pass Validate again and come back through JSON
// (as tandem stores it) with the same Hash.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"name: iris\nruntime: {command: [python3, app.py]}\n",
		"name: iris\nmode: dedicated\nruntime: {command: [x], env: {A: b}, port: 5000}\nscaling: {min: 2, max: 3}\n",
		"name: o\nruntime: {onnx: m.onnx, threads: 2}\nbatching: {max_batch_size: 8, max_delay: 1ms}\n",
		"name: d\nbackend: docker\nruntime: {image: nginx, network: host}\nresources: {memory: 512Mi, cpu: 0.5}\n",
		"name: m\nruntime: {command: [x]}\nscaling: {maxx: 3}\ntimeouts: {startup: 10 parsecs}\n",
		"name: m\nruntime: {command: [x]}\nscaling: {max: lots, idle_timeout: 1.5h}\n",
		"a: &a {b: *a}\n",
		"name: m\nruntime: {command: [!!binary /w==]}\n", // not UTF-8: JSON would change it
		"",
	}
	if files, _ := filepath.Glob("../../examples/*/*.yaml"); len(files) > 0 {
		for _, path := range files {
			if data, err := os.ReadFile(path); err == nil {
				seeds = append(seeds, string(data))
			}
		}
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, "/base")
		if err != nil {
			var merr *Error
			if !errors.As(err, &merr) || len(merr.Problems) == 0 {
				t.Fatalf("rejection is not a *Error with problems: %#v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted manifest fails Validate: %v", err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var back Manifest
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("json.Unmarshal of %s: %v", b, err)
		}
		if back.Hash() != m.Hash() {
			t.Fatalf("hash changed through JSON: %s -> %s\n%s", m.Hash(), back.Hash(), b)
		}
		// JSON is YAML too: parsing the stored form gives the same revision.
		again, err := Parse(b, "/base")
		if err != nil {
			t.Fatalf("Parse of its own JSON %s: %v", b, err)
		}
		if again.Hash() != m.Hash() {
			t.Fatalf("hash changed through Parse of JSON: %s -> %s\n%s", m.Hash(), again.Hash(), b)
		}
	})
}
