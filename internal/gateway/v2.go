package gateway

import (
	"encoding/json"

	"tandem/internal/inference"
)

// V2Models shows the gateway's deployments to the Open Inference Protocol
// endpoints (inference.Models): metadata cached at deploy time, readiness
// from the pool, and an Upstream that runs calls through the activator
// with the deployment's timeouts and retries.
type V2Models struct{ g *Gateway }

var _ inference.Models = V2Models{}

// V2Models returns the v2 endpoints' view of the gateway's models.
func (g *Gateway) V2Models() V2Models { return V2Models{g} }

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

// Model returns the deployment called name as the v2 endpoints see it.
func (v V2Models) Model(name string) (inference.Model, bool) {
	d, ok := v.g.models.Lookup(name)
	if !ok {
		return inference.Model{}, false
	}
	return inference.Model{
		Name:     name,
		Ready:    func() bool { return len(d.Pool.Ready()) > 0 },
		Metadata: d.DecodedMetadata(decodeMetadata).(*inference.ModelMetadata),
		Batching: d.Manifest().Batching,
		Upstream: upstream{g: v.g, d: d},
	}, true
}

// Names lists the deployed models.
func (v V2Models) Names() []string { return v.g.models.Names() }
