package manifest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestManifest_OpenAI(t *testing.T) {
	const base = "name: m\nruntime: {command: [x]}\n"
	tests := []struct {
		name  string
		yaml  string
		names []string // OpenAINames; nil: no openai block
		err   string   // part of the error; "" means valid
	}{
		{"absent", base, nil, ""},
		{"on", base + "openai: {}\n", []string{"m"}, ""},
		{"aliases", base + "openai: {models: [gpt-4o-mini, 'org/Model-7B', 'llama3:8b-q4_0']}\n",
			[]string{"m", "gpt-4o-mini", "org/Model-7B", "llama3:8b-q4_0"}, ""},
		{"own name", base + "openai: {models: [m]}\n", nil, "openai.models[0]: \"m\" is the deployment's own name"},
		{"twice", base + "openai: {models: [a, b, a]}\n", nil, "openai.models[2]: \"a\" is given twice"},
		{"empty", base + "openai: {models: ['']}\n", nil, "openai.models[0]: \"\" is not a model name"},
		{"leading slash", base + "openai: {models: [/a]}\n", nil, "openai.models[0]"},
		{"too long", base + "openai: {models: [" + strings.Repeat("a", 129) + "]}\n", nil, "openai.models[0]"},
		{"unknown field", base + "openai: {model: a}\n", nil, "openai.model: unknown field (known: models)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.yaml), "")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.OpenAINames(); !slices.Equal(got, tt.names) {
				t.Errorf("OpenAINames() = %q, want %q", got, tt.names)
			}
		})
	}
}

// An openai block changes the revision only when it is there: manifests
// written before it existed keep their hash.
func TestManifest_OpenAIHash(t *testing.T) {
	a, _ := Parse([]byte("name: m\nruntime: {command: [x]}\n"), "")
	b, _ := Parse([]byte("name: m\nruntime: {command: [x]}\nopenai: {}\n"), "")
	if strings.Contains(string(mustJSON(t, a)), "openai") {
		t.Errorf("a manifest without openai marshals it: %s", mustJSON(t, a))
	}
	if a.Hash() == b.Hash() {
		t.Error("adding openai: {} did not change the revision")
	}
}

func TestSchema_AliasPattern(t *testing.T) {
	root := schemaDoc(t)
	oa := root["$defs"].(map[string]any)["openai"].(map[string]any)
	items := oa["properties"].(map[string]any)["models"].(map[string]any)["items"].(map[string]any)
	if got := items["pattern"]; got != aliasRE.String() {
		t.Errorf("openai.models pattern %v, Validate uses %v", got, aliasRE)
	}
}

func mustJSON(t *testing.T, m *Manifest) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
