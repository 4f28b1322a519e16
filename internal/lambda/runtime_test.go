package lambda

import (
	"encoding/json"
	"slices"
	"testing"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// handlerRuntime stands in for the Python runtime: it gives handlers a
// program.
type handlerRuntime struct{}

func (handlerRuntime) Handles(m *manifest.Manifest) bool {
	return m.Runtime.Lambda != nil && m.Runtime.Lambda.Handler != ""
}
func (handlerRuntime) Describe(*manifest.Manifest) (json.RawMessage, error) { return nil, nil }
func (handlerRuntime) Prepare(_ string, spec *backend.Spec) error {
	cp := *spec.Manifest
	cp.Runtime.Command = []string{"python3", "bootstrap.py"}
	spec.Manifest = &cp
	return nil
}

func TestRuntime_Prepare(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		rt         Runtime
		handles    bool
		command    []string
	}{
		{"command", "lambda: {command: [./bootstrap, -v]}", Runtime{}, true, []string{"./bootstrap", "-v"}},
		{"handler without a handler runtime", "lambda: {handler: app.handler}", Runtime{}, false, nil},
		{"handler", "lambda: {handler: app.handler}", Runtime{Handler: handlerRuntime{}}, true, []string{"python3", "bootstrap.py"}},
		{"not a function", "command: [x]", Runtime{Handler: handlerRuntime{}}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manifest.Parse([]byte("name: f\nruntime:\n  "+tc.yaml+"\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.rt.Handles(m); got != tc.handles {
				t.Fatalf("Handles = %v, want %v", got, tc.handles)
			}
			if !tc.handles {
				return
			}
			spec := backend.Spec{Manifest: m}
			if err := tc.rt.Prepare(manifest.BackendProcess, &spec); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(spec.Manifest.Runtime.Command, tc.command) || spec.Manifest.Runtime.Health != ReadyPath {
				t.Errorf("prepared command %q health %q, want %q %q", spec.Manifest.Runtime.Command, spec.Manifest.Runtime.Health, tc.command, ReadyPath)
			}
			if m.Runtime.Health != "" || len(m.Runtime.Command) != 0 {
				t.Errorf("Prepare changed the deployment's manifest: %+v", m.Runtime)
			}
			if err := tc.rt.Prepare(manifest.BackendDocker, &backend.Spec{Manifest: m}); err == nil {
				t.Error("Prepare for docker: want an error")
			}
		})
	}
}
