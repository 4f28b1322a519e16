package controller

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/rollout"
)

// Deploying with traffic options, changing the traffic by hand, and the
// progressive rollout's supervisor (docs/rollout.md).

// DeployOptions say how a deploy shares traffic with the model's current
// revision. The zero value is a plain deploy: a changed spec replaces the
// main revision in place (a rolling update).
type DeployOptions struct {
	// Canary, when set, sends this percent of the requests to the new
	// revision and leaves the rest where it was.
	Canary *int `json:"canary,omitempty"`
	// Tag names the new revision; without Canary it gets no untagged
	// traffic (a Knative tag at 0%).
	Tag string `json:"tag,omitempty"`
	// Routes send requests with a header value to a revision (the new one
	// when Revision is empty), ahead of the split.
	Routes []HeaderRoute `json:"routes,omitempty"`
	// Shadow, when set, mirrors this percent of the requests to the new
	// revision.
	Shadow *int `json:"shadow,omitempty"`
	// StickyHeader keeps each value of a header on one revision.
	StickyHeader string `json:"sticky_header,omitempty"`
}

// staged reports whether the options keep the new revision beside the
// current one instead of replacing it.
func (o DeployOptions) staged() bool {
	return o.Canary != nil || o.Tag != "" || len(o.Routes) > 0 || o.Shadow != nil
}

func (o DeployOptions) validate() error {
	bad := func(field, msg string, args ...any) error {
		return problem.New(http.StatusBadRequest, "invalid_traffic", fmt.Sprintf(msg, args...)).WithField(field)
	}
	if o.Canary != nil && (*o.Canary < 0 || *o.Canary > 100) {
		return bad("canary", "canary %d%% is out of range: 0 to 100", *o.Canary)
	}
	if o.Shadow != nil && (*o.Shadow < 0 || *o.Shadow > 100) {
		return bad("shadow", "shadow %d%% is out of range: 0 to 100", *o.Shadow)
	}
	if o.Tag != "" && !tagRE(o.Tag) {
		return bad("tag", "tag %q must be 1-63 characters of a-z, 0-9 and -, starting with a letter", o.Tag)
	}
	for _, r := range o.Routes {
		if r.Header == "" || http.CanonicalHeaderKey(r.Header) == "" {
			return bad("route", "a route needs a header name: HEADER=VALUE")
		}
	}
	return nil
}

// tagRE: tags are DNS labels starting with a letter, so that they never
// look like a revision hash.
func tagRE(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Apply creates or updates a deployment from a validated manifest: a
// plain deploy (Deploy with no options).
func (c *Controller) Apply(ctx context.Context, m *manifest.Manifest) (Result, error) {
	return c.Deploy(ctx, m, DeployOptions{})
}

// stage puts the new revision of an existing model beside its main one, as
// the options (or its rollout block) say. Called with c.mu held.
func (c *Controller) stage(ctx context.Context, main *Deployment, rev *Revision, o DeployOptions, now time.Time) error {
	name := main.Name
	md := c.modelLocked(name)
	t := cloneTraffic(md.traffic) // kept only if all of it applies
	newRev := rev.Revision
	mainRev := main.Revision()
	var msgs []string
	if msg := c.supersede(main, t, newRev); msg != "" {
		msgs = append(msgs, msg)
	}
	switch {
	case o.Canary != nil:
		if err := shiftTo(t, mainRev, newRev, *o.Canary); err != nil {
			return err
		}
		msgs = append(msgs, fmt.Sprintf("canary: %d%% to %s", *o.Canary, newRev))
	case !o.staged() && rev.Manifest.Rollout != nil && t.Rollout != nil && t.Rollout.Revision == newRev && t.Rollout.State.Phase == rollout.Progressing:
		// The same revision deployed again: its rollout goes on.
	case !o.staged() && rev.Manifest.Rollout != nil:
		cfg, err := rolloutConfig(rev.Manifest.Rollout)
		if err != nil {
			return err
		}
		var snap rollout.Snapshot
		if u := md.extras[newRev]; u != nil {
			snap = u.Stats.Snapshot()
		}
		st := rollout.Start(cfg, snap, now)
		if st.Phase == rollout.Failed {
			return problem.New(http.StatusBadRequest, "invalid_manifest", "rollout: "+st.Reason).WithField("rollout")
		}
		if err := shiftTo(t, mainRev, newRev, st.Weight); err != nil {
			return err
		}
		t.Rollout = &Progress{Revision: newRev, From: mainRev, Config: cfg, State: st}
		msgs = append(msgs, fmt.Sprintf("rollout of %s started at %d%%", newRev, st.Weight))
	}
	if o.Tag != "" {
		if t.Tags == nil {
			t.Tags = map[string]string{}
		}
		t.Tags[o.Tag] = newRev
		msgs = append(msgs, fmt.Sprintf("tag %s -> %s", o.Tag, newRev))
	}
	for _, r := range o.Routes {
		r.Header = http.CanonicalHeaderKey(r.Header)
		if r.Revision == "" {
			r.Revision = newRev
		} else {
			rev, err := c.resolveRevision(name, r.Revision)
			if err != nil {
				return err
			}
			r.Revision = rev
		}
		t.Routes = append(withoutRoute(t.Routes, r.Header, r.Value), r)
		msgs = append(msgs, fmt.Sprintf("route %s=%s -> %s", r.Header, r.Value, r.Revision))
	}
	if o.Shadow != nil {
		t.Shadow = &ShadowTarget{Revision: newRev, Percent: *o.Shadow}
		if *o.Shadow == 0 {
			t.Shadow = nil
		}
		msgs = append(msgs, fmt.Sprintf("shadow: %d%% mirrored to %s", *o.Shadow, newRev))
	}
	if o.StickyHeader != "" {
		t.StickyHeader = http.CanonicalHeaderKey(o.StickyHeader)
	}
	for _, msg := range msgs {
		c.log.Info("traffic", "model", name, "change", t.event(now, "%s", msg))
	}
	md.traffic = t
	return c.syncUnits(ctx, name)
}

func withoutRoute(rs []HeaderRoute, header, value string) []HeaderRoute {
	out := rs[:0:0]
	for _, r := range rs {
		if r.Header != header || r.Value != value {
			out = append(out, r)
		}
	}
	return out
}

// shiftTo gives rev pct percent of the split, taken from (or given back
// to) the main revision.
func shiftTo(t *Traffic, mainRev, rev string, pct int) error {
	cur := t.Split[rev]
	if t.Split[mainRev]+cur < pct {
		return problem.New(http.StatusConflict, "traffic_exhausted",
			fmt.Sprintf("the main revision %s has %d%% to give, not %d%%: lower other revisions with tandem rollout --set first", mainRev, t.Split[mainRev]+cur, pct)).WithField("canary")
	}
	t.Split[mainRev] += cur - pct
	t.Split[rev] = pct
	clean(t.Split)
	return nil
}

func clean(split map[string]int) {
	for rev, pct := range split {
		if pct <= 0 {
			delete(split, rev)
		}
	}
}

// TrafficChange is a change of a model's traffic by hand (tandem rollout).
type TrafficChange struct {
	// Set gives revisions (or tags) their percents; revisions not named
	// get 0. The percents sum to 100.
	Set map[string]int `json:"set,omitempty"`
	// Tags names revisions: tag -> revision (or "" to remove the tag).
	Tags map[string]string `json:"tags,omitempty"`
	// Routes adds header routes (Revision "" removes the route).
	Routes []HeaderRoute `json:"routes,omitempty"`
	// Shadow mirrors a share to a revision (Percent 0 stops it).
	Shadow *ShadowTarget `json:"shadow,omitempty"`
	// StickyHeader sets the sticky header; "-" removes it.
	StickyHeader string `json:"sticky_header,omitempty"`
}

// ChangeTraffic applies a change by hand. It ends a progressive rollout
// in progress (a person took over).
func (c *Controller) ChangeTraffic(ctx context.Context, name string, ch TrafficChange) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	main := c.deps[name]
	if main == nil {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	md := c.modelLocked(name)
	t := cloneTraffic(md.traffic)
	now := time.Now()
	if len(ch.Set) > 0 {
		split := map[string]int{}
		sum := 0
		for ref, pct := range ch.Set {
			rev, err := c.resolveRevision(name, ref)
			if err != nil {
				return err
			}
			if pct < 0 || pct > 100 {
				return problem.New(http.StatusBadRequest, "invalid_traffic", fmt.Sprintf("%s=%d: a percent is 0 to 100", ref, pct)).WithField("set")
			}
			split[rev] += pct
			sum += pct
		}
		if sum != 100 {
			return problem.New(http.StatusBadRequest, "invalid_traffic", fmt.Sprintf("the percents sum to %d, not 100", sum)).WithField("set")
		}
		clean(split)
		t.Split = split
		t.event(now, "split set by hand: %s", splitString(split))
	}
	for tag, ref := range ch.Tags {
		if !tagRE(tag) {
			return problem.New(http.StatusBadRequest, "invalid_traffic", fmt.Sprintf("tag %q must be 1-63 characters of a-z, 0-9 and -, starting with a letter", tag)).WithField("tag")
		}
		if ref == "" {
			delete(t.Tags, tag)
			t.event(now, "tag %s removed", tag)
			continue
		}
		rev, err := c.resolveRevision(name, ref)
		if err != nil {
			return err
		}
		if t.Tags == nil {
			t.Tags = map[string]string{}
		}
		t.Tags[tag] = rev
		t.event(now, "tag %s -> %s", tag, rev)
	}
	for _, r := range ch.Routes {
		r.Header = http.CanonicalHeaderKey(r.Header)
		if r.Header == "" {
			return problem.New(http.StatusBadRequest, "invalid_traffic", "a route needs a header name: HEADER=VALUE:REVISION").WithField("route")
		}
		if r.Revision == "" {
			t.Routes = withoutRoute(t.Routes, r.Header, r.Value)
			t.event(now, "route %s=%s removed", r.Header, r.Value)
			continue
		}
		rev, err := c.resolveRevision(name, r.Revision)
		if err != nil {
			return err
		}
		r.Revision = rev
		t.Routes = append(withoutRoute(t.Routes, r.Header, r.Value), r)
		t.event(now, "route %s=%s -> %s", r.Header, r.Value, rev)
	}
	if s := ch.Shadow; s != nil {
		if s.Percent < 0 || s.Percent > 100 {
			return problem.New(http.StatusBadRequest, "invalid_traffic", fmt.Sprintf("shadow %d%% is out of range: 0 to 100", s.Percent)).WithField("shadow")
		}
		if s.Percent == 0 {
			t.Shadow = nil
			t.event(now, "shadow stopped")
		} else {
			rev, err := c.resolveRevision(name, s.Revision)
			if err != nil {
				return err
			}
			t.Shadow = &ShadowTarget{Revision: rev, Percent: s.Percent}
			t.event(now, "shadow: %d%% mirrored to %s", s.Percent, rev)
		}
	}
	switch ch.StickyHeader {
	case "":
	case "-":
		t.StickyHeader = ""
	default:
		t.StickyHeader = http.CanonicalHeaderKey(ch.StickyHeader)
	}
	if p := t.Rollout; p != nil && p.State.Phase == rollout.Progressing && len(ch.Set) > 0 {
		p.State.Phase, p.State.Reason = rollout.Failed, "stopped: traffic set by hand"
		t.event(now, "rollout of %s stopped: traffic set by hand", p.Revision)
	}
	md.traffic = t
	return c.syncUnits(ctx, name)
}

func cloneTraffic(t *Traffic) *Traffic {
	n := *t
	n.Split = map[string]int{}
	for k, v := range t.Split {
		n.Split[k] = v
	}
	if t.Tags != nil {
		n.Tags = map[string]string{}
		for k, v := range t.Tags {
			n.Tags[k] = v
		}
	}
	n.Routes = append([]HeaderRoute(nil), t.Routes...)
	if t.Shadow != nil {
		s := *t.Shadow
		n.Shadow = &s
	}
	if t.Rollout != nil {
		p := *t.Rollout
		n.Rollout = &p
	}
	n.Events = append([]TrafficEvent(nil), t.Events...)
	return &n
}

func splitString(split map[string]int) string {
	revs := make([]string, 0, len(split))
	for rev := range split {
		revs = append(revs, rev)
	}
	sort.Strings(revs)
	parts := make([]string, len(revs))
	for i, rev := range revs {
		parts[i] = fmt.Sprintf("%s=%d%%", rev, split[rev])
	}
	return strings.Join(parts, ",")
}

// Promote makes a revision the model's main one with all the traffic: ref,
// or when empty the revision of the rollout in progress, or else the
// revision with the largest share besides the main one. The revision's
// warm unit takes over as it is (no restart); the old main unit drains and
// stops unless a tag still names it.
func (c *Controller) Promote(ctx context.Context, name, ref string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.promoteLocked(ctx, name, ref, "promoted by hand")
}

func (c *Controller) promoteLocked(ctx context.Context, name, ref, why string) (string, error) {
	main := c.deps[name]
	if main == nil {
		return "", fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	md := c.modelLocked(name)
	t := md.traffic
	rev := ""
	switch {
	case ref != "":
		r, err := c.resolveRevision(name, ref)
		if err != nil {
			return "", err
		}
		rev = r
	case t.Rollout != nil && t.Rollout.State.Phase == rollout.Progressing:
		rev = t.Rollout.Revision
	default:
		best := -1
		for r, pct := range t.Split {
			if r != main.Revision() && pct > best {
				rev, best = r, pct
			}
		}
	}
	if rev == "" {
		return "", problem.New(http.StatusConflict, "nothing_to_promote", fmt.Sprintf("model %q has no revision besides its main one %s; name one", name, main.Revision())).WithField("revision")
	}
	now := time.Now()
	if rev != main.Revision() {
		u := md.extras[rev]
		if u == nil { // a stored revision without a unit: start it cold
			var r Revision
			found, err := c.cfg.Store.GetJSON(revisionsBucket, name+"/"+rev, &r)
			if err != nil {
				return "", err
			}
			if !found {
				return "", fmt.Errorf("model %q: revision %s: %w", name, rev, ErrRevisionNotFound)
			}
			if u, err = c.startExtra(name, &r, nil); err != nil {
				return "", err
			}
		}
		rec := *u.record()
		rec.Unit, rec.Meter = u.unit, u.meter
		rec.CreatedAt = main.record().CreatedAt
		rec.UpdatedAt = now.UTC()
		if err := c.cfg.Store.Put(&rec); err != nil {
			return "", fmt.Errorf("saving deployment: %w", err)
		}
		u.rec.Store(&rec)
		delete(md.extras, rev)
		c.deps[name] = u
		main.isMain.Store(false)
		u.isMain.Store(true)
		if ra, ok := u.act.(replicaActuator); ok && !u.follow.Load() {
			ra.announce(u)
		}
		md.extras[main.Revision()] = main // kept if a tag names it, else retired by syncUnits
	}
	c.markFailed(name, rev, "") // promoted: whatever failed before is over
	if p := t.Rollout; p != nil && p.State.Phase == rollout.Progressing {
		if p.Revision == rev {
			p.State.Phase, p.State.Weight = rollout.Succeeded, 100
		} else {
			p.State.Phase, p.State.Reason = rollout.Failed, "stopped: another revision was promoted"
		}
	}
	t.Split = map[string]int{rev: 100}
	t.Routes = nil
	if t.Shadow != nil && t.Shadow.Revision == rev {
		t.Shadow = nil
	}
	c.log.Info("traffic", "model", name, "change", t.event(now, "%s: %s has 100%%", why, rev))
	return rev, c.syncUnits(ctx, name)
}

// Rollback sends all the traffic back to the main revision and stops the
// others that no tag names; a rollout in progress is marked failed.
func (c *Controller) Rollback(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rollbackLocked(ctx, name, "rolled back by hand")
}

func (c *Controller) rollbackLocked(ctx context.Context, name, why string) error {
	main := c.deps[name]
	if main == nil {
		return fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	md := c.modelLocked(name)
	t := md.traffic
	now := time.Now()
	var left []string
	for rev, pct := range t.Split {
		if rev != main.Revision() && pct > 0 {
			left = append(left, rev)
		}
	}
	sort.Strings(left)
	if p := t.Rollout; p != nil && p.State.Phase == rollout.Progressing {
		p.State.Phase, p.State.Weight = rollout.Failed, 0
		if p.State.Reason == "" {
			p.State.Reason = why
		}
		left = appendUnique(left, p.Revision)
	}
	for _, rev := range left {
		c.markFailed(name, rev, why)
	}
	t.Split = map[string]int{main.Revision(): 100}
	t.Routes = nil
	t.Shadow = nil
	c.log.Warn("traffic", "model", name, "change", t.event(now, "%s: %s has 100%% again (left: %s)", why, main.Revision(), strings.Join(left, ", ")))
	return c.syncUnits(ctx, name)
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func (c *Controller) markFailed(name, rev, why string) {
	var r Revision
	if found, err := c.cfg.Store.GetJSON(revisionsBucket, name+"/"+rev, &r); err != nil || !found {
		return
	}
	r.Failed = why
	if err := c.cfg.Store.PutJSON(revisionsBucket, name+"/"+rev, &r); err != nil {
		c.log.Warn("revision not marked failed", "model", name, "revision", rev, "err", err)
	}
}

// Progress is a progressive rollout: Revision replacing From.
type Progress struct {
	Revision string         `json:"revision"`
	From     string         `json:"from"`
	Config   rollout.Config `json:"config"`
	State    rollout.State  `json:"state"`
}

func rolloutConfig(r *manifest.Rollout) (rollout.Config, error) {
	rate, err := r.ErrorRate()
	if err != nil {
		return rollout.Config{}, problem.New(http.StatusBadRequest, "invalid_manifest", "rollout.max_error_rate: "+err.Error()).WithField("rollout.max_error_rate")
	}
	return rollout.Config{Steps: r.Steps, Interval: r.Interval.D(), MaxErrorRate: rate, MaxP99: r.MaxP99.D(),
		Failures: r.Failures, MinRequests: int64(r.MinRequests)}, nil
}

// superviseRollouts evaluates every progressive rollout each tick: a step
// up, a promotion at the end, or a rollback.
func (c *Controller) superviseRollouts() {
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.evaluateRollouts(time.Now())
	}
}

func (c *Controller) evaluateRollouts(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx := context.Background()
	for name, md := range c.models {
		tr := md.traffic
		if tr == nil || tr.Rollout == nil || tr.Rollout.State.Phase != rollout.Progressing {
			continue
		}
		p := tr.Rollout
		u := md.extras[p.Revision]
		if u == nil {
			continue
		}
		st, changed := rollout.Evaluate(p.State, p.Config, u.Stats.Snapshot(), now)
		if !changed && st.IntervalStart.Equal(p.State.IntervalStart) {
			continue
		}
		p.State = st
		var err error
		switch st.Phase {
		case rollout.Failed:
			c.log.Warn("rollout failed", "model", name, "revision", p.Revision, "reason", st.Reason)
			err = c.rollbackLocked(ctx, name, "rollout failed: "+st.Reason)
		case rollout.Succeeded:
			_, err = c.promoteLocked(ctx, name, p.Revision, "rollout succeeded")
		default:
			if changed {
				if err = shiftTo(tr, c.deps[name].Revision(), p.Revision, st.Weight); err == nil {
					c.log.Info("traffic", "model", name, "change", tr.event(now, "rollout of %s: step %d, %d%%", p.Revision, st.Step+1, st.Weight))
				}
			}
			if err == nil {
				err = c.syncUnits(ctx, name)
			}
		}
		if err != nil {
			c.log.Warn("rollout step", "model", name, "err", err)
		}
	}
}

// RevisionStatus is one revision as `tandem revisions` and `tandem rollout
// status` show it.
type RevisionStatus struct {
	Revision  string    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	// Main is the revision of the model's main unit.
	Main bool `json:"main,omitempty"`
	// Percent is its share of the split; Shadow the share mirrored to it.
	Percent int      `json:"percent"`
	Shadow  int      `json:"shadow,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Routes  []string `json:"routes,omitempty"`
	// State is "running" (a unit runs it), "stopped" or "failed".
	State    string `json:"state"`
	Failed   string `json:"failed,omitempty"`
	Ready    int    `json:"ready"`
	Starting int    `json:"starting"`
	// Requests and the rest are its own traffic since its unit started.
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	Cold      int64   `json:"cold"`
	ErrorRate float64 `json:"error_rate"`
	P99Ms     float64 `json:"p99_ms"`
}

// TrafficStatus is a model's traffic as `tandem rollout status` shows it.
type TrafficStatus struct {
	Name    string           `json:"name"`
	Main    string           `json:"main"`
	Traffic *Traffic         `json:"traffic"`
	Running []RevisionStatus `json:"revisions"`
	// ShadowStats is filled in by the API from the gateway's mirror.
	ShadowStats any `json:"shadow_stats,omitempty"`
}

// Revisions lists a model's stored revisions, newest first, with their
// traffic and the state of their units.
func (c *Controller) Revisions(name string) ([]RevisionStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deps[name] == nil {
		return nil, fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	revs, err := c.storedRevisions(name)
	if err != nil {
		return nil, err
	}
	out := make([]RevisionStatus, 0, len(revs))
	for _, r := range revs {
		out = append(out, c.revisionStatus(name, r.Revision, r.CreatedAt, r.Failed))
	}
	return out, nil
}

// Traffic returns a model's traffic and its running revisions.
func (c *Controller) Traffic(name string) (*TrafficStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	main := c.deps[name]
	if main == nil {
		return nil, fmt.Errorf("model %q: %w", name, ErrNotFound)
	}
	ts := &TrafficStatus{Name: name, Main: main.Revision(), Traffic: cloneTraffic(c.modelLocked(name).traffic)}
	for _, u := range c.unitsLocked(name) {
		var r Revision
		c.cfg.Store.GetJSON(revisionsBucket, name+"/"+u.Revision(), &r)
		ts.Running = append(ts.Running, c.revisionStatus(name, u.Revision(), r.CreatedAt, r.Failed))
	}
	return ts, nil
}

// revisionStatus is called with c.mu held.
func (c *Controller) revisionStatus(name, rev string, created time.Time, failed string) RevisionStatus {
	rs := RevisionStatus{Revision: rev, CreatedAt: created, State: "stopped", Failed: failed}
	if failed != "" {
		rs.State = "failed"
	}
	if main := c.deps[name]; main != nil && main.Revision() == rev {
		rs.Main = true
	}
	if md := c.models[name]; md != nil && md.traffic != nil {
		t := md.traffic
		rs.Percent = t.Split[rev]
		if t.Shadow != nil && t.Shadow.Revision == rev {
			rs.Shadow = t.Shadow.Percent
		}
		for tag, r := range t.Tags {
			if r == rev {
				rs.Tags = append(rs.Tags, tag)
			}
		}
		sort.Strings(rs.Tags)
		for _, r := range t.Routes {
			if r.Revision == rev {
				rs.Routes = append(rs.Routes, r.Header+"="+r.Value)
			}
		}
	} else if rs.Main {
		rs.Percent = 100
	}
	if u := c.unitOf(name, rev); u != nil {
		rs.State = "running"
		st := u.Status()
		rs.Ready, rs.Starting = st.Ready, st.Starting
		snap := u.Stats.Snapshot()
		rs.Requests, rs.Errors, rs.Cold, rs.ErrorRate = snap.Requests, snap.Errors, snap.Cold, snap.ErrorRate()
		if p := snap.Quantile(0.99); p > 0 && p < rollout.Overflow {
			rs.P99Ms = float64(p) / float64(time.Millisecond)
		}
	}
	return rs
}
