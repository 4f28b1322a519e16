package kubernetes

import (
	"tandem/internal/backend"
	"tandem/internal/manifest"
)

var _ backend.Checker = (*Backend)(nil)

// Check refuses, at deploy, the manifest fields this backend cannot
// honour: runtime.network: host, since whether pods share the node's
// network is the server's choice (Config.HostNetwork, tandem serve
// --kube-host-network), the same for every deployment. runtime.workdir is
// not checked: Parse fills it in from the manifest's folder whenever
// runtime.command is set, and in a pod the image's WORKDIR applies. See
// backend.Checker.
func (b *Backend) Check(m *manifest.Manifest) error {
	return check(m, b.cfg)
}

func check(m *manifest.Manifest, cfg Config) error {
	if m.Runtime.Network == "host" && !cfg.HostNetwork {
		return &manifest.Error{Problems: []manifest.Problem{{Field: "runtime.network",
			Message: "the kubernetes backend runs every pod on the cluster's pod network unless tandem itself is told otherwise (tandem serve --kube-host-network, tandem export --host-network); remove runtime.network: host"}}}
	}
	return nil
}
