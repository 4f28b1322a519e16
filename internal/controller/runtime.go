package controller

import (
	"encoding/json"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Runtime is a built-in model runtime's deploy-time knowledge, kept in one
// place: whether it serves a manifest, what the model looks like (read at
// deploy, so metadata requests never wake it), and how each backend runs it
// (command, image, mounts and the readiness path). Methods are called from
// the controller's goroutines and must be safe for concurrent use.
type Runtime interface {
	// Handles reports whether m is served by this runtime.
	Handles(m *manifest.Manifest) bool
	// Describe reads the model's metadata (v2 JSON) at deploy time; nil
	// means none.
	Describe(m *manifest.Manifest) (json.RawMessage, error)
	// Prepare turns spec into what the backend called backendName runs,
	// its readiness path included. It must not modify spec.Manifest in
	// place (copy it first).
	Prepare(backendName string, spec *backend.Spec) error
}

// runtimeFor returns the runtime that serves m, or nil for a manifest that
// names its own program or image.
func (c *Controller) runtimeFor(m *manifest.Manifest) Runtime {
	for _, rt := range c.cfg.Runtimes {
		if rt.Handles(m) {
			return rt
		}
	}
	return nil
}

// describe reads m's metadata through its runtime, if it has one.
func (c *Controller) describe(m *manifest.Manifest) (json.RawMessage, error) {
	if rt := c.runtimeFor(m); rt != nil {
		return rt.Describe(m)
	}
	return nil, nil
}

// prepare fills spec in through its manifest's runtime, if it has one.
func (c *Controller) prepare(backendName string, spec *backend.Spec) error {
	if rt := c.runtimeFor(spec.Manifest); rt != nil {
		return rt.Prepare(backendName, spec)
	}
	return nil
}

// healthPath is the readiness path of m's instances on backendName: the
// manifest's, else its runtime's.
func (c *Controller) healthPath(backendName string, m *manifest.Manifest) string {
	if m.Runtime.Health != "" {
		return m.Runtime.Health
	}
	spec := backend.Spec{Manifest: m}
	if c.prepare(backendName, &spec) != nil {
		return ""
	}
	return spec.Manifest.Runtime.Health
}
