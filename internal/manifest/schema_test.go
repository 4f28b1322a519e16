package manifest

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// compileSchema compiles the embedded schema, failing the test if it is not
// a valid draft 2020-12 schema.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatalf("add schema: %v", err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("compile schema.json: %v", err)
	}
	return s
}

// yamlToJSON turns a YAML document into the JSON value the schema checks, the
// way an editor's YAML language server does.
func yamlToJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("YAML has no JSON form (non-string keys?): %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("re-read JSON: %v", err)
	}
	return inst
}

// repoRoot finds the module root (the folder holding go.mod) above the
// package folder the test runs in.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// TestSchema_Examples checks that every manifest under examples/ passes both
// the JSON schema and Load, so the schema that ships with the examples never
// rejects them and the examples never rot.
func TestSchema_Examples(t *testing.T) {
	schema := compileSchema(t)
	root := repoRoot(t)
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "examples"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk examples: %v", err)
	}
	// The iris manifests exist from the start; finding none means the walk is broken.
	for _, want := range []string{"iris-flask/serverless.yaml", "iris-flask/dedicated.yaml"} {
		if !slices.Contains(files, filepath.Join(root, "examples", want)) {
			t.Errorf("examples/%s not found among %d manifests", want, len(files))
		}
	}
	for _, path := range files {
		rel, _ := filepath.Rel(root, path)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := schema.Validate(yamlToJSON(t, data)); err != nil {
				t.Errorf("schema rejects %s:\n%v", rel, err)
			}
			m, err := Load(path)
			if err != nil {
				t.Fatalf("Load(%s): %v", rel, err)
			}
			if m.Runtime.Workdir != "" && !filepath.IsAbs(m.Runtime.Workdir) {
				t.Errorf("Load left workdir relative: %q", m.Runtime.Workdir)
			}
		})
	}
}

// TestSchema_AgreesWithParse feeds the same manifests to the schema and to
// Parse: both must accept the good ones and reject the bad ones.
func TestSchema_AgreesWithParse(t *testing.T) {
	schema := compileSchema(t)
	const base = "name: m\nruntime:\n  command: [python3, app.py]\n"
	tests := []struct {
		name   string
		yaml   string
		accept bool
	}{
		{"minimal", base, true},
		{"full", `
name: full-1
mode: dedicated
backend: process
runtime:
  command: [/usr/bin/python3, app.py]
  args: [--verbose]
  workdir: sub
  env: {MODEL_PATH: model.pkl, THREADS: 4, DEBUG: true}
  health: /health
  port: 5000
  threads: 2
scaling:
  min: 2
  max: 8
  target_concurrency: 1.5
  container_concurrency: 4
  idle_timeout: 1m30s
  max_queue: 0
  stable_window: 60s
  panic_window: 6s
  panic_threshold: 2.5
timeouts: {startup: 500ms, request: 1h, grace: 0.5s}
resources: {cpu: 0.5, memory: 512Mi, gpus: 0}
batching: {max_batch_size: 16, max_delay: 2ms}
`, true},
		{"docker image", "name: d\nbackend: docker\nruntime: {image: 'nginx:1', network: host}\n", true},
		{"onnx", "name: o\nruntime: {onnx: model.onnx, threads: 1}\n", true},
		{"memory in bytes", base + "resources: {memory: 1048576}\n", true},
		{"unknown top-level field", base + "replicas: 3\n", false},
		{"unknown nested field", base + "scaling: {maxx: 3}\n", false},
		{"bad duration", base + "timeouts: {startup: 10 parsecs}\n", false},
		{"duration without unit", base + "scaling: {idle_timeout: 30}\n", false},
		{"wrong type", base + "scaling: {max: lots}\n", false},
		{"fractional integer", base + "scaling: {max: 2.5}\n", false},
		{"bad mode", base + "mode: sometimes\n", false},
		{"bad backend", base + "backend: lambda\n", false},
		{"bad network", "name: d\nruntime: {image: x, network: bridge}\n", false},
		{"bad name", "name: Iris_1\nruntime: {command: [x]}\n", false},
		{"missing name", "runtime: {command: [x]}\n", false},
		{"missing command", "name: m\nruntime: {health: /health}\n", false},
		{"missing runtime", "name: m\n", false},
		{"empty command", "name: m\nruntime: {command: []}\n", false},
		{"empty program", "name: m\nruntime: {command: ['']}\n", false},
		{"command as a string", "name: m\nruntime: {command: python3 app.py}\n", false},
		{"onnx with command", "name: m\nruntime: {onnx: a.onnx, command: [x]}\n", false},
		{"docker without image", "name: m\nbackend: docker\nruntime: {command: [x]}\n", false},
		{"dedicated with min 0", base + "mode: dedicated\nscaling: {min: 0}\n", false},
		{"negative min", base + "scaling: {min: -1}\n", false},
		{"negative target concurrency", base + "scaling: {target_concurrency: -1}\n", false},
		{"panic threshold below 1", base + "scaling: {panic_threshold: 0.5}\n", false},
		{"zero means default", base + "scaling: {max: 0, target_concurrency: 0, max_queue: 0, panic_threshold: 0}\n", true},
		{"port out of range", "name: m\nruntime: {command: [x], port: 70000}\n", false},
		{"health without slash", "name: m\nruntime: {command: [x], health: health}\n", false},
		{"bad memory", base + "resources: {memory: 12 parsecs}\n", false},
		{"env key with =", "name: m\nruntime: {command: [x], env: {'A=B': x}}\n", false},
		{"batching size 0", base + "batching: {max_batch_size: 0}\n", true}, // 0 means default in both
		{"not a mapping", "- name: m\n", false},
		{"openai on", base + "openai: {}\n", true},
		{"openai aliases", base + "openai: {models: [gpt-4o-mini, 'meta-llama/Llama-3.1-8B', 'llama3.1:8b', q4_0]}\n", true},
		{"openai alias with space", base + "openai: {models: ['gpt 4']}\n", false},
		{"openai alias twice", base + "openai: {models: [a, a]}\n", false},
		{"openai models not a list", base + "openai: {models: a}\n", false},
		{"openai unknown field", base + "openai: {aliases: [a]}\n", false},
		{"cache on", base + "cache: {}\n", true},
		{"cache full", base + "cache: {ttl: 5m, max_bytes: 64Mi, paths: [/predict, /v1/score]}\n", true},
		{"cache size in bytes", base + "cache: {max_bytes: 1048576}\n", true},
		{"cache bad ttl", base + "cache: {ttl: soon}\n", false},
		{"cache bad size", base + "cache: {max_bytes: lots}\n", false},
		{"cache path without slash", base + "cache: {paths: [predict]}\n", false},
		{"cache path with query", base + "cache: {paths: ['/predict?x=1']}\n", false},
		{"cache path twice", base + "cache: {paths: [/a, /a]}\n", false},
		{"cache unknown field", base + "cache: {size: 1Mi}\n", false},
		{"prewarm window", base + "prewarm: [{cron: '0 9 * * 1-5', min: 2, for: 8h}]\n", true},
		{"prewarm window in a zone", base + "prewarm: [{cron: '@daily', min: 1, for: 1h, timezone: Europe/Paris}]\n", true},
		{"prewarm predictive", base + "prewarm: [{predictive: true, lead: 30s}]\n", true},
		{"prewarm predictive and window", base + "prewarm: [{predictive: true}, {cron: '*/5 * * * *', min: 1, for: 1m}]\n", true},
		{"prewarm window without for", base + "prewarm: [{cron: '0 9 * * *', min: 1}]\n", false},
		{"prewarm window without min", base + "prewarm: [{cron: '0 9 * * *', for: 1h}]\n", false},
		{"prewarm cron and predictive", base + "prewarm: [{cron: '0 9 * * *', min: 1, for: 1h, predictive: true}]\n", false},
		{"prewarm predictive with for", base + "prewarm: [{predictive: true, for: 1h}]\n", false},
		{"prewarm predictive not a bool", base + "prewarm: [{predictive: sometimes}]\n", false},
		{"prewarm empty entry", base + "prewarm: [{}]\n", false},
		{"prewarm unknown field", base + "prewarm: [{cron: '0 9 * * *', min: 1, for: 1h, every: 2}]\n", false},
		{"prewarm not a list", base + "prewarm: {predictive: true}\n", false},
		{"deadline", base + "timeouts: {deadline: 150ms}\n", true},
		{"bad deadline", base + "timeouts: {deadline: soon}\n", false},
		{"fallback", base + "fallback: small-model\n", true},
		{"fallback not a name", base + "fallback: Small_Model\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			schemaErr := schema.Validate(yamlToJSON(t, []byte(tt.yaml)))
			_, parseErr := Parse([]byte(tt.yaml), t.TempDir())
			if got := schemaErr == nil; got != tt.accept {
				t.Errorf("schema accepts = %v, want %v (%v)", got, tt.accept, schemaErr)
			}
			if got := parseErr == nil; got != tt.accept {
				t.Errorf("Parse accepts = %v, want %v (%v)", got, tt.accept, parseErr)
			}
		})
	}
}

// schemaDoc returns schema.json as plain maps, for inspecting its shape.
func schemaDoc(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(Schema, &doc); err != nil {
		t.Fatalf("schema.json: %v", err)
	}
	return doc
}

// resolve follows a local "$ref" such as "#/$defs/runtime".
func resolve(t *testing.T, root, node map[string]any) map[string]any {
	t.Helper()
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	cur := any(root)
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("$ref %s does not resolve", ref)
		}
		cur = m[part]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		t.Fatalf("$ref %s does not resolve to a schema", ref)
	}
	return m
}

// TestSchema_MatchesTypes walks the Go types and the schema side by side:
// every struct is an object with additionalProperties false whose property
// names are exactly the struct's yaml tags, every leaf has the JSON type its
// Go type decodes from, and every "default" is what SetDefaults sets.
func TestSchema_MatchesTypes(t *testing.T) {
	root := schemaDoc(t)
	defaults := Manifest{Name: "m", Burst: &Burst{}, Runtime: Runtime{Command: []string{"x"}, Lambda: &Lambda{}, Template: &Template{}}, Batching: &Batching{}, OpenAI: &OpenAI{}, Cache: &Cache{}, Async: &Async{}, Rollout: &Rollout{}}
	defaults.SetDefaults()
	// The schema's default is a plain deployment's; a function's 1 is
	// TestSetDefaults_LambdaOneEventAtATime's.
	defaults.Scaling.ContainerConcurrency = 0
	var walk func(node map[string]any, typ reflect.Type, val reflect.Value, path string)
	walk = func(node map[string]any, typ reflect.Type, val reflect.Value, path string) {
		node = resolve(t, root, node)
		if node["type"] != "object" || node["additionalProperties"] != false {
			t.Errorf("%s: want type object with additionalProperties false, got type %v, additionalProperties %v",
				orRoot(path), node["type"], node["additionalProperties"])
		}
		props, _ := node["properties"].(map[string]any)
		var goNames []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" || name == "-" {
				continue
			}
			goNames = append(goNames, name)
			p := join(path, name)
			sub, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s: field %s.%s has no schema property", p, typ.Name(), f.Name)
				continue
			}
			fv := val.Field(i)
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
				fv = fv.Elem() // invalid when nil: no defaults to compare below it
			}
			if ft.Kind() == reflect.Struct {
				walk(sub, ft, fv, p)
				continue
			}
			checkLeaf(t, p, resolve(t, root, sub), ft)
			if def, ok := sub["default"]; ok {
				checkDefault(t, p, def, fv)
			}
		}
		var schemaNames []string
		for name := range props {
			schemaNames = append(schemaNames, name)
		}
		sort.Strings(goNames)
		sort.Strings(schemaNames)
		if !slices.Equal(goNames, schemaNames) {
			t.Errorf("%s: schema properties %v, Go yaml tags of %s %v", orRoot(path), schemaNames, typ.Name(), goNames)
		}
	}
	walk(root, reflect.TypeOf(Manifest{}), reflect.ValueOf(defaults), "")
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// checkLeaf checks that a field's schema has the JSON type that its Go type
// decodes from.
func checkLeaf(t *testing.T, path string, s map[string]any, typ reflect.Type) {
	t.Helper()
	var want string
	switch {
	case typ == durationType:
		if s["type"] != "string" || s["pattern"] == nil {
			t.Errorf("%s: a Duration must be a string with a pattern, got %v", path, s)
		}
		return
	case typ == byteSizeType:
		if _, ok := s["oneOf"]; !ok {
			t.Errorf("%s: a ByteSize must be oneOf integer or size string, got %v", path, s)
		}
		return
	case typ.Kind() == reflect.String:
		if enum, ok := s["enum"].([]any); ok {
			for _, e := range enum {
				if _, ok := e.(string); !ok {
					t.Errorf("%s: enum value %v is not a string", path, e)
				}
			}
			return
		}
		want = "string"
	case typ.Kind() == reflect.Int || typ.Kind() == reflect.Int64:
		want = "integer"
	case typ.Kind() == reflect.Float64:
		want = "number"
	case typ.Kind() == reflect.Slice:
		want = "array"
	case typ.Kind() == reflect.Map:
		want = "object"
	default:
		t.Errorf("%s: Go type %s has no rule in this test; add one", path, typ)
		return
	}
	if s["type"] != want {
		t.Errorf("%s: schema type %v, want %s (Go %s)", path, s["type"], want, typ)
	}
}

// checkDefault compares a schema "default" with the value SetDefaults gives.
func checkDefault(t *testing.T, path string, def any, v reflect.Value) {
	t.Helper()
	if !v.IsValid() {
		t.Errorf("%s: schema has a default but the defaults manifest has no value here", path)
		return
	}
	var got, want any
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(def.(string))
		if err != nil {
			t.Errorf("%s: default %v: %v", path, def, err)
			return
		}
		got, want = time.Duration(v.Int()), d
	case v.Kind() == reflect.Int:
		got, want = float64(v.Int()), def
	case v.Kind() == reflect.Float64:
		got, want = v.Float(), def
	case v.Kind() == reflect.String:
		got, want = v.String(), def
	default:
		t.Errorf("%s: cannot compare a default for Go type %s", path, v.Type())
		return
	}
	if got != want {
		t.Errorf("%s: schema default %v, SetDefaults gives %v", path, want, got)
	}
}

// TestSchema_Enums checks the schema's enums and name pattern against the Go
// constants and Validate's expression.
func TestSchema_Enums(t *testing.T) {
	root := schemaDoc(t)
	props := root["properties"].(map[string]any)
	runtime := resolve(t, root, props["runtime"].(map[string]any))["properties"].(map[string]any)
	tests := []struct {
		name   string
		schema map[string]any
		want   []string
	}{
		{"mode", props["mode"].(map[string]any), []string{string(Serverless), string(Dedicated), string(Hybrid)}},
		{"backend", props["backend"].(map[string]any), []string{"", BackendProcess, BackendDocker, BackendKubernetes}},
		{"runtime.network", runtime["network"].(map[string]any), []string{"", "host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range tt.schema["enum"].([]any) {
				got = append(got, v.(string))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("enum %q, want %q", got, tt.want)
			}
		})
	}
	if got := props["name"].(map[string]any)["pattern"]; got != nameRE.String() {
		t.Errorf("name pattern %v, Validate uses %v", got, nameRE)
	}
}

// TestSchema_DurationPattern checks that the schema's duration pattern
// accepts exactly the non-negative strings time.ParseDuration accepts.
func TestSchema_DurationPattern(t *testing.T) {
	schema := compileSchema(t)
	for _, s := range []string{
		"0", "30s", "1m30s", "1.5h", "500ms", "10us", "10µs", "10μs", "3ns", ".5s", "5.s", "1h2m3s4ms5us6ns",
		"", "30", "s", ".s", "10 parsecs", "30 s", "1d", "-5s", "+5s", "1e3s", "0x10s", "30S", " 30s",
	} {
		_, err := time.ParseDuration(s)
		want := err == nil && !strings.HasPrefix(s, "-") && !strings.HasPrefix(s, "+")
		doc := map[string]any{"name": "m", "runtime": map[string]any{"command": []any{"x"}},
			"timeouts": map[string]any{"startup": s}}
		got := schema.Validate(doc) == nil
		if got != want {
			t.Errorf("duration %q: schema accepts = %v, time.ParseDuration (non-negative) accepts = %v", s, got, want)
		}
	}
}
