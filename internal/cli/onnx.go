package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"tandem/internal/backend"
	"tandem/internal/controller"
	"tandem/internal/inference"
	"tandem/internal/manifest"
	"tandem/internal/runtime/onnx"
)

// OnnxImage runs tandem's runtime in containers (scripts/docker.sh images onnx).
const OnnxImage = "tandem-onnx:latest"

func runtimeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "runtime",
		Short: "Built-in model servers that backends start as instances",
	}
	c.AddCommand(onnx.Command())
	return c
}

// describeModel reads an ONNX model's inputs and outputs at deploy time,
// so v2 metadata and validation never wake an instance.
func describeModel(m *manifest.Manifest) (json.RawMessage, error) {
	if m.Runtime.ONNX == "" {
		return nil, nil
	}
	md, err := onnx.Describe(m.Runtime.ONNX)
	if err != nil {
		return nil, fmt.Errorf("runtime.onnx: %w", err)
	}
	md.Name = m.Name
	return json.Marshal(md)
}

// prepareSpec turns a runtime.onnx deployment into an instance program:
// tandem's own `runtime onnx` on processes, the tandem-onnx image with the
// model mounted read-only on containers.
func prepareSpec(self string) func(string, *backend.Spec) error {
	return func(backendName string, spec *backend.Spec) error {
		m := spec.Manifest
		if m.Runtime.ONNX == "" {
			return nil
		}
		cp := *m
		rt := cp.Runtime
		threads := strconv.Itoa(max(rt.Threads, 1))
		switch backendName {
		case manifest.BackendProcess:
			rt.Command = []string{self, "runtime", "onnx", "--model", rt.ONNX, "--name", m.Name, "--threads", threads}
		default:
			target := "/models/" + filepath.Base(rt.ONNX)
			if rt.Image == "" {
				rt.Image = OnnxImage
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
			rt.Health = "/v2/health/ready"
		}
		cp.Runtime = rt
		spec.Manifest = &cp
		return nil
	}
}

// v2Models shows deployments to the Open Inference Protocol endpoints.
type v2Models struct{ c *controller.Controller }

var _ inference.Models = v2Models{}

func decodeMetadata(raw json.RawMessage) any {
	if len(raw) == 0 {
		return (*inference.ModelMetadata)(nil)
	}
	var md inference.ModelMetadata
	if json.Unmarshal(raw, &md) != nil {
		return (*inference.ModelMetadata)(nil)
	}
	return &md
}

func (v v2Models) Model(name string) (inference.Model, bool) {
	d, ok := v.c.Lookup(name)
	if !ok {
		return inference.Model{}, false
	}
	return inference.Model{
		Name:     name,
		Ready:    func() bool { return len(d.Pool.Ready()) > 0 },
		Metadata: d.DecodedMetadata(decodeMetadata).(*inference.ModelMetadata),
		Batching: d.Manifest().Batching,
		Upstream: d.Pool,
	}, true
}

func (v v2Models) Names() []string { return v.c.Names() }
