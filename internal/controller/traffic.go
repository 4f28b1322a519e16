package controller

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/rollout"
	"tandem/internal/store"
)

// A model's revisions and the traffic between them (docs/rollout.md).
//
// Every deploy that changes the spec makes a revision, kept in the store
// (revisionsBucket). The model's main unit is the Deployment in c.deps: it
// is created by the first deploy, updated in place by a plain deploy, and
// replaced by promote. A revision that has a share of the traffic, a tag, a
// header route or the shadow runs as a unit of its own beside it (the
// model's extras): its own pool, autoscaler, instances, rollout counters
// and cost-meter account, so that it scales on its own share. Traffic says
// who gets what; it is stored (trafficBucket) and turned into a plan, an
// immutable routing table the gateway reads per request without locks.

// Store buckets.
const (
	revisionsBucket = "revisions" // "name/revision" -> Revision
	trafficBucket   = "traffic"   // name -> Traffic
)

// DefaultRetention is how many revisions without traffic a model keeps.
const DefaultRetention = 10

// maxTrafficEvents bounds the events a model's traffic keeps.
const maxTrafficEvents = 30

// ErrRevisionNotFound is an unknown revision or tag of a known model.
var ErrRevisionNotFound = fmt.Errorf("revision not found")

func init() {
	problem.Register(ErrRevisionNotFound, http.StatusNotFound, "revision_not_found", 0)
}

// Revision is one stored revision of a model.
type Revision struct {
	Name      string             `json:"name"`
	Revision  string             `json:"revision"`
	CreatedAt time.Time          `json:"created_at"`
	Manifest  *manifest.Manifest `json:"manifest"`
	Metadata  []byte             `json:"metadata,omitempty"`
	// Failed says why a rollout of this revision was rolled back.
	Failed string `json:"failed,omitempty"`
}

// Traffic is how a model's requests are shared between its revisions.
type Traffic struct {
	// Split is each revision's percent of the requests no tag or route
	// decided; it sums to 100.
	Split map[string]int `json:"split"`
	// Tags name revisions: /models/NAME@TAG/... and X-Tandem-Revision.
	Tags map[string]string `json:"tags,omitempty"`
	// Routes send requests carrying a header value to a revision, ahead of
	// the split, first match wins.
	Routes []HeaderRoute `json:"routes,omitempty"`
	// StickyHeader, when set, splits by a hash of that header's value, so
	// one user stays on one revision.
	StickyHeader string `json:"sticky_header,omitempty"`
	// Shadow mirrors a share of the requests to a revision.
	Shadow *ShadowTarget `json:"shadow,omitempty"`
	// Rollout is the progressive rollout in progress, or the last one.
	Rollout *Progress `json:"rollout,omitempty"`
	// Events are the latest changes, newest last.
	Events []TrafficEvent `json:"events,omitempty"`
}

// HeaderRoute sends requests whose Header equals Value to Revision.
type HeaderRoute struct {
	Header   string `json:"header"`
	Value    string `json:"value"`
	Revision string `json:"revision"`
}

// ShadowTarget mirrors Percent of the requests to Revision.
type ShadowTarget struct {
	Revision string `json:"revision"`
	Percent  int    `json:"percent"`
}

// TrafficEvent is one change of a model's traffic.
type TrafficEvent struct {
	At      time.Time `json:"at"`
	Message string    `json:"message"`
}

// HeaderRevision names a revision or tag for protocols whose path has no
// room for NAME@TAG (v2, gRPC, OpenAI, Invoke); the pass-through path
// honours it too.
const HeaderRevision = "X-Tandem-Revision"

// model is what the controller keeps of a model besides its main unit.
// Guarded by Controller.mu.
type model struct {
	traffic *Traffic
	extras  map[string]*Deployment // by revision
}

// plan is a model's routing table; immutable once published.
type plan struct {
	main   *Deployment
	split  []weighted // cumulative, last upto == 100
	byRev  map[string]*Deployment
	tags   map[string]*Deployment
	routes []planRoute
	sticky string
	shadow *Deployment
	shPct  int
}

type weighted struct {
	upto int
	d    *Deployment
}

type planRoute struct {
	header, value string
	d             *Deployment
}

// unitOf returns the running unit of revision rev (nil when none).
func (c *Controller) unitOf(name, rev string) *Deployment {
	if d := c.deps[name]; d != nil && d.Revision() == rev {
		return d
	}
	if m := c.models[name]; m != nil {
		return m.extras[rev]
	}
	return nil
}

// buildPlan turns a model's traffic into its plan. Called with c.mu held.
func (c *Controller) buildPlan(name string) *plan {
	main := c.deps[name]
	m := c.models[name]
	if main == nil || m == nil || m.traffic == nil {
		return nil
	}
	t := m.traffic
	p := &plan{main: main, byRev: map[string]*Deployment{}, tags: map[string]*Deployment{}, sticky: t.StickyHeader}
	p.byRev[main.Revision()] = main
	for rev, d := range m.extras {
		p.byRev[rev] = d
	}
	revs := make([]string, 0, len(t.Split))
	for rev := range t.Split {
		revs = append(revs, rev)
	}
	sort.Strings(revs)
	sum := 0
	for _, rev := range revs {
		d := p.byRev[rev]
		if d == nil || t.Split[rev] <= 0 {
			continue
		}
		sum += t.Split[rev]
		p.split = append(p.split, weighted{upto: sum, d: d})
	}
	if sum < 100 { // a share whose unit is not running goes to main
		p.split = append(p.split, weighted{upto: 100, d: main})
	}
	for tag, rev := range t.Tags {
		if d := p.byRev[rev]; d != nil {
			p.tags[tag] = d
		}
	}
	for _, r := range t.Routes {
		if d := p.byRev[r.Revision]; d != nil {
			p.routes = append(p.routes, planRoute{header: r.Header, value: r.Value, d: d})
		}
	}
	if s := t.Shadow; s != nil && s.Percent > 0 {
		p.shadow, p.shPct = p.byRev[s.Revision], s.Percent
	}
	if len(p.split) == 1 && p.split[0].d == main && len(p.tags) == 0 && len(p.routes) == 0 && p.shadow == nil {
		return nil // all to main: the plain lookup is the plan
	}
	return p
}

// Route picks the deployment unit that serves a request for name, which may
// be "NAME@TAG" (or NAME@REVISION), h being the request's headers: a tag
// (from the name or X-Tandem-Revision), then the header routes, then the
// weighted split (by a hash of the sticky header's value when the plan has
// one). shadow is the unit the request is mirrored to, if any. It is on
// the request path: no lock, no store.
func (c *Controller) Route(name string, h http.Header) (d, shadow *Deployment, err error) {
	base, tag, tagged := strings.Cut(name, "@")
	if !tagged && h != nil {
		tag = h.Get(HeaderRevision)
		tagged = tag != ""
	}
	main, ok := c.Lookup(base)
	if !ok {
		return nil, nil, fmt.Errorf("model %q is not deployed: %w", base, ErrNotFound)
	}
	p := (*c.plans.Load())[base]
	if tagged {
		if d := p.find(main, tag); d != nil {
			return d, nil, nil
		}
		return nil, nil, problem.New(http.StatusNotFound, "revision_not_found",
			fmt.Sprintf("model %q has no running revision or tag %q (see tandem revisions %s)", base, tag, base)).WithField("revision")
	}
	if p == nil {
		return main, nil, nil
	}
	d = p.pick(h)
	if p.shadow != nil && p.shadow != d && rand.IntN(100) < p.shPct {
		shadow = p.shadow
	}
	return d, shadow, nil
}

// find resolves a tag, a revision or a revision's unique prefix (4
// characters at least).
func (p *plan) find(main *Deployment, tag string) *Deployment {
	if p == nil {
		if rev := main.Revision(); rev == tag || (len(tag) >= 4 && strings.HasPrefix(rev, tag)) {
			return main
		}
		return nil
	}
	if d := p.tags[tag]; d != nil {
		return d
	}
	if d := p.byRev[tag]; d != nil {
		return d
	}
	if len(tag) < 4 {
		return nil
	}
	var found *Deployment
	for rev, d := range p.byRev {
		if strings.HasPrefix(rev, tag) {
			if found != nil {
				return nil // ambiguous
			}
			found = d
		}
	}
	return found
}

func (p *plan) pick(h http.Header) *Deployment {
	for _, r := range p.routes {
		if h.Get(r.header) == r.value {
			return r.d
		}
	}
	var n int
	if v := h.Get(p.sticky); p.sticky != "" && v != "" {
		f := fnv.New32a()
		f.Write([]byte(v))
		n = int(f.Sum32() % 100)
	} else {
		n = rand.IntN(100)
	}
	for _, w := range p.split {
		if n < w.upto {
			return w.d
		}
	}
	return p.main
}

// Units returns every running unit of a model, main first (for metrics and
// status; not the request path).
func (c *Controller) Units(name string) []*Deployment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unitsLocked(name)
}

func (c *Controller) unitsLocked(name string) []*Deployment {
	main := c.deps[name]
	if main == nil {
		return nil
	}
	out := []*Deployment{main}
	if m := c.models[name]; m != nil {
		revs := make([]string, 0, len(m.extras))
		for rev := range m.extras {
			revs = append(revs, rev)
		}
		sort.Strings(revs)
		for _, rev := range revs {
			out = append(out, m.extras[rev])
		}
	}
	return out
}

// needed lists the revisions a model's traffic refers to.
func (t *Traffic) needed() map[string]bool {
	need := map[string]bool{}
	for rev, pct := range t.Split {
		if pct > 0 {
			need[rev] = true
		}
	}
	for _, rev := range t.Tags {
		need[rev] = true
	}
	for _, r := range t.Routes {
		need[r.Revision] = true
	}
	if t.Shadow != nil {
		need[t.Shadow.Revision] = true
	}
	if p := t.Rollout; p != nil && p.State.Phase == rollout.Progressing {
		need[p.Revision] = true
	}
	return need
}

func (t *Traffic) event(now time.Time, format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	t.Events = append(t.Events, TrafficEvent{At: now.UTC(), Message: msg})
	if n := len(t.Events); n > maxTrafficEvents {
		t.Events = append([]TrafficEvent(nil), t.Events[n-maxTrafficEvents:]...)
	}
	return msg
}

// modelLocked returns the model entry of name, with traffic all to the
// main unit when it had none. Called with c.mu held.
func (c *Controller) modelLocked(name string) *model {
	m := c.models[name]
	if m == nil {
		m = &model{extras: map[string]*Deployment{}}
		c.models[name] = m
	}
	if m.traffic == nil {
		m.traffic = &Traffic{Split: map[string]int{}}
		if d := c.deps[name]; d != nil {
			m.traffic.Split[d.Revision()] = 100
		}
	}
	return m
}

// syncUnits starts a unit for each revision the traffic needs that has
// none, and retires the extras it no longer needs, then saves the traffic
// and publishes the plan. Called with c.mu held.
func (c *Controller) syncUnits(ctx context.Context, name string) error {
	main := c.deps[name]
	m := c.models[name]
	if main == nil || m == nil || m.traffic == nil {
		return nil
	}
	need := m.traffic.needed()
	mainRev := main.Revision()
	for rev := range need {
		if rev == mainRev || m.extras[rev] != nil {
			continue
		}
		var r Revision
		found, err := c.cfg.Store.GetJSON(revisionsBucket, name+"/"+rev, &r)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("model %q: revision %s: %w", name, rev, ErrRevisionNotFound)
		}
		u, err := c.startExtra(name, &r, nil)
		if err != nil {
			return err
		}
		m.extras[rev] = u
	}
	for rev, u := range m.extras {
		if need[rev] && rev != mainRev {
			continue
		}
		delete(m.extras, rev)
		c.retireUnit(u)
	}
	if err := c.cfg.Store.PutJSON(trafficBucket, name, m.traffic); err != nil {
		return fmt.Errorf("saving the traffic of %q: %w", name, err)
	}
	c.publish()
	return nil
}

// startExtra starts the unit of a stored revision beside the main one.
func (c *Controller) startExtra(name string, r *Revision, adopted []backend.Instance) (*Deployment, error) {
	be, rb, err := c.backendFor(r.Manifest)
	if err != nil {
		return nil, err
	}
	rec := &store.Record{Manifest: r.Manifest, CreatedAt: r.CreatedAt, UpdatedAt: r.CreatedAt, Metadata: r.Metadata}
	rec.Unit, rec.Meter = extraKeys(name, r.Revision)
	u := c.newUnit(rec, be, rb, adopted, rec.Unit, rec.Meter)
	u.log.Info("revision unit started", "revision", r.Revision)
	go u.run()
	return u, nil
}

// extraKeys are the platform and meter keys of a revision's own unit.
func extraKeys(name, rev string) (unit, meter string) {
	short := rev
	if len(short) > 8 {
		short = short[:8]
	}
	return name + "-" + short, name + "@" + rev
}

// retireUnit stops a unit that no longer gets traffic, once the requests
// that were routed to it before the plan changed have taken an instance
// (or after the startup timeout), so that no request fails for it.
func (c *Controller) retireUnit(u *Deployment) {
	c.retiring[u] = struct{}{} // Shutdown stops it too if tandem stops first
	go func() {
		defer func() {
			c.mu.Lock()
			delete(c.retiring, u)
			c.mu.Unlock()
		}()
		select { // let requests routed before the plan changed take an instance
		case <-time.After(time.Second):
		case <-u.ended:
			return
		}
		wait := time.Now().Add(u.Manifest().Timeouts.Startup.D())
		for u.Pool.Queued() > 0 && time.Now().Before(wait) {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-u.ended:
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), u.Manifest().Timeouts.Request.D()+u.Manifest().Timeouts.Grace.D()+time.Minute)
		defer cancel()
		if err := u.shutdown(ctx); err != nil {
			u.log.Warn("revision unit not stopped", "err", err)
		}
		if err := u.act.remove(ctx, u.unit); err != nil {
			u.log.Warn("revision unit objects not removed", "err", err)
		}
		c.cfg.Meter.DeploymentDeleted(u.meter, time.Now())
		u.log.Info("revision unit stopped", "revision", u.Revision())
	}()
}

// putRevision stores a revision of a model and collects old ones: beyond
// Config.Retention, the oldest revisions no traffic refers to are deleted.
// Called with c.mu held.
func (c *Controller) putRevision(r *Revision) error {
	var old Revision
	found, err := c.cfg.Store.GetJSON(revisionsBucket, r.Name+"/"+r.Revision, &old)
	if err != nil {
		return err
	}
	if found {
		r.CreatedAt = old.CreatedAt // a revision deployed again keeps its age
		r.Failed = old.Failed
	}
	if err := c.cfg.Store.PutJSON(revisionsBucket, r.Name+"/"+r.Revision, r); err != nil {
		return fmt.Errorf("saving revision %s of %q: %w", r.Revision, r.Name, err)
	}
	return c.collectRevisions(r.Name, r.Revision)
}

// collectRevisions deletes a model's oldest revisions beyond the retention
// count that neither its traffic nor keep (the one being deployed) needs.
func (c *Controller) collectRevisions(name, keep string) error {
	revs, err := c.storedRevisions(name)
	if err != nil {
		return err
	}
	retain := c.cfg.Retention
	if retain <= 0 {
		retain = DefaultRetention
	}
	need := map[string]bool{keep: true}
	if d := c.deps[name]; d != nil {
		need[d.Revision()] = true
	}
	if m := c.models[name]; m != nil && m.traffic != nil {
		for rev := range m.traffic.needed() {
			need[rev] = true
		}
		if p := m.traffic.Rollout; p != nil {
			need[p.From] = true
		}
	}
	kept := 0
	for _, r := range revs { // newest first
		if need[r.Revision] {
			continue
		}
		if kept < retain {
			kept++
			continue
		}
		if err := c.cfg.Store.DeleteJSON(revisionsBucket, name+"/"+r.Revision); err != nil {
			return err
		}
		c.log.Info("revision collected", "model", name, "revision", r.Revision)
	}
	return nil
}

// storedRevisions returns a model's stored revisions, newest first.
func (c *Controller) storedRevisions(name string) ([]*Revision, error) {
	var out []*Revision
	err := c.cfg.Store.ForEachJSON(revisionsBucket, func() any { return new(Revision) }, func(key string, v any) error {
		if r := v.(*Revision); strings.HasPrefix(key, name+"/") && r.Name == name {
			out = append(out, r)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Revision < out[j].Revision
	})
	return out, err
}

// resolveRevision finds a stored revision of name by tag, full hash or a
// unique prefix of 4 characters at least. Called with c.mu held.
func (c *Controller) resolveRevision(name, ref string) (string, error) {
	if m := c.models[name]; m != nil && m.traffic != nil {
		if rev, ok := m.traffic.Tags[ref]; ok {
			return rev, nil
		}
	}
	revs, err := c.storedRevisions(name)
	if err != nil {
		return "", err
	}
	var found []string
	for _, r := range revs {
		if r.Revision == ref {
			return ref, nil
		}
		if len(ref) >= 4 && strings.HasPrefix(r.Revision, ref) {
			found = append(found, r.Revision)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("model %q has no revision or tag %q (see tandem revisions %s): %w", name, ref, name, ErrRevisionNotFound)
	default:
		return "", problem.New(http.StatusBadRequest, "ambiguous_revision",
			fmt.Sprintf("model %q: %q is the start of %d revisions (%s); give more of it", name, ref, len(found), strings.Join(found, ", "))).WithField("revision")
	}
}

// loadModel reads a model's stored traffic at start. Called with c.mu held.
func (c *Controller) loadModel(name, mainRev string) *model {
	var t Traffic
	found, err := c.cfg.Store.GetJSON(trafficBucket, name, &t)
	if err != nil {
		c.log.Warn("stored traffic unreadable: all of it goes to the main revision", "model", name, "err", err)
	}
	if !found || err != nil {
		return nil
	}
	if t.Split == nil {
		t.Split = map[string]int{mainRev: 100}
	}
	md := &model{traffic: &t, extras: map[string]*Deployment{}}
	c.models[name] = md
	return md
}

// startExtras starts, at start, the units of the revisions a model's
// stored traffic needs, adopting their instances from byRev (and removing
// them from it). Called with c.mu held.
func (c *Controller) startExtras(name string, md *model, byRev map[string][]backend.Instance) {
	if md == nil {
		return
	}
	mainRev := c.deps[name].Revision()
	for rev := range md.traffic.needed() {
		if rev == mainRev {
			continue
		}
		var r Revision
		found, err := c.cfg.Store.GetJSON(revisionsBucket, name+"/"+rev, &r)
		if err != nil || !found {
			c.log.Warn("a revision the traffic names is not stored: its share goes to the main revision", "model", name, "revision", rev, "err", err)
			continue
		}
		u, err := c.startExtra(name, &r, byRev[rev])
		if err != nil {
			c.log.Warn("revision unit cannot run", "model", name, "revision", rev, "err", err)
			continue
		}
		delete(byRev, rev)
		md.extras[rev] = u
	}
}

// tagMain applies a deploy's tag and sticky header to the main revision.
// Called with c.mu held.
func (c *Controller) tagMain(ctx context.Context, d *Deployment, o DeployOptions, now time.Time) error {
	t := c.modelLocked(d.Name).traffic
	if o.Tag != "" {
		if t.Tags == nil {
			t.Tags = map[string]string{}
		}
		t.Tags[o.Tag] = d.Revision()
		t.event(now, "tag %s -> %s", o.Tag, d.Revision())
	}
	if o.StickyHeader != "" {
		t.StickyHeader = http.CanonicalHeaderKey(o.StickyHeader)
	}
	return c.syncUnits(ctx, d.Name)
}

// supersede ends a progressive rollout in progress in t when another
// revision is deployed: its share returns to the main revision. It returns
// the event to record, or "". Called with c.mu held.
func (c *Controller) supersede(main *Deployment, t *Traffic, rev string) string {
	p := t.Rollout
	if p == nil || p.State.Phase != rollout.Progressing || p.Revision == rev {
		return ""
	}
	p.State.Phase, p.State.Reason = rollout.Failed, "superseded by revision "+rev
	c.markFailed(main.Name, p.Revision, p.State.Reason)
	t.Split[main.Revision()] += t.Split[p.Revision]
	delete(t.Split, p.Revision)
	return fmt.Sprintf("rollout of %s superseded by %s", p.Revision, rev)
}

// rename moves what names revision from to revision to (the main unit
// was updated in place).
func (t *Traffic) rename(from, to string) {
	if pct, ok := t.Split[from]; ok {
		delete(t.Split, from)
		t.Split[to] += pct
	}
	for tag, rev := range t.Tags {
		if rev == from {
			t.Tags[tag] = to
		}
	}
	for i := range t.Routes {
		if t.Routes[i].Revision == from {
			t.Routes[i].Revision = to
		}
	}
	if t.Shadow != nil && t.Shadow.Revision == from {
		t.Shadow = nil
	}
}

// forgetModel deletes what the store keeps of a deleted model besides its
// record. Called with c.mu held.
func (c *Controller) forgetModel(name string, units []*Deployment) {
	for _, u := range units {
		if err := c.cfg.Store.DeleteJSON(prewarmBucket, u.meter); err != nil {
			c.log.Warn("prewarm history not deleted", "model", name, "err", err)
		}
	}
	if err := c.cfg.Store.DeleteJSON(trafficBucket, name); err != nil {
		c.log.Warn("traffic not deleted", "model", name, "err", err)
	}
	revs, err := c.storedRevisions(name)
	if err != nil {
		c.log.Warn("revisions not listed", "model", name, "err", err)
	}
	for _, r := range revs {
		if err := c.cfg.Store.DeleteJSON(revisionsBucket, name+"/"+r.Revision); err != nil {
			c.log.Warn("revision not deleted", "model", name, "err", err)
		}
	}
}
