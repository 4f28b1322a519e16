package controller

import (
	"tandem/internal/cache"
	"tandem/internal/manifest"
)

// configureCache sets the deployment's response cache from m, the revision
// the request path now sees: entries of other revisions are dropped at
// once, and a manifest without a cache block turns it off.
func (d *Deployment) configureCache(m *manifest.Manifest) {
	var cfg cache.Config
	if c := m.Cache; c != nil {
		cfg = cache.Config{MaxBytes: int64(c.MaxBytes), TTL: c.TTL.D()}
	}
	d.Cache.Configure(cfg, m.Hash())
}
