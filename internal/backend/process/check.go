package process

import (
	"tandem/internal/backend"
	"tandem/internal/manifest"
)

var _ backend.Checker = (*Backend)(nil)

// Check refuses the manifest fields a local process cannot honour, so
// that a deploy fails instead of running without them: a container image
// and the arguments for its entrypoint, CPU and GPU limits, and a memory
// limit where this machine has no cgroup for it. runtime.network: host is
// what a process has anyway. See backend.Checker.
func (b *Backend) Check(m *manifest.Manifest) error {
	var probs []manifest.Problem
	bad := func(field, msg string) {
		probs = append(probs, manifest.Problem{Field: field, Message: "the process backend " + msg})
	}
	r := m.Runtime
	if r.Image != "" {
		bad("runtime.image", "runs runtime.command on this machine and cannot run an image; remove runtime.image or use backend docker or kubernetes")
	}
	if len(r.Args) > 0 {
		bad("runtime.args", "runs runtime.command as written; put the arguments in runtime.command")
	}
	if m.Resources.CPU > 0 {
		bad("resources.cpu", "cannot limit CPU (processes use the machine's CPUs); remove resources.cpu or use backend docker or kubernetes")
	}
	if m.Resources.GPUs > 0 {
		bad("resources.gpus", "cannot reserve GPUs (processes see the machine's GPUs); remove resources.gpus or use backend docker or kubernetes")
	}
	if m.Resources.Memory > 0 && !b.cg.supported() {
		bad("resources.memory", "cannot limit memory on this machine ("+b.cg.why+"); remove resources.memory, run tandem as root with a cgroup memory controller, or use backend docker or kubernetes")
	}
	if len(probs) > 0 {
		return &manifest.Error{Problems: probs}
	}
	return nil
}
