package controller

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"tandem/internal/manifest"
	"tandem/internal/problem"
)

// OpenAIModel is one name an OpenAI client may send in a request's model
// field: a deployment with an openai block, by its own name or an alias.
type OpenAIModel struct {
	ID         string
	Deployment *Deployment
	// Created is when the deployment was first applied.
	Created time.Time
}

// openaiIndex is the OpenAI routes' view of the routing snapshot, built
// with it by publish and read per request without locks.
type openaiIndex struct {
	byID   map[string]*Deployment
	models []OpenAIModel // sorted by ID
}

// buildOpenAI indexes the OpenAI names of deps. Apply refuses a name that
// another deployment serves; should two still claim one (followed from a
// shared platform, or stored by an older tandem), the deployment whose own
// name sorts first keeps it, and the clash is logged.
func buildOpenAI(deps map[string]*Deployment, log *slog.Logger) *openaiIndex {
	names := make([]string, 0, len(deps))
	for n, d := range deps {
		if d.Manifest().OpenAI != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	ix := &openaiIndex{byID: make(map[string]*Deployment, len(names))}
	for _, n := range names {
		d := deps[n]
		created := d.record().CreatedAt
		for _, id := range d.Manifest().OpenAINames() {
			if other, ok := ix.byID[id]; ok {
				if log != nil {
					log.Warn("OpenAI model name served by two deployments; the first keeps it", "name", id, "kept", other.Manifest().Name, "ignored", n)
				}
				continue
			}
			ix.byID[id] = d
			ix.models = append(ix.models, OpenAIModel{ID: id, Deployment: d, Created: created})
		}
	}
	sort.Slice(ix.models, func(i, j int) bool { return ix.models[i].ID < ix.models[j].ID })
	return ix
}

// LookupOpenAI returns the deployment that serves an OpenAI model name (a
// deployment's own name or an alias; only deployments with an openai
// block). It does not block or lock (request path).
func (c *Controller) LookupOpenAI(id string) (*Deployment, bool) {
	ix := c.oai.Load()
	if ix == nil {
		return nil, false
	}
	d, ok := ix.byID[id]
	return d, ok
}

// OpenAIModels lists the names OpenAI clients may send, sorted. The slice
// is shared: callers must not modify it.
func (c *Controller) OpenAIModels() []OpenAIModel {
	if ix := c.oai.Load(); ix != nil {
		return ix.models
	}
	return nil
}

// openaiClash returns a 409 when m would take an OpenAI name another
// deployment serves. The caller holds c.mu.
func (c *Controller) openaiClash(m *manifest.Manifest) error {
	ids := m.OpenAINames()
	if len(ids) == 0 {
		return nil
	}
	for name, d := range c.deps {
		if name == m.Name {
			continue
		}
		for _, theirs := range d.Manifest().OpenAINames() {
			for i, id := range ids {
				if id != theirs {
					continue
				}
				field := "name"
				if i > 0 {
					field = fmt.Sprintf("openai.models[%d]", i-1)
				}
				return problem.New(http.StatusConflict, "openai_name_taken",
					fmt.Sprintf("model %q: OpenAI model name %q is already served by deployment %q; pick another alias or change that deployment first", m.Name, id, name)).WithField(field)
			}
		}
	}
	return nil
}
