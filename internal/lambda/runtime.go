package lambda

import (
	"encoding/json"
	"fmt"
	"slices"

	"tandem/internal/backend"
	"tandem/internal/controller"
	"tandem/internal/manifest"
)

// Runtime is the deploy-time knowledge of functions (runtime.lambda): a
// custom runtime's program (runtime.lambda.command, such as a Go
// function's ./bootstrap) is the command; a handler (runtime.lambda.handler)
// is prepared by Handler. Either way the readiness path is ReadyPath. The
// Runtime API itself is served by the Backend decorator (Wrap), which does
// not care what the program is.
type Runtime struct {
	// Handler prepares handler functions (tandem's Python runtime); nil
	// leaves them to another runtime.
	Handler controller.Runtime
}

var _ controller.Runtime = Runtime{}

// Handles reports whether m is a function this runtime prepares.
func (r Runtime) Handles(m *manifest.Manifest) bool {
	l := m.Runtime.Lambda
	return l != nil && (len(l.Command) > 0 || r.Handler != nil && r.Handler.Handles(m))
}

// Describe has no metadata to read.
func (Runtime) Describe(*manifest.Manifest) (json.RawMessage, error) { return nil, nil }

// Prepare sets runtime.command to the function's program (Handler's for a
// handler) and the readiness path to ReadyPath.
func (r Runtime) Prepare(backendName string, spec *backend.Spec) error {
	if backendName != manifest.BackendProcess {
		return fmt.Errorf("runtime.lambda runs on the process backend only, not %s", backendName)
	}
	if len(spec.Manifest.Runtime.Lambda.Command) == 0 {
		if err := r.Handler.Prepare(backendName, spec); err != nil {
			return err
		}
	}
	cp := *spec.Manifest
	if len(cp.Runtime.Lambda.Command) > 0 {
		cp.Runtime.Command = slices.Clone(cp.Runtime.Lambda.Command)
	}
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
