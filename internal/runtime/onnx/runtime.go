package onnx

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Image runs tandem's runtime in containers (scripts/docker.sh images onnx).
const Image = "tandem-onnx:latest"

// HealthPath is the runtime's readiness endpoint.
const HealthPath = "/v2/health/ready"

// Runtime is the ONNX runtime's deploy-time knowledge (controller.Runtime):
// it serves runtime.onnx manifests, reads their metadata at deploy time and
// turns them into an instance program: tandem's own `runtime onnx` on
// processes, the tandem-onnx image with the model mounted read-only on
// containers and pods.
type Runtime struct {
	// Self is the tandem binary that processes run.
	Self string
}

// Handles reports whether m names an ONNX model file.
func (Runtime) Handles(m *manifest.Manifest) bool { return m.Runtime.ONNX != "" }

// Describe reads the model's inputs and outputs, named after the deployment.
func (Runtime) Describe(m *manifest.Manifest) (json.RawMessage, error) {
	md, err := Describe(m.Runtime.ONNX)
	if err != nil {
		return nil, fmt.Errorf("runtime.onnx: %w", err)
	}
	md.Name = m.Name
	return json.Marshal(md)
}

// Prepare sets the command (and on containers the image, the model's mount
// and the listen address) and the readiness path.
func (r Runtime) Prepare(backendName string, spec *backend.Spec) error {
	m := spec.Manifest
	cp := *m
	rt := cp.Runtime
	threads := strconv.Itoa(max(rt.Threads, 1))
	switch backendName {
	case manifest.BackendProcess:
		rt.Command = []string{r.Self, "runtime", "onnx", "--model", rt.ONNX, "--name", m.Name, "--threads", threads}
	default:
		target := "/models/" + filepath.Base(rt.ONNX)
		if rt.Image == "" {
			rt.Image = Image
		}
		rt.Command = []string{"/usr/local/bin/tandem", "runtime", "onnx", "--model", target, "--name", m.Name, "--threads", threads}
		spec.Mounts = append(spec.Mounts, backend.Mount{Source: rt.ONNX, Target: target, ReadOnly: true})
		if rt.Network != "host" {
			env := map[string]string{"HOST": "0.0.0.0"}
			for k, v := range rt.Env {
				env[k] = v
			}
			rt.Env = env
		}
	}
	if rt.Health == "" {
		rt.Health = HealthPath
	}
	cp.Runtime = rt
	spec.Manifest = &cp
	return nil
}
