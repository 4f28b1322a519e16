package controller

import (
	"context"
	"encoding/json"
	"time"

	"tandem/internal/backend"
	"tandem/internal/store"
)

// syncCatalog follows the deployments other tandem processes keep on a
// shared platform: new ones are adopted, newer revisions followed, and ones
// deleted there forgotten here.
func (c *Controller) syncCatalog(rb backend.ReplicaBackend, cat backend.Catalog) {
	t := time.NewTicker(c.cfg.CatalogInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		listed := time.Now()
		recs, err := cat.Annotation(ctx, AnnotationRecord)
		cancel()
		if err != nil {
			c.log.Debug("reading the shared catalog", "backend", rb.Name(), "err", err)
		} else {
			c.mergeCatalog(rb, recs, listed)
		}
		select {
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

// mergeCatalog applies a listing of the platform taken at listed.
func (c *Controller) mergeCatalog(rb backend.ReplicaBackend, recs map[string]string, listed time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	// The catalog is keyed by object name: a model's main unit is named as
	// the model, or, after a promote, as the promoted revision's unit
	// (rec.Unit). Canary units carry no record.
	byModel := map[string]*store.Record{}
	for obj, raw := range recs {
		var rec store.Record
		if raw == "" || json.Unmarshal([]byte(raw), &rec) != nil || rec.Manifest == nil {
			continue
		}
		if unit := rec.Unit; unit == "" && rec.Manifest.Name != obj || unit != "" && unit != obj {
			continue
		}
		if rec.Manifest.Validate() != nil {
			continue
		}
		if prev := byModel[rec.Manifest.Name]; prev == nil || rec.UpdatedAt.After(prev.UpdatedAt) {
			byModel[rec.Manifest.Name] = &rec
		}
	}
	for name, rec := range byModel {
		if at, ok := c.deletedAt[name]; ok && !at.Before(listed) {
			continue // deleted here after the listing began
		}
		d, ok := c.deps[name]
		unit := rec.Unit
		if unit == "" {
			unit = name
		}
		switch {
		case !ok:
			if err := c.cfg.Store.Put(rec); err != nil {
				c.log.Warn("saving a followed deployment", "model", name, "err", err)
				continue
			}
			d = c.newDeployment(rec, nil, rb, nil)
			d.follow.Store(true)
			// Seen on the platform by this listing: a later listing
			// without it forgets it, even when its objects went before
			// its loop first read them (it would retry for ever).
			d.seenAt.Store(listed.UnixNano())
			c.deps[name] = d
			c.publish()
			c.log.Info("following a deployment from the shared platform", "model", name, "revision", rec.Manifest.Hash())
			go d.run()
		case d.act.backend() == any(rb) && d.unit != unit && rec.UpdatedAt.After(d.record().UpdatedAt):
			// Another tandem promoted a revision unit: follow that one.
			if err := c.cfg.Store.Put(rec); err != nil {
				continue
			}
			nd := c.newDeployment(rec, nil, rb, nil)
			nd.follow.Store(true)
			nd.seenAt.Store(listed.UnixNano())
			c.deps[name] = nd
			c.publish()
			c.log.Info("following a promoted revision from the shared platform", "model", name, "revision", rec.Manifest.Hash(), "unit", unit)
			go nd.run()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				d.shutdown(ctx)
			}()
		case d.act.backend() == any(rb) && d.unit == unit && d.Manifest().Hash() != rec.Manifest.Hash() && rec.UpdatedAt.After(d.record().UpdatedAt):
			if err := c.cfg.Store.Put(rec); err != nil {
				continue
			}
			d.follow.Store(true)
			d.update(rec)
			c.publish()
		}
	}
	for name, d := range c.deps {
		// Gone only if the platform had the objects before the listing
		// began: a deployment applied meanwhile is not in it yet.
		seen := d.seenAt.Load()
		if _, ok := byModel[name]; ok || d.act.backend() != any(rb) || seen == 0 || seen >= listed.UnixNano() {
			continue
		}
		c.log.Info("deployment deleted on the shared platform", "model", name)
		c.cfg.Store.Delete(name)
		units := c.dropLocked(name)
		c.publish()
		d.Cache.Purge()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c.stopUnits(ctx, name, units, false)
		}()
	}
}
