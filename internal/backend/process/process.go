package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

	"golang.org/x/sys/unix"

	"tandem/internal/backend"
)

// Name is the backend's name as a manifest writes it.
const Name = "process"

// exitedKept is how many ended instances stay known to Wait, so that a
// caller that asks after a quick exit still learns how it ended.
const exitedKept = 256

// ErrClosed is the Exit.Err of instances still running when the backend was
// closed, and the error of Start and Recover after Close.
var ErrClosed = errors.New("process backend closed (instance left running)")

// Config configures a Backend.
type Config struct {
	// DataDir holds logs/<deployment>/<instance>.log and
	// instances/<instance>.json. Required.
	DataDir string
	// Logger receives the backend's own messages; nil means slog.Default().
	Logger *slog.Logger
}

// Backend runs instances as child processes. It is safe for concurrent use.
type Backend struct {
	cfg Config
	log *slog.Logger
	cg  cgroups

	warnLimits sync.Once
	warnScope  sync.Once
	quit       chan struct{} // closed by Close; stops adopted watchers

	mu     sync.Mutex
	closed bool
	insts  map[string]*instance
	ended  []string // ids of ended instances still in insts, oldest first
	ports  []int    // ports handed out lately, newest last
	// starting holds the ids of Start calls in progress.
	starting map[string]bool
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.LogReader   = (*Backend)(nil)
	_ backend.LogFollower = (*Backend)(nil)
)

// instance is one tracked process. The fields from exited on are guarded
// by Backend.mu; the others do not change once it is tracked.
type instance struct {
	info      backend.Instance
	pid       int
	startTime uint64
	// scope is the cgroup holding all of the instance's processes ("" when
	// it is contained by its process group only); cgroup is the one with
	// its memory limit ("" when it has none). They may be the same.
	scope   string
	cgroup  string
	adopted *pidWatcher // nil for a child of this process

	exited  bool          // the process has ended; signal it no more
	done    chan struct{} // closed once exit is set
	exit    backend.Exit
	waiters []chan backend.Exit
}

// state is the content of DataDir/instances/<id>.json.
type state struct {
	ID         string    `json:"id"`
	Deployment string    `json:"deployment"`
	Revision   string    `json:"revision"`
	Addr       string    `json:"addr"`
	PID        int       `json:"pid"`
	StartTime  uint64    `json:"start_time"`
	StartedAt  time.Time `json:"started_at"`
	Cgroup     string    `json:"cgroup,omitempty"`
	Scope      string    `json:"scope,omitempty"`
}

// New returns a process backend keeping its files under cfg.DataDir.
func New(cfg Config) (*Backend, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("process backend: DataDir is required")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("process backend: %w", err)
	}
	cfg.DataDir = dir
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Backend{
		cfg:      cfg,
		log:      log.With("backend", Name),
		quit:     make(chan struct{}),
		insts:    map[string]*instance{},
		starting: map[string]bool{},
	}
	for _, d := range []string{b.stateDir(), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("process backend: %w", err)
		}
	}
	b.cg = detectCgroups()
	return b, nil
}

// Name returns "process".
func (b *Backend) Name() string { return Name }

// LimitsSupported reports whether memory limits are enforced here (root,
// and a cgroup v1 or v2 memory controller tandem may write to).
func (b *Backend) LimitsSupported() bool { return b.cg.supported() }

func (b *Backend) stateDir() string { return filepath.Join(b.cfg.DataDir, "instances") }

func (b *Backend) statePath(id string) string {
	return filepath.Join(b.stateDir(), id+".json")
}

// validName reports whether s is safe as one path element.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00")
}

func startFailed(id, format string, args ...any) error {
	return fmt.Errorf("%w: instance %s: %w", backend.ErrStartFailed, id, fmt.Errorf(format, args...))
}

// Start runs spec.Manifest.Runtime.Command in its own process group and
// returns once it has been exec'd. See backend.Backend.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	if err := ctx.Err(); err != nil {
		return backend.Instance{}, startFailed(spec.ID, "%w", err)
	}
	if !validName(spec.ID) || !validName(spec.Deployment) {
		return backend.Instance{}, startFailed(spec.ID, "instance id %q and deployment %q must be non-empty names without '/'", spec.ID, spec.Deployment)
	}
	if spec.Manifest == nil || len(spec.Manifest.Runtime.Command) == 0 || spec.Manifest.Runtime.Command[0] == "" {
		return backend.Instance{}, startFailed(spec.ID, "runtime.command is empty")
	}
	rt := spec.Manifest.Runtime
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return backend.Instance{}, startFailed(spec.ID, "%w", ErrClosed)
	}
	if inst, ok := b.insts[spec.ID]; (ok && !inst.exited) || b.starting[spec.ID] {
		b.mu.Unlock()
		return backend.Instance{}, startFailed(spec.ID, "an instance with this id is running")
	}
	b.starting[spec.ID] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.starting, spec.ID)
		b.mu.Unlock()
	}()

	if rt.Workdir != "" {
		if fi, err := os.Stat(rt.Workdir); err != nil || !fi.IsDir() {
			return backend.Instance{}, startFailed(spec.ID, "runtime.workdir %s is not a folder", rt.Workdir)
		}
	}
	port := rt.Port
	if port == 0 {
		p, err := b.freePort()
		if err != nil {
			return backend.Instance{}, startFailed(spec.ID, "finding a free port: %w", err)
		}
		port = p
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	logPath := filepath.Join(b.logDir(spec.Deployment), spec.ID+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return backend.Instance{}, startFailed(spec.ID, "%w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return backend.Instance{}, startFailed(spec.ID, "opening the log: %w", err)
	}
	defer logf.Close() // the child holds its own copy

	if st, err := logf.Stat(); err == nil && st.Size() == 0 {
		markStarted(logf, time.Now()) // a reused id keeps its first place
	}

	scope, cgroup := b.makeCgroups(spec)
	cleanup := func() {
		removeCgroup(scope)
		removeCgroup(cgroup)
	}
	cmd := exec.Command(rt.Command[0], rt.Command[1:]...)
	cmd.Dir = rt.Workdir
	cmd.Env = environ(rt.Env, spec.Env, port)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var cgfd *os.File
	if into := b.cloneInto(scope, cgroup); into != "" {
		// Start inside the cgroup, so nothing the program does escapes it.
		if cgfd, err = os.Open(into); err == nil {
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(cgfd.Fd())
		}
	}

	t0 := time.Now()
	err = cmd.Start()
	if err != nil && cmd.SysProcAttr.UseCgroupFD && cmd.Err == nil {
		// Kernels before 5.7 lack CLONE_INTO_CGROUP: start, then move.
		retry := exec.Command(rt.Command[0], rt.Command[1:]...)
		retry.Dir, retry.Env, retry.Stdout, retry.Stderr = cmd.Dir, cmd.Env, logf, logf
		retry.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd, err = retry, retry.Start()
	}
	execTime := time.Since(t0)
	if cgfd != nil {
		cgfd.Close()
	}
	if err != nil {
		cleanup()
		dir := rt.Workdir
		if dir == "" {
			dir, _ = os.Getwd()
		}
		fmt.Fprintf(logf, "tandem: could not start %q in %s: %v\n", rt.Command[0], dir, err)
		if cmd.Err != nil || errors.Is(err, fs.ErrNotExist) {
			return backend.Instance{}, startFailed(spec.ID, "program %q not found (looked in $PATH or relative to %s): %w", rt.Command[0], dir, err)
		}
		return backend.Instance{}, startFailed(spec.ID, "starting %q in folder %s: %w", rt.Command[0], dir, err)
	}
	pid := cmd.Process.Pid
	cloned := ""
	if cmd.SysProcAttr.UseCgroupFD {
		cloned = b.cloneInto(scope, cgroup)
	}
	if scope != "" && scope != cloned {
		if err := addProcess(scope, pid); err != nil {
			b.log.Warn("contained by its process group only: moving the process into its cgroup failed",
				"instance", spec.ID, "cgroup", scope, "err", err)
			removeCgroup(scope)
			scope = ""
		}
	}
	if cgroup != "" && cgroup != cloned && cgroup != scope {
		if err := addProcess(cgroup, pid); err != nil {
			b.log.Warn("running without a memory limit: moving the process into its cgroup failed",
				"instance", spec.ID, "cgroup", cgroup, "err", err)
		}
	}
	containment := ContainProcessGroup
	if scope != "" {
		containment = ContainCgroup
	}

	inst := &instance{
		info: backend.Instance{
			ID:          spec.ID,
			Deployment:  spec.Deployment,
			Revision:    spec.Revision,
			Addr:        addr,
			StartedAt:   t0,
			Phases:      []backend.Phase{{Name: "exec", Duration: execTime}},
			Containment: containment,
		},
		pid:    pid,
		scope:  scope,
		cgroup: cgroup,
		done:   make(chan struct{}),
	}
	// The child cannot have been reaped yet (only watchChild reaps), so its
	// stat is there even when it has exited already.
	st, err := readStat(pid)
	if err == nil {
		inst.startTime = st.StartTime
		err = b.writeState(inst)
	}
	if err != nil {
		// Untracked on disk it could outlive a crash of tandem unseen.
		_ = killGroup(pid, syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
		cleanup()
		return backend.Instance{}, startFailed(spec.ID, "recording the instance: %w", err)
	}

	b.mu.Lock()
	if b.closed {
		// Closed while starting: nobody would watch or adopt it now.
		b.mu.Unlock()
		_ = killGroup(pid, syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
		cleanup()
		os.Remove(b.statePath(spec.ID))
		return backend.Instance{}, startFailed(spec.ID, "%w", ErrClosed)
	}
	if old, ok := b.insts[spec.ID]; ok {
		b.forget(old)
	}
	b.insts[spec.ID] = inst
	b.mu.Unlock()
	go b.watchChild(inst, cmd)
	b.pruneLogs(spec.Deployment)
	b.log.Debug("instance started", "instance", spec.ID, "deployment", spec.Deployment,
		"pid", pid, "addr", addr, "exec", execTime)
	return inst.info, nil
}

// makeCgroups returns the cgroup that holds the instance's processes ("" when
// there is none: its process group holds them) and the one that limits its
// memory ("" when it runs without a limit). They may be the same.
func (b *Backend) makeCgroups(spec backend.Spec) (scope, mem string) {
	scope, err := b.cg.createScope(spec.ID)
	if err != nil {
		b.warnScope.Do(func() {
			b.log.Warn("no cgroup for instances; stopping one signals its process group, which daemons that call setsid leave",
				"reason", err)
		})
		scope = ""
	}
	limit := int64(spec.Manifest.Resources.Memory)
	if limit <= 0 {
		return scope, ""
	}
	if !b.cg.supported() {
		b.warnLimits.Do(func() {
			b.log.Warn("memory limits are not supported here; instances run without them", "reason", b.cg.why)
		})
		return scope, ""
	}
	mem, err = b.cg.create(spec.ID, limit)
	if err != nil {
		b.log.Warn("running without a memory limit", "instance", spec.ID, "err", err)
		return scope, ""
	}
	return scope, mem
}

// cloneInto returns the cgroup a process may be started in directly
// (CLONE_INTO_CGROUP works on v2 only), or "".
func (b *Backend) cloneInto(scope, mem string) string {
	switch {
	case scope != "" && b.cg.scopeV2:
		return scope
	case mem != "" && b.cg.version == cgroupV2:
		return mem
	}
	return ""
}

// environ is the parent's environment, then the manifest's, then tandem's,
// then PORT; later entries win.
func environ(runtimeEnv, specEnv map[string]string, port int) []string {
	env := os.Environ()
	for _, m := range []map[string]string{runtimeEnv, specEnv} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			env = append(env, k+"="+m[k])
		}
	}
	return append(env, "PORT="+strconv.Itoa(port))
}

// recentPorts is how many handed-out ports freePort avoids: an instance
// may take a moment to bind its port, and the kernel may offer the same
// free port to the next caller meanwhile.
const recentPorts = 64

// freePort returns a port on 127.0.0.1 that was free a moment ago and was
// not handed out lately.
func (b *Backend) freePort() (int, error) {
	for range 16 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		b.mu.Lock()
		if slices.Contains(b.ports, port) {
			b.mu.Unlock()
			continue
		}
		b.ports = append(b.ports, port)
		if len(b.ports) > recentPorts {
			b.ports = b.ports[1:]
		}
		b.mu.Unlock()
		return port, nil
	}
	return 0, errors.New("no free port that was not handed out lately")
}

func (b *Backend) writeState(inst *instance) error {
	data, err := json.MarshalIndent(state{
		ID:         inst.info.ID,
		Deployment: inst.info.Deployment,
		Revision:   inst.info.Revision,
		Addr:       inst.info.Addr,
		PID:        inst.pid,
		StartTime:  inst.startTime,
		StartedAt:  inst.info.StartedAt,
		Cgroup:     inst.cgroup,
		Scope:      inst.scope,
	}, "", "  ")
	if err != nil {
		return err
	}
	path := b.statePath(inst.info.ID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// watchChild observes the exit of a child of this process.
func (b *Backend) watchChild(inst *instance, cmd *exec.Cmd) {
	// Wait without reaping: until cmd.Wait, the zombie holds the pid and
	// the group id, so killGroup cannot hit a stranger. The pidfd wait
	// parks this goroutine, not a thread; waitid, the fallback, holds one.
	if w, err := watchPid(inst.pid, inst.startTime); err == nil && w.f != nil {
		w.wait(nil)
		w.close()
	} else {
		if w != nil {
			w.close()
		}
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, inst.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
	}
	b.mu.Lock()
	closed := b.closed
	inst.exited = true
	b.mu.Unlock()
	if !closed {
		// Whatever the program left behind in its group goes with it.
		_ = killGroup(inst.pid, syscall.SIGKILL)
	}
	_ = cmd.Wait()
	if closed {
		return // the next tandem process owns the files
	}
	ex := backend.Exit{Code: -1, At: time.Now()}
	if cmd.ProcessState == nil {
		ex.Err = errors.New("lost track of the child process")
	} else if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			ex.Signal = ws.Signal().String()
		case ws.Exited():
			ex.Code = ws.ExitStatus()
		}
	}
	if ex.Signal == syscall.SIGKILL.String() && inst.cgroup != "" && oomKills(inst.cgroup) > 0 {
		ex.OOM = true
	}
	b.finish(inst, ex)
}

// watchAdopted observes the exit of an instance an earlier tandem started.
// Its real exit status is unknowable (it is not our child): Code is -1.
func (b *Backend) watchAdopted(inst *instance) {
	w := inst.adopted
	ended := w.wait(b.quit)
	b.mu.Lock()
	if ended {
		inst.exited = true
	}
	closed := b.closed
	b.mu.Unlock()
	w.close()
	if !ended || closed {
		return
	}
	_ = killGroup(inst.pid, syscall.SIGKILL)
	ex := backend.Exit{Code: -1, At: time.Now()}
	if inst.cgroup != "" && oomKills(inst.cgroup) > 0 {
		ex.OOM = true
	}
	b.finish(inst, ex)
}

// finish cleans up after an ended instance and delivers its Exit.
func (b *Backend) finish(inst *instance, ex backend.Exit) {
	// Whatever the program left running (a daemon that called setsid)
	// ends with it.
	for _, dir := range []string{inst.scope, inst.cgroup} {
		if err := removeCgroup(dir); err != nil {
			b.log.Warn("removing cgroup", "instance", inst.info.ID, "cgroup", dir, "err", err)
		}
	}
	if err := os.Remove(b.statePath(inst.info.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.log.Warn("removing state file", "instance", inst.info.ID, "err", err)
	}
	b.log.Debug("instance ended", "instance", inst.info.ID, "exit", ex.String())
	// Say how it ended where `tandem logs` shows it (an OOM kill leaves no
	// trace in the program's own output).
	// Other endings show in the program's own output, or were asked for.
	if ex.OOM {
		if f, err := os.OpenFile(filepath.Join(b.logDir(inst.info.Deployment), inst.info.ID+".log"), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			fmt.Fprintf(f, "\ntandem: instance %s %s\n", inst.info.ID, ex)
			f.Close()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.deliver(inst, ex)
	b.ended = append(b.ended, inst.info.ID)
	for len(b.ended) > exitedKept {
		id := b.ended[0]
		b.ended = b.ended[1:]
		if old, ok := b.insts[id]; ok && old.exited && isClosed(old.done) {
			delete(b.insts, id)
		}
	}
}

// deliver records ex and hands it to every waiter. Called with b.mu held.
func (b *Backend) deliver(inst *instance, ex backend.Exit) {
	if isClosed(inst.done) {
		return
	}
	inst.exit = ex
	// Waiters first: whoever sees done closed (Stop) may rely on the Exit
	// being delivered already.
	for _, ch := range inst.waiters {
		ch <- ex
		close(ch)
	}
	inst.waiters = nil
	close(inst.done)
}

// forget drops an ended instance that a new one with its id replaces.
// Called with b.mu held.
func (b *Backend) forget(inst *instance) {
	for i, id := range b.ended {
		if id == inst.info.ID {
			b.ended = append(b.ended[:i:i], b.ended[i+1:]...)
			break
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Wait returns a channel that receives the instance's Exit, then closes.
// Ended instances stay known for a while, so a quick exit is not missed.
func (b *Backend) Wait(id string) (<-chan backend.Exit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	inst, ok := b.insts[id]
	if !ok {
		return nil, fmt.Errorf("wait %s: %w", id, backend.ErrNotFound)
	}
	ch := make(chan backend.Exit, 1)
	if isClosed(inst.done) {
		ch <- inst.exit
		close(ch)
		return ch, nil
	}
	inst.waiters = append(inst.waiters, ch)
	return ch, nil
}

// Stop sends SIGTERM to the instance's process group, SIGKILL once grace
// has passed, and returns when the exit has been observed or ctx is done.
// An unknown or ended instance is not an error.
func (b *Backend) Stop(ctx context.Context, id string, grace time.Duration) error {
	b.mu.Lock()
	inst, ok := b.insts[id]
	b.mu.Unlock()
	if !ok {
		return nil
	}
	if err := b.signal(inst, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-inst.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	case <-timer.C:
	}
	b.log.Debug("grace period over; killing", "instance", id, "grace", grace)
	if err := b.signal(inst, syscall.SIGKILL); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	select {
	case <-inst.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	}
}

// signal sends sig to the instance's group unless it has ended. The check
// and the kill happen under b.mu, so the pid cannot have been reaped (and
// reused) in between.
func (b *Backend) signal(inst *instance, sig syscall.Signal) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if inst.exited || isClosed(inst.done) {
		return nil
	}
	if inst.adopted != nil && inst.adopted.exited() {
		return nil
	}
	if sig == syscall.SIGKILL {
		killCgroup(inst.scope)
	}
	return killGroup(inst.pid, sig)
}

// List returns the running instances, oldest first.
func (b *Backend) List(ctx context.Context) ([]backend.Instance, error) {
	b.mu.Lock()
	out := make([]backend.Instance, 0, len(b.insts))
	for _, inst := range b.insts {
		if !isClosed(inst.done) {
			out = append(out, inst.info)
		}
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Recover adopts the instances whose state files name a process that is
// still alive with the recorded start time, and removes the state (and
// cgroup) of the others. Instances already tracked are left alone.
func (b *Backend) Recover(ctx context.Context) ([]backend.Instance, error) {
	entries, err := os.ReadDir(b.stateDir())
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	var out []backend.Instance
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		name := e.Name()
		path := filepath.Join(b.stateDir(), name)
		if strings.HasSuffix(name, ".json.tmp") {
			_ = os.Remove(path) // a write cut short by a crash
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		inst, err := b.adopt(path)
		if err != nil {
			return out, err
		}
		if inst != nil {
			out = append(out, inst.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, nil
}

// adopt tracks the instance of one state file, or cleans up after it when
// its process is gone. It returns nil when there is nothing to adopt.
func (b *Backend) adopt(path string) (*instance, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil // removed meanwhile
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil || !validName(st.ID) || st.PID <= 1 {
		b.log.Warn("removing unreadable state file", "path", path, "err", err)
		_ = os.Remove(path)
		return nil, nil
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("recover: %w", ErrClosed)
	}
	_, tracked := b.insts[st.ID]
	b.mu.Unlock()
	if tracked {
		return nil, nil
	}
	w, err := watchPid(st.PID, st.StartTime)
	if err != nil {
		b.log.Info("forgetting an instance that ended while tandem was away", "instance", st.ID, "pid", st.PID)
		for _, dir := range []string{st.Scope, st.Cgroup} {
			if err := removeCgroup(dir); err != nil {
				b.log.Warn("removing cgroup", "instance", st.ID, "cgroup", dir, "err", err)
			}
		}
		_ = os.Remove(path)
		return nil, nil
	}
	inst := &instance{
		info: backend.Instance{
			ID:         st.ID,
			Deployment: st.Deployment,
			Revision:   st.Revision,
			Addr:       st.Addr,
			StartedAt:  st.StartedAt,
			// A state file written before containment cgroups has no Scope.
			Containment: ContainProcessGroup,
		},
		pid:       st.PID,
		startTime: st.StartTime,
		scope:     st.Scope,
		cgroup:    st.Cgroup,
		adopted:   w,
		done:      make(chan struct{}),
	}
	if st.Scope != "" {
		inst.info.Containment = ContainCgroup
	}
	b.mu.Lock()
	if _, tracked := b.insts[st.ID]; tracked || b.closed {
		b.mu.Unlock()
		w.close()
		return nil, nil
	}
	b.insts[st.ID] = inst
	b.mu.Unlock()
	go b.watchAdopted(inst)
	b.log.Info("adopted a running instance", "instance", st.ID, "deployment", st.Deployment, "pid", st.PID, "addr", st.Addr)
	return inst, nil
}

// Close stops tracking: running instances keep running (a later Recover
// adopts them) and their Wait channels get an Exit whose Err is ErrClosed.
// Close is idempotent.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	close(b.quit)
	now := time.Now()
	for _, inst := range b.insts {
		b.deliver(inst, backend.Exit{Code: -1, Err: ErrClosed, At: now})
	}
	b.insts = map[string]*instance{}
	b.ended = nil
	return nil
}
