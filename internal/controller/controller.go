// Package controller owns deployments at run time: it keeps the store, the
// backends and the gateway's routing snapshot in agreement, and runs one
// loop per deployment that applies the autoscaler's decisions. See doc.go.
package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"tandem/internal/backend"
	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/problem"
	"tandem/internal/store"
)

// ErrNotFound is returned for an unknown deployment.
var ErrNotFound = errors.New("model not found")

func init() {
	problem.Register(ErrNotFound, http.StatusNotFound, "model_not_found", 0)
	problem.Register(store.ErrNotFound, http.StatusNotFound, "model_not_found", 0)
	problem.Register(manifest.ErrInvalid, http.StatusBadRequest, "invalid_manifest", 0)
	problem.Register(ErrBackendUnavailable, http.StatusBadRequest, "backend_unavailable", 0)
	problem.Register(ErrCannotFollow, http.StatusNotImplemented, "cannot_follow", 0)
}

// ErrBackendUnavailable means a manifest names a backend this server lacks.
var ErrBackendUnavailable = errors.New("backend not available")

// Config wires a Controller.
type Config struct {
	Store *store.Store
	// Backends by name; DefaultBackend is used when a manifest names none.
	Backends map[string]backend.Backend
	// ReplicaBackends are platforms that run replicas themselves (Kubernetes).
	ReplicaBackends map[string]backend.ReplicaBackend
	DefaultBackend  string
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	// Tick is how often each deployment's autoscaler decides (default 1s).
	Tick time.Duration
	// CatalogInterval is how often deployments kept on a shared replica
	// platform by other tandem processes are read (default 2s).
	CatalogInterval time.Duration
	// Runtimes are the built-in runtimes (ONNX), asked in order.
	Runtimes []Runtime
	// Meter meters instance time and requests for cost reports; nil
	// meters nothing.
	Meter *cost.Meter
	// MaxInstances bounds a deployment's scaling.max: Apply refuses a
	// manifest asking for more (serve's --max-instances). Zero means
	// DefaultMaxInstances.
	MaxInstances int
	// Peers joins the concurrency other tandem processes sharing a replica
	// platform see, so that the leader decides on the sum; nil when this
	// process is alone.
	Peers PeerStats
	// Clock is the time prewarm's schedules and learner read; nil is the
	// loop's own clock. Tests step it.
	Clock func() time.Time
	// Retention is how many revisions without traffic each model keeps in
	// the store (default DefaultRetention).
	Retention int
	// OnDelete, when set, is called with a model's name once it is
	// deleted (here or on a shared platform), to forget what others keep
	// of it (the gateway's shadow counters).
	OnDelete func(name string)
}

// PeerStats carries per-deployment concurrency between tandem processes
// that share a replica platform (see internal/peerstats). Both methods are
// called from deployment loops, once per evaluation, never per request.
type PeerStats interface {
	// Observe hands this process's sample of a deployment to be reported
	// to the leader: avg is the concurrency averaged over dt (the pool's
	// integral, not a point sample), queued the requests waiting now.
	Observe(deployment string, avg float64, dt time.Duration, queued int, now time.Time)
	// Remote returns the summed concurrency the other processes reported
	// for a deployment that is still fresh at now (0 when none).
	Remote(deployment string, now time.Time) float64
}

// DefaultMaxInstances is Config.MaxInstances when unset.
const DefaultMaxInstances = 256

// Controller is safe for concurrent use.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex // serialises Apply, Delete and Start
	deps map[string]*Deployment
	// snap is the gateway's routing table: read per request without locks.
	snap atomic.Pointer[map[string]*Deployment]
	oai  atomic.Pointer[openaiIndex] // the OpenAI names in snap (openai.go)
	// models holds each model's traffic and extra revision units, and
	// plans their routing tables, read per request (traffic.go).
	models map[string]*model
	plans  atomic.Pointer[map[string]*plan]
	// retiring holds the units retireUnit is stopping, so that Shutdown
	// stops them too when tandem stops first.
	retiring map[*Deployment]struct{}

	done     chan struct{} // closed by Shutdown: background loops end
	doneOnce sync.Once
	// deletedAt keeps when names were deleted here, so that a listing of a
	// shared platform taken before the delete does not bring them back.
	deletedAt map[string]time.Time
}

// New returns a controller; call Start to load and reconcile the store.
func New(cfg Config) *Controller {
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.CatalogInterval <= 0 {
		cfg.CatalogInterval = 2 * time.Second
	}
	if cfg.MaxInstances <= 0 {
		cfg.MaxInstances = DefaultMaxInstances
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "controller"), deps: map[string]*Deployment{}, done: make(chan struct{}),
		deletedAt: map[string]time.Time{}, models: map[string]*model{}, retiring: map[*Deployment]struct{}{}}
	c.publish()
	cfg.Metrics.RegisterGauges(c)
	cfg.Metrics.Registry.MustRegister(revisionMetrics{c})
	return c
}

// Start loads every stored deployment, adopts the instances an earlier
// tandem left running when they match (and stops those that do not), and
// starts each deployment's loop.
func (c *Controller) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs, err := c.cfg.Store.List()
	if err != nil {
		return err
	}
	// What each backend found, by backend and deployment.
	type key struct{ backend, deployment string }
	adopt := map[key][]backend.Instance{}
	for name, be := range c.cfg.Backends {
		found, err := be.Recover(ctx)
		if err != nil {
			c.log.Warn("recover instances", "backend", name, "err", err)
			continue
		}
		for _, in := range found {
			k := key{name, in.Deployment}
			adopt[k] = append(adopt[k], in)
		}
	}
	for _, r := range recs {
		be, rb, err := c.backendFor(r.Manifest)
		if err != nil {
			c.log.Error("stored deployment cannot run", "model", r.Manifest.Name, "err", err)
			continue
		}
		name := r.Manifest.Name
		md := c.loadModel(name, r.Manifest.Hash())
		if rb != nil {
			d := c.newDeployment(r, nil, rb, nil)
			c.deps[name] = d
			go d.run()
			c.startExtras(name, md, nil)
			continue
		}
		k := key{be.Name(), name}
		byRev := map[string][]backend.Instance{}
		for _, in := range adopt[k] {
			byRev[in.Revision] = append(byRev[in.Revision], in)
		}
		delete(adopt, k)
		d := c.newDeployment(r, be, nil, byRev[r.Manifest.Hash()])
		delete(byRev, r.Manifest.Hash())
		c.deps[name] = d
		go d.run()
		c.startExtras(name, md, byRev)
		for _, ins := range byRev {
			for _, in := range ins {
				c.stopOrphan(ctx, be, in)
			}
		}
		if err := c.putRevision(&Revision{Name: name, Revision: r.Manifest.Hash(), CreatedAt: r.UpdatedAt, Manifest: r.Manifest, Metadata: r.Metadata}); err != nil {
			c.log.Warn("revision not recorded", "model", name, "err", err)
		}
	}
	for k, ins := range adopt {
		for _, in := range ins {
			c.stopOrphan(ctx, c.cfg.Backends[k.backend], in)
		}
	}
	c.publish()
	for _, rb := range c.cfg.ReplicaBackends {
		if cat, ok := rb.(backend.Catalog); ok {
			go c.syncCatalog(rb, cat)
		}
	}
	go c.superviseRollouts()
	return nil
}

func (c *Controller) stopOrphan(ctx context.Context, be backend.Backend, in backend.Instance) {
	c.log.Info("stopping orphan instance", "backend", be.Name(), "model", in.Deployment, "instance", in.ID)
	if err := be.Stop(ctx, in.ID, 5*time.Second); err != nil {
		c.log.Warn("stop orphan", "instance", in.ID, "err", err)
	}
}

// backendFor returns the backend that runs m: an instance backend, or a
// replica backend (exactly one of the two is set).
func (c *Controller) backendFor(m *manifest.Manifest) (backend.Backend, backend.ReplicaBackend, error) {
	name := m.Backend
	if name == "" {
		name = c.cfg.DefaultBackend
	}
	if be, ok := c.cfg.Backends[name]; ok {
		return be, nil, nil
	}
	if rb, ok := c.cfg.ReplicaBackends[name]; ok {
		return nil, rb, nil
	}
	return nil, nil, fmt.Errorf("backend %q is not enabled on this server (enabled: %v): %w", name, c.backendNames(), ErrBackendUnavailable)
}

func (c *Controller) backendNames() []string {
	var names []string
	for n := range c.cfg.Backends {
		names = append(names, n)
	}
	for n := range c.cfg.ReplicaBackends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Result says what Apply did.
type Result string

// Apply results.
const (
	Created   Result = "created"
	Updated   Result = "updated"
	Unchanged Result = "unchanged"
)

// Deploy creates or updates a model from a validated manifest. A changed
// spec makes a new revision: with no options (and no rollout block) it
// replaces the main revision in place; with options, or a rollout block,
// it runs beside it and gets the traffic they say (rollout.go).
func (c *Controller) Deploy(ctx context.Context, m *manifest.Manifest, o DeployOptions) (Result, error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	if err := o.validate(); err != nil {
		return "", err
	}
	if limit := c.cfg.MaxInstances; m.Scaling.Max > limit {
		return "", problem.New(http.StatusBadRequest, "invalid_manifest",
			fmt.Sprintf("model %q: scaling.max %d is above this server's limit of %d instances per deployment; lower scaling.max or start tandem serve with a higher --max-instances",
				m.Name, m.Scaling.Max, limit)).WithField("scaling.max")
	}
	be, rb, err := c.backendFor(m)
	if err != nil {
		return "", err
	}
	if err := checkFields(m, be, rb); err != nil {
		return "", err
	}
	if b := m.Burst; b != nil {
		bbe, ok := c.cfg.Backends[b.Backend]
		if !ok {
			return "", fmt.Errorf("model %q: burst.backend %q is not enabled on this server (enabled: %v): %w", m.Name, b.Backend, c.backendNames(), ErrBackendUnavailable)
		}
		if err := checkFields(m.BurstManifest(), bbe, nil); err != nil {
			return "", err
		}
	}
	beName := backendName(be, rb)
	var meta json.RawMessage
	if meta, err = c.describe(m); err != nil {
		return "", fmt.Errorf("model %q: reading the model: %w", m.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UTC()
	rev := m.Hash()
	d, exists := c.deps[m.Name]
	if exists && d.backendName() != beName {
		return "", problem.New(http.StatusConflict, "backend_change",
			fmt.Sprintf("model %q runs on backend %s; delete it before deploying it on %s", m.Name, d.backendName(), beName)).WithField("backend")
	}
	if !exists && (o.Canary != nil || o.Shadow != nil || len(o.Routes) > 0) {
		return "", problem.New(http.StatusBadRequest, "invalid_traffic",
			fmt.Sprintf("model %q is not deployed yet: its first revision gets all the traffic (--canary, --shadow and --route need a revision to share with)", m.Name)).WithField("canary")
	}
	if exists && d.Revision() == rev {
		if o.Tag == "" && o.StickyHeader == "" {
			return Unchanged, nil
		}
		return Unchanged, c.tagMain(ctx, d, o, now)
	}
	if err := c.openaiClash(m); err != nil {
		return "", err
	}
	revRec := &Revision{Name: m.Name, Revision: rev, CreatedAt: now, Manifest: m, Metadata: meta}
	if exists && (o.staged() || m.Rollout != nil) {
		if err := c.putRevision(revRec); err != nil {
			return "", err
		}
		if err := c.stage(ctx, d, revRec, o, now); err != nil {
			return "", err
		}
		return Updated, nil
	}
	if exists {
		if md := c.models[m.Name]; md != nil && md.extras[rev] != nil {
			// Deployed plainly while running beside the main one: promote.
			if err := c.putRevision(revRec); err != nil {
				return "", err
			}
			if _, err := c.promoteLocked(ctx, m.Name, rev, "deployed"); err != nil {
				return "", err
			}
			return Updated, nil
		}
	}
	rec := &store.Record{Manifest: m, CreatedAt: now, UpdatedAt: now, Metadata: meta}
	if exists {
		old := d.record()
		rec.CreatedAt, rec.Unit, rec.Meter = old.CreatedAt, old.Unit, old.Meter
	}
	if err := c.cfg.Store.Put(rec); err != nil {
		return "", fmt.Errorf("saving deployment: %w", err)
	}
	if exists {
		oldRev := d.Revision()
		d.follow.Store(false) // this process was asked: it applies the objects
		d.update(rec)
		if md := c.models[m.Name]; md != nil && md.traffic != nil {
			// The main unit carries its share, tags and routes over.
			md.traffic.rename(oldRev, rev)
			if err := c.syncUnits(ctx, m.Name); err != nil {
				c.log.Warn("traffic", "model", m.Name, "err", err)
			}
		}
		if err := c.putRevision(revRec); err != nil {
			c.log.Warn("revision not recorded", "model", m.Name, "err", err)
		}
		c.publish() // the openai block may have changed
		if o.StickyHeader != "" {
			return Updated, c.tagMain(ctx, d, o, now)
		}
		return Updated, nil
	}
	d = c.newDeployment(rec, be, rb, nil)
	c.deps[m.Name] = d
	if err := c.putRevision(revRec); err != nil {
		c.log.Warn("revision not recorded", "model", m.Name, "err", err)
	}
	c.publish()
	go d.run()
	if o.Tag != "" || o.StickyHeader != "" {
		return Created, c.tagMain(ctx, d, o, now)
	}
	return Created, nil
}

// Delete stops every instance of a deployment and forgets it. It blocks
// until the instances have stopped or ctx is done.
func (c *Controller) Delete(ctx context.Context, name string) error {
	c.mu.Lock()
	d, ok := c.deps[name]
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	if err := c.cfg.Store.Delete(name); err != nil {
		c.mu.Unlock()
		return err
	}
	units := c.dropLocked(name)
	c.deletedAt[name] = time.Now()
	c.publish()
	c.mu.Unlock()
	d.Cache.Purge()
	return c.stopUnits(ctx, name, units, true)
}

// dropLocked forgets a model: its units leave the routing tables and what
// the store keeps of it besides its record goes. It returns the units,
// main first, for stopUnits. Called with c.mu held.
func (c *Controller) dropLocked(name string) []*Deployment {
	units := c.unitsLocked(name)
	delete(c.deps, name)
	delete(c.models, name)
	c.forgetModel(name, units)
	return units
}

// stopUnits stops a dropped model's units, removes their platform objects
// (the main unit's only when removeMain: a model deleted on a shared
// platform has lost them already) and forgets its metrics.
func (c *Controller) stopUnits(ctx context.Context, name string, units []*Deployment, removeMain bool) error {
	errs := make([]error, len(units))
	var wg sync.WaitGroup
	for i, u := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = u.shutdown(ctx)
			if errs[i] == nil && (i > 0 || removeMain) {
				errs[i] = u.act.remove(ctx, u.unit)
			}
			c.cfg.Meter.DeploymentDeleted(u.meter, time.Now())
		}()
	}
	wg.Wait()
	c.cfg.Metrics.Forget(name)
	if c.cfg.OnDelete != nil {
		c.cfg.OnDelete(name)
	}
	return errors.Join(errs...)
}

// Shutdown stops every instance of every deployment (tandem is stopping).
func (c *Controller) Shutdown(ctx context.Context) error {
	c.doneOnce.Do(func() { close(c.done) })
	c.mu.Lock()
	deps := make([]*Deployment, 0, len(c.deps))
	for name := range c.deps {
		deps = append(deps, c.unitsLocked(name)...)
	}
	for u := range c.retiring {
		deps = append(deps, u)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(deps))
	for i, d := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.shutdown(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Controller) publish() {
	m := make(map[string]*Deployment, len(c.deps))
	for k, v := range c.deps {
		m[k] = v
	}
	c.snap.Store(&m)
	c.oai.Store(buildOpenAI(m, c.log))
	plans := map[string]*plan{}
	for name := range c.models {
		if p := c.buildPlan(name); p != nil {
			plans[name] = p
		}
	}
	c.plans.Store(&plans)
}

// Lookup returns a deployment by name without locking (request path).
func (c *Controller) Lookup(name string) (*Deployment, bool) {
	d, ok := (*c.snap.Load())[name]
	return d, ok
}

// Names returns the deployed names, sorted.
func (c *Controller) Names() []string {
	m := *c.snap.Load()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Status returns one deployment's status.
func (c *Controller) Status(name string) (*Status, error) {
	d, ok := c.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	return d.Status(), nil
}

// List returns every deployment's status, by name.
func (c *Controller) List() []*Status {
	var out []*Status
	for _, n := range c.Names() {
		if d, ok := c.Lookup(n); ok {
			out = append(out, d.Status())
		}
	}
	return out
}

// Logs writes a deployment's instance output.
func (c *Controller) Logs(ctx context.Context, name string, tail int, w io.Writer) error {
	d, ok := c.Lookup(name)
	if !ok {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	lr, _ := d.act.backend().(backend.LogReader)
	if lr == nil {
		return fmt.Errorf("backend %s keeps no logs", d.backendName())
	}
	return lr.Logs(ctx, name, tail, w)
}

// ErrCannotFollow says a deployment's backend cannot stream its logs.
var ErrCannotFollow = errors.New("backend cannot follow logs")

// FollowLogs writes a deployment's logs like Logs, then its instances'
// output as they write it (see backend.LogFollower), until ctx ends, the
// deployment is deleted or tandem stops. It blocks; flush is called after
// each batch of lines.
func (c *Controller) FollowLogs(ctx context.Context, name string, tail int, w io.Writer, flush func()) error {
	d, ok := c.Lookup(name)
	if !ok {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	lf, _ := d.act.backend().(backend.LogFollower)
	if lf == nil {
		return fmt.Errorf("%s: %w", d.backendName(), ErrCannotFollow)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The deployment's loop ends when it is deleted or tandem stops; this
	// goroutine ends with the follow either way.
	go func() {
		select {
		case <-d.ended:
			cancel()
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return lf.FollowLogs(ctx, name, tail, w, flush)
}

// Gauges implements metrics.GaugeSource.
// A model's figures are the sum over its running revisions.
func (c *Controller) Gauges(fn func(model string, inflight, queued int, instances map[string]int)) {
	for name, main := range *c.snap.Load() {
		var inflight, queued int
		inst := map[string]int{"starting": 0, "ready": 0, "draining": 0}
		for _, d := range c.unitsOf(name, main) {
			st := d.Status()
			inflight += st.InFlight
			queued += st.Queued
			inst["starting"] += st.Starting
			inst["ready"] += st.Ready
			inst["draining"] += st.Draining
		}
		fn(name, inflight, queued, inst)
	}
}

func newID(name string) string {
	var b [4]byte
	rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

func backendName(be backend.Backend, rb backend.ReplicaBackend) string {
	if be != nil {
		return be.Name()
	}
	return rb.Name()
}
