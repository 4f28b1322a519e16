package docker

import (
	"fmt"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

var _ backend.Checker = (*Backend)(nil)

// Check refuses, at deploy, the manifest fields this engine cannot honour:
// resources.gpus without an NVIDIA runtime (Start would fail on each
// instance). runtime.workdir is not checked: Parse fills it in from the
// manifest's folder whenever runtime.command is set, and in a container
// the image's WORKDIR applies. See backend.Checker.
func (b *Backend) Check(m *manifest.Manifest) error {
	if m.Resources.GPUs > 0 && !b.nvidia {
		return &manifest.Error{Problems: []manifest.Problem{{Field: "resources.gpus",
			Message: fmt.Sprintf("the docker backend cannot give %d GPUs: the engine has no NVIDIA runtime (install the NVIDIA Container Toolkit)", m.Resources.GPUs)}}}
	}
	return nil
}
