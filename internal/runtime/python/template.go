package python

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// ContainTemplate is the Containment of an instance forked from a
// template: its own process group, killed with the template.
const ContainTemplate = "template"

// TemplateConfig configures Templates.
type TemplateConfig struct {
	// DataDir is the process backend's data folder: instance logs go to
	// logs/<deployment>/<id>.log there (so `tandem logs` shows them), the
	// template's own to logs/<deployment>/template.log.
	DataDir string
	// Logger receives the decorator's messages; nil means slog.Default().
	Logger *slog.Logger
	// Live reports whether a deployment's revision is still deployed; a
	// template of one that is not is ended once its last instance has.
	// Nil means always.
	Live func(deployment, revision string) bool
	// Meter, when set, is told when a template starts and ends (it is
	// priced as idle memory).
	Meter TemplateMeter
}

// TemplateMeter is told about templates' lives (internal/cost).
type TemplateMeter interface {
	TemplateStarted(deployment string, at time.Time)
	TemplateEnded(deployment string, at time.Time)
}

// Templates is a backend decorator (around the process backend) that
// starts the instances of a manifest with runtime.template as forks of a
// template process: one per deployment revision, which has imported the
// code (and loaded the model) once. The fork is asked for by tandem itself,
// over a socket pair whose other end only the template holds, so a cold
// start pays no exec of a helper. Other specs go to the inner backend. It
// is safe for concurrent use.
type Templates struct {
	backend.Backend
	cfg TemplateConfig
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	tpls   map[string]*template // by deployment/revision
	insts  map[string]*forked   // by instance id, ended ones for a while
	ended  []string             // ids of ended instances in insts, oldest first
	quit   chan struct{}        // closed by Close
	ports  []int
}

var (
	_ backend.Backend      = (*Templates)(nil)
	_ backend.LogFollower  = (*Templates)(nil)
	_ backend.Checker      = (*Templates)(nil)
	_ prometheus.Collector = (*Templates)(nil)
)

// Wrap returns inner with templates in front of it.
func Wrap(inner backend.Backend, cfg TemplateConfig) *Templates {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Templates{Backend: inner, cfg: cfg, log: log.With("component", "templates"),
		tpls: map[string]*template{}, insts: map[string]*forked{}, quit: make(chan struct{})}
	if cfg.Live != nil {
		go b.sweep()
	}
	return b
}

// sweepEvery is how often templates of revisions no longer deployed (a
// deleted deployment, an older revision) are looked for.
const sweepEvery = time.Second

// sweep ends the templates of revisions no longer deployed that have no
// instance left, until Close.
func (b *Templates) sweep() {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-b.quit:
			return
		case <-tick.C:
		}
		b.mu.Lock()
		var gone []*template
		for _, t := range b.tpls {
			if !t.dead && !t.ending && len(t.children) == 0 && len(t.pending) == 0 && !b.cfg.Live(t.deployment, t.revision) {
				gone = append(gone, t)
			}
		}
		b.mu.Unlock()
		for _, t := range gone {
			go b.end(t)
		}
	}
}

// template is one template process.
type template struct {
	deployment, revision string
	keep                 time.Duration
	cmd                  *exec.Cmd
	conn                 *os.File // tandem's end of the socket pair
	logPath              string
	startedAt            time.Time

	ready  chan struct{} // closed once ready or failed
	err    error         // why it failed (set before ready closes)
	exited chan struct{} // closed once the process is reaped

	wmu sync.Mutex // one writer on conn at a time

	// Guarded by Templates.mu.
	pending  map[string]*pendingFork
	children map[string]*forked
	lastFork time.Time
	timer    *time.Timer
	dead     bool
	ending   bool
}

// pendingFork is a fork asked for and not answered yet. The reader
// registers f as soon as the template answers, before it reads the
// child's exit, so a quick exit is never missed.
type pendingFork struct {
	f     *forked
	reply chan error
}

// forked is an instance forked from a template.
type forked struct {
	info backend.Instance
	tpl  *template
	pid  int

	// Guarded by Templates.mu.
	done    chan struct{}
	exit    backend.Exit
	waiters []chan backend.Exit
}

// message is one line of the template protocol (bootstrap.py, Template).
type message struct {
	Op     string            `json:"op"`
	ID     string            `json:"id,omitempty"`
	PID    int               `json:"pid,omitempty"`
	Error  string            `json:"error,omitempty"`
	Code   int               `json:"code,omitempty"`
	Signal int               `json:"signal,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	Log    string            `json:"log,omitempty"`
}

func templateKey(deployment, revision string) string { return deployment + "/" + revision }

// Start forks the instance from its deployment's template (starting the
// template first when there is none) when the manifest asks for one, and
// otherwise starts it on the inner backend.
func (b *Templates) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if spec.Manifest == nil || spec.Manifest.Runtime.Template == nil {
		return b.Backend.Start(ctx, spec)
	}
	rt := spec.Manifest.Runtime
	if len(rt.Command) < 2 {
		return backend.Instance{}, startFailed(spec.ID, "runtime.template: the manifest has no Python program")
	}
	var phases []backend.Phase
	t0 := time.Now()
	port := rt.Port
	if port == 0 {
		var err error
		if port, err = b.freePort(); err != nil {
			return backend.Instance{}, startFailed(spec.ID, "finding a free port: %w", err)
		}
	}
	logPath := filepath.Join(b.cfg.DataDir, "logs", spec.Deployment, spec.ID+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return backend.Instance{}, startFailed(spec.ID, "%w", err)
	}
	env := map[string]string{}
	for k, v := range spec.Env {
		env[k] = v
	}
	env["PORT"] = strconv.Itoa(port)
	f := &forked{
		info: backend.Instance{
			ID: spec.ID, Deployment: spec.Deployment, Revision: spec.Revision,
			Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			StartedAt: t0, Containment: ContainTemplate,
		},
		done: make(chan struct{}),
	}
	reply := make(chan error, 1)
	var t *template
	for attempt := 0; ; attempt++ {
		var fresh bool
		var err error
		t, fresh, err = b.template(spec)
		if err != nil {
			return backend.Instance{}, startFailed(spec.ID, "%w", err)
		}
		select {
		case <-t.ready:
		case <-ctx.Done():
			return backend.Instance{}, startFailed(spec.ID, "waiting for the template: %w", ctx.Err())
		}
		if t.err != nil {
			return backend.Instance{}, startFailed(spec.ID, "%w", t.err)
		}
		if fresh {
			phases = append(phases, backend.Phase{Name: "template", Duration: time.Since(t0)})
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return backend.Instance{}, startFailed(spec.ID, "templates closed")
		}
		if t.dead || t.ending {
			// Ended as this start began (keep ran out, or it crashed):
			// once more with a new one.
			b.mu.Unlock()
			if attempt == 0 {
				continue
			}
			return backend.Instance{}, startFailed(spec.ID, "the template ended while forking")
		}
		if old, ok := b.insts[spec.ID]; ok && !isClosed(old.done) {
			b.mu.Unlock()
			return backend.Instance{}, startFailed(spec.ID, "an instance with this id is running")
		}
		f.tpl = t
		t.pending[spec.ID] = &pendingFork{f: f, reply: reply}
		t.lastFork = time.Now()
		b.mu.Unlock()
		break
	}

	t1 := time.Now()
	if err := t.send(message{Op: "fork", ID: spec.ID, Env: env, Log: logPath}); err != nil {
		b.dropPending(t, spec.ID)
		return backend.Instance{}, startFailed(spec.ID, "asking the template to fork: %w", err)
	}
	var err error
	select {
	case err = <-reply:
	case <-ctx.Done():
		b.mu.Lock()
		_, waiting := t.pending[spec.ID]
		delete(t.pending, spec.ID)
		b.mu.Unlock()
		if !waiting { // forked meanwhile: nobody will watch it
			_ = t.send(message{Op: "kill", ID: spec.ID, Signal: int(syscall.SIGKILL)})
		}
		return backend.Instance{}, startFailed(spec.ID, "waiting for the fork: %w", ctx.Err())
	}
	if err != nil {
		return backend.Instance{}, startFailed(spec.ID, "%w", err)
	}
	phases = append(phases, backend.Phase{Name: "fork", Duration: time.Since(t1)})
	b.mu.Lock()
	f.info.Phases = phases
	info := f.info
	b.mu.Unlock()
	b.log.Debug("instance forked", "instance", spec.ID, "deployment", spec.Deployment, "pid", f.pid, "fork", phases[len(phases)-1].Duration)
	return info, nil
}

// track records a forked instance; an ended one is forgotten once 256 more
// have ended. Called with b.mu held.
func (b *Templates) track(f *forked) {
	if old, ok := b.insts[f.info.ID]; ok && isClosed(old.done) {
		b.ended = slices.DeleteFunc(b.ended, func(id string) bool { return id == f.info.ID })
	}
	b.insts[f.info.ID] = f
}

func (b *Templates) dropPending(t *template, id string) {
	b.mu.Lock()
	delete(t.pending, id)
	b.mu.Unlock()
}

func startFailed(id, format string, args ...any) error {
	return fmt.Errorf("%w: instance %s: %w", backend.ErrStartFailed, id, fmt.Errorf(format, args...))
}

// template returns the deployment revision's template, starting one when
// there is none; fresh says it was started by this call.
func (b *Templates) template(spec backend.Spec) (*template, bool, error) {
	key := templateKey(spec.Deployment, spec.Revision)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false, errors.New("templates closed")
	}
	if t, ok := b.tpls[key]; ok && !t.dead && !t.ending {
		return t, false, nil
	}
	t, err := b.startTemplate(spec)
	if err != nil {
		return nil, false, err
	}
	b.tpls[key] = t
	return t, true, nil
}

// startTemplate execs the template process. Called with b.mu held.
func (b *Templates) startTemplate(spec backend.Spec) (*template, error) {
	m := spec.Manifest
	rt := m.Runtime
	if rt.Workdir != "" {
		if fi, err := os.Stat(rt.Workdir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("runtime.workdir %s is not a folder", rt.Workdir)
		}
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("template socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "template")
	theirs := os.NewFile(uintptr(fds[1]), "template-peer")
	defer theirs.Close()

	logPath := filepath.Join(b.cfg.DataDir, "logs", spec.Deployment, "template.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		ours.Close()
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("opening the template's log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "tandem: template of revision %s starting at %s\n", spec.Revision, time.Now().UTC().Format(time.RFC3339Nano))

	cmd := exec.Command(rt.Command[0], rt.Command[1:]...)
	cmd.Dir = rt.Workdir
	env := os.Environ()
	keys := make([]string, 0, len(rt.Env))
	for k := range rt.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+rt.Env[k])
	}
	env = append(env, "TANDEM_TEMPLATE_FD=3")
	if rt.WSGI != "" && rt.Health != "" {
		env = append(env, "TANDEM_TEMPLATE_WARM="+rt.Health)
	}
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own group, so that ending it ends whatever it started; and dead
	// with tandem (also: its end of the socket pair reads EOF).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("starting the template %q: %w", rt.Command[0], err)
	}
	keep := manifest.DefaultTemplateKeep
	if k := rt.Template.Keep.D(); k > 0 {
		keep = k
	}
	t := &template{
		deployment: spec.Deployment, revision: spec.Revision, keep: keep,
		cmd: cmd, conn: ours, logPath: logPath, startedAt: time.Now(),
		ready: make(chan struct{}), exited: make(chan struct{}),
		pending: map[string]*pendingFork{}, children: map[string]*forked{},
		lastFork: time.Now(),
	}
	t.timer = time.AfterFunc(keep, func() { b.idle(t) })
	go b.read(t)
	if b.cfg.Meter != nil {
		b.cfg.Meter.TemplateStarted(spec.Deployment, t.startedAt)
	}
	b.log.Info("template started", "deployment", spec.Deployment, "revision", spec.Revision, "pid", cmd.Process.Pid)
	return t, nil
}

// send writes one message to the template.
func (t *template) send(m message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_, err = t.conn.Write(append(data, '\n'))
	return err
}

// read handles what the template says until it ends, then reaps it.
func (b *Templates) read(t *template) {
	sc := bufio.NewScanner(t.conn)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	readyOnce := sync.OnceFunc(func() { close(t.ready) })
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			b.log.Warn("template: unreadable message", "deployment", t.deployment, "err", err)
			continue
		}
		switch m.Op {
		case "ready":
			readyOnce()
		case "failed":
			t.err = fmt.Errorf("the template failed to import the code:\n%s", strings.TrimSpace(m.Error))
			readyOnce()
		case "forked":
			b.mu.Lock()
			p, ok := t.pending[m.ID]
			delete(t.pending, m.ID)
			if ok && m.Error == "" {
				p.f.pid = m.PID
				b.track(p.f)
				t.children[m.ID] = p.f
			}
			b.mu.Unlock()
			switch {
			case !ok && m.Error == "":
				// Its Start gave up: nobody will watch it.
				_ = t.send(message{Op: "kill", ID: m.ID, Signal: int(syscall.SIGKILL)})
			case !ok:
			case m.Error != "":
				p.reply <- errors.New(m.Error)
			default:
				p.reply <- nil
			}
		case "exit":
			ex := backend.Exit{Code: m.Code, At: time.Now()}
			if m.Signal != 0 {
				ex.Code = -1
				ex.Signal = syscall.Signal(m.Signal).String()
			}
			b.childExited(t, m.ID, ex)
		}
	}
	// EOF: the template is gone (crashed, dropped, or told to quit).
	t.conn.Close()
	_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
	_ = t.cmd.Wait()
	if t.err == nil {
		select {
		case <-t.ready:
		default:
			t.err = fmt.Errorf("the template %s before it was ready:\n%s", exitText(t.cmd.ProcessState), tail(t.logPath, 30))
		}
	}
	readyOnce()
	t.timer.Stop()
	b.mu.Lock()
	t.dead = true
	if cur, ok := b.tpls[templateKey(t.deployment, t.revision)]; ok && cur == t {
		delete(b.tpls, templateKey(t.deployment, t.revision))
	}
	for id, p := range t.pending {
		p.reply <- errors.New("the template ended before it forked")
		delete(t.pending, id)
	}
	children := make([]*forked, 0, len(t.children))
	for _, f := range t.children {
		children = append(children, f)
	}
	b.mu.Unlock()
	// The children got SIGKILL with their parent (PR_SET_PDEATHSIG).
	for _, f := range children {
		b.childExited(t, f.info.ID, backend.Exit{Code: -1, Signal: syscall.SIGKILL.String(), At: time.Now(),
			Err: errors.New("its template ended")})
	}
	close(t.exited)
	if b.cfg.Meter != nil {
		b.cfg.Meter.TemplateEnded(t.deployment, time.Now())
	}
	b.log.Info("template ended", "deployment", t.deployment, "revision", t.revision, "exit", exitText(t.cmd.ProcessState))
}

func exitText(ps *os.ProcessState) string {
	if ps == nil {
		return "ended"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "was killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with code %d", ps.ExitCode())
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childExited records an instance's end and ends its template when that
// was the last instance of a revision no longer deployed.
func (b *Templates) childExited(t *template, id string, ex backend.Exit) {
	b.mu.Lock()
	f, ok := t.children[id]
	if !ok {
		b.mu.Unlock()
		return
	}
	delete(t.children, id)
	b.ended = append(b.ended, id)
	for len(b.ended) > 256 {
		if old, ok := b.insts[b.ended[0]]; ok && isClosed(old.done) {
			delete(b.insts, b.ended[0])
		}
		b.ended = b.ended[1:]
	}
	if !isClosed(f.done) {
		f.exit = ex
		for _, ch := range f.waiters {
			ch <- ex
			close(ch)
		}
		f.waiters = nil
		close(f.done)
	}
	orphan := len(t.children) == 0 && !t.dead && b.cfg.Live != nil && !b.cfg.Live(t.deployment, t.revision)
	b.mu.Unlock()
	b.log.Debug("instance ended", "instance", id, "exit", ex.String())
	if orphan {
		// Not on this goroutine: it may be the template's reader, which
		// end waits for.
		go b.end(t)
	}
}

// idle ends a template unused for keep (no fork), unless instances of it
// still run: they would end with it.
func (b *Templates) idle(t *template) {
	b.mu.Lock()
	since := time.Since(t.lastFork)
	// Still importing counts as in use: a start is waiting for it.
	busy := len(t.children) > 0 || len(t.pending) > 0 || !isClosed(t.ready)
	b.mu.Unlock()
	switch {
	case since < t.keep:
		t.timer.Reset(t.keep - since)
	case busy:
		t.timer.Reset(t.keep)
	default:
		b.log.Info("a template was unused for runtime.template.keep", "deployment", t.deployment, "keep", t.keep)
		b.end(t)
	}
}

// end stops a template (and with it any instance forked from it) and
// waits until it has been reaped. Never call it on t's reader goroutine.
func (b *Templates) end(t *template) {
	b.mu.Lock()
	first := !t.ending
	t.ending = true
	b.mu.Unlock()
	if first {
		b.log.Info("ending a template", "deployment", t.deployment, "revision", t.revision)
	}
	t.conn.Close() // EOF: it kills its children and exits
	select {
	case <-t.exited:
	case <-time.After(2 * time.Second):
		_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
		<-t.exited
	}
}

// Wait returns a channel that receives the instance's Exit.
func (b *Templates) Wait(id string) (<-chan backend.Exit, error) {
	b.mu.Lock()
	f, ok := b.insts[id]
	if !ok {
		b.mu.Unlock()
		return b.Backend.Wait(id)
	}
	defer b.mu.Unlock()
	ch := make(chan backend.Exit, 1)
	if isClosed(f.done) {
		ch <- f.exit
		close(ch)
		return ch, nil
	}
	f.waiters = append(f.waiters, ch)
	return ch, nil
}

// Stop sends SIGTERM to a forked instance's group (through its template,
// which alone may signal it without a pid race), SIGKILL after grace.
func (b *Templates) Stop(ctx context.Context, id string, grace time.Duration) error {
	b.mu.Lock()
	f, ok := b.insts[id]
	b.mu.Unlock()
	if !ok {
		return b.Backend.Stop(ctx, id, grace)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if isClosed(f.done) {
			return nil
		}
		if err := f.tpl.send(message{Op: "kill", ID: id, Signal: int(sig)}); err != nil {
			// The template is gone, and its children with it.
			select {
			case <-f.done:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("stop %s: %w", id, ctx.Err())
			}
		}
		timer := time.NewTimer(grace)
		select {
		case <-f.done:
			timer.Stop()
			return nil
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("stop %s: %w", id, ctx.Err())
		case <-timer.C:
		}
		grace = time.Hour // after SIGKILL, wait for the exit (bounded by ctx)
	}
	return nil
}

// List returns the inner backend's instances and the forked ones.
func (b *Templates) List(ctx context.Context) ([]backend.Instance, error) {
	out, err := b.Backend.List(ctx)
	b.mu.Lock()
	for _, f := range b.insts {
		if !isClosed(f.done) {
			out = append(out, f.info)
		}
	}
	b.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, err
}

// Close ends every template and its instances (a template is never
// adopted by a later tandem), then closes the inner backend.
func (b *Templates) Close() error {
	b.mu.Lock()
	if !b.closed {
		close(b.quit)
	}
	b.closed = true
	tpls := make([]*template, 0, len(b.tpls))
	for _, t := range b.tpls {
		tpls = append(tpls, t)
	}
	b.mu.Unlock()
	for _, t := range tpls {
		b.end(t)
	}
	return b.Backend.Close()
}

// Logs is the inner backend's: forked instances and templates write their
// log files where the process backend reads them.
func (b *Templates) Logs(ctx context.Context, deployment string, tail int, w io.Writer) error {
	lr, ok := b.Backend.(backend.LogReader)
	if !ok {
		return fmt.Errorf("backend %s keeps no logs", b.Name())
	}
	return lr.Logs(ctx, deployment, tail, w)
}

// FollowLogs is the inner backend's (see Logs).
func (b *Templates) FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error {
	lf, ok := b.Backend.(backend.LogFollower)
	if !ok {
		return fmt.Errorf("backend %s cannot follow logs", b.Name())
	}
	return lf.FollowLogs(ctx, deployment, tail, w, flush)
}

// Check is the inner backend's.
func (b *Templates) Check(m *manifest.Manifest) error {
	if ck, ok := b.Backend.(backend.Checker); ok {
		return ck.Check(m)
	}
	return nil
}

var descTemplates = prometheus.NewDesc("tandem_templates",
	"Template processes running (imported Python code that instances are forked from), by deployment. Not instances: not counted in tandem_instances.",
	[]string{"model"}, nil)

// Describe implements prometheus.Collector.
func (b *Templates) Describe(ch chan<- *prometheus.Desc) { ch <- descTemplates }

// Collect reports tandem_templates.
func (b *Templates) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	n := map[string]int{}
	for _, t := range b.tpls {
		if !t.dead {
			n[t.deployment]++
		}
	}
	b.mu.Unlock()
	for d, c := range n {
		ch <- prometheus.MustNewConstMetric(descTemplates, prometheus.GaugeValue, float64(c), d)
	}
}

// Templates returns the number of running templates per deployment.
func (b *Templates) Templates() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := map[string]int{}
	for _, t := range b.tpls {
		if !t.dead {
			n[t.deployment]++
		}
	}
	return n
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago and was
// not handed out lately by this decorator.
func (b *Templates) freePort() (int, error) {
	for range 16 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		b.mu.Lock()
		seen := false
		for _, p := range b.ports {
			seen = seen || p == port
		}
		if !seen {
			b.ports = append(b.ports, port)
			if len(b.ports) > 64 {
				b.ports = b.ports[1:]
			}
		}
		b.mu.Unlock()
		if !seen {
			return port, nil
		}
	}
	return 0, errors.New("no free port that was not handed out lately")
}
