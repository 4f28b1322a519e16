package lambda

import (
	"encoding/json"
	"fmt"
	"slices"

	"tandem/internal/backend"
	"tandem/internal/controller"
	"tandem/internal/manifest"
)

// Runtime is the deploy-time knowledge of a custom runtime function
// (runtime.lambda.command, such as a Go function's ./bootstrap): its
// program is the command, its readiness path ReadyPath. The Runtime API
// itself is served by the Backend decorator (Wrap), which does not care
// what the program is.
type Runtime struct{}

var _ controller.Runtime = Runtime{}

// Handles reports whether m is a custom runtime function.
func (Runtime) Handles(m *manifest.Manifest) bool {
	return m.Runtime.Lambda != nil && len(m.Runtime.Lambda.Command) > 0
}

// Describe has no metadata to read.
func (Runtime) Describe(*manifest.Manifest) (json.RawMessage, error) { return nil, nil }

// Prepare sets runtime.command to the function's program and the
// readiness path to ReadyPath.
func (Runtime) Prepare(backendName string, spec *backend.Spec) error {
	if backendName != manifest.BackendProcess {
		return fmt.Errorf("runtime.lambda runs on the process backend only, not %s", backendName)
	}
	cp := *spec.Manifest
	cp.Runtime.Command = slices.Clone(cp.Runtime.Lambda.Command)
	PrepareManifest(&cp)
	spec.Manifest = &cp
	return nil
}

// PrepareManifest sets what every function's instances need whatever
// their program: the readiness path (ReadyPath) when the manifest names
// none. A runtime for runtime.lambda.handler calls it on its copy.
func PrepareManifest(m *manifest.Manifest) {
	if m.Runtime.Health == "" {
		m.Runtime.Health = ReadyPath
	}
}
