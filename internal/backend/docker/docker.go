package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
)

// APIVersion is the Engine API version the backend speaks: Docker 20.10's,
// the oldest engine it supports (Debian 12's docker.io). Pinning it skips
// version negotiation on the first call.
const APIVersion = "1.41"

// Sentinel errors.
var (
	// ErrUnavailable means the engine did not answer.
	ErrUnavailable = errors.New("docker engine unavailable")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("docker backend closed")
)

// cleanupTimeout bounds engine calls made after the caller's context is
// gone: removing a container that failed to start, reading an ended one.
const cleanupTimeout = 30 * time.Second

// Config configures a Backend.
type Config struct {
	// DataDir is tandem's data directory. Containers are labelled with its
	// absolute path, and Recover adopts only containers with the same label.
	// Required.
	DataDir string
	// Logger receives the backend's events; nil means slog.Default().
	Logger *slog.Logger
	// Host is the engine's address, such as unix:///var/run/docker.sock;
	// empty means $DOCKER_HOST, then the default socket.
	Host string
}

// Backend runs instances as Docker containers. All methods are safe to call
// concurrently. See doc.go for who owns which state.
type Backend struct {
	eng     engine
	log     *slog.Logger
	dataDir string
	nvidia  bool

	// ctx is cancelled by Close; it ends the watchers' waits.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// starts counts Start calls in progress; Close waits for them, so that
	// a container created while tandem shuts down is removed before the
	// process exits. Added to only under mu while not closed.
	starts sync.WaitGroup

	mu     sync.Mutex
	insts  map[string]*inst // by instance id, ended ones included
	ended  []string         // ids of ended instances, oldest first
	closed bool
	// found holds "image\x00program" for runtime.command programs already
	// found in their image, so that the check runs once per image.
	found map[string]bool
}

// keptEnded bounds how many ended instances (their exit and last log lines)
// the backend remembers for Wait and Logs.
const keptEnded = 64

// inst is one container the backend tracks.
type inst struct {
	info backend.Instance
	cid  string
	// done is closed once the container has ended and been removed; exit
	// and logs are set before.
	done chan struct{}
	// memLimit is the container's memory limit in bytes (0: none).
	memLimit int64
	// stopping is set once Stop was called: a SIGKILL after it is tandem's.
	stopping atomic.Bool

	// Guarded by Backend.mu.
	exit    backend.Exit
	logs    [][]byte
	waiters []chan backend.Exit
}

func (in *inst) ended() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// keptLogs returns the lines kept after the instance ended, and whether it
// has ended.
func (in *inst) keptLogs() ([][]byte, bool) {
	if !in.ended() {
		return nil, false
	}
	return in.logs, true
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.LogReader = (*Backend)(nil)
)

// New connects to the Docker engine (API version 1.41) and returns a
// backend. It fails with ErrUnavailable when the engine does not answer
// within 10 seconds.
func New(cfg Config) (*Backend, error) {
	opts := []client.Opt{client.WithAPIVersion(APIVersion)}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	} else {
		opts = append(opts, client.WithHostFromEnv())
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	b, err := newBackend(cfg, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return b, nil
}

// newBackend makes a backend on an engine (the real client or a fake).
func newBackend(cfg Config, eng engine) (*Backend, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("docker backend: Config.DataDir is required")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("docker backend: data dir: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	_, nvidia := info.Info.Runtimes["nvidia"]
	b := &Backend{
		eng:     eng,
		log:     log.With("backend", "docker"),
		dataDir: dir,
		nvidia:  nvidia,
		insts:   map[string]*inst{},
		found:   map[string]bool{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.log.Debug("engine connected", "version", info.Info.ServerVersion, "nvidia", nvidia)
	return b, nil
}

// Name returns "docker".
func (b *Backend) Name() string { return "docker" }

// Start creates and starts a container for spec and returns once the engine
// has started it (not once it is ready). Every failure wraps
// backend.ErrStartFailed; an image missing from the engine is one (images
// are never pulled), and so is a port the engine did not publish. Phases
// are "create" and "start".
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	fail := func(err error) (backend.Instance, error) {
		return backend.Instance{}, fmt.Errorf("%w: %s: %w", backend.ErrStartFailed, spec.ID, err)
	}
	b.mu.Lock()
	closed := b.closed
	old, dup := b.insts[spec.ID]
	if !closed {
		b.starts.Add(1)
	}
	b.mu.Unlock()
	if closed {
		return fail(ErrClosed)
	}
	defer b.starts.Done()
	if dup && !old.ended() {
		return fail(errors.New("an instance with this id is running"))
	}
	// Engine calls that make or change a container are never abandoned
	// half way: an abandoned create still completes in the engine, after
	// any removal tandem could try, and leaves a container in "Created"
	// state behind. They run to completion (bounded), and ctx is checked
	// between them, and so is Close.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	abandon := func(cid string) error {
		err := ctx.Err()
		if err == nil {
			b.mu.Lock()
			if b.closed {
				err = ErrClosed
			}
			b.mu.Unlock()
		}
		if err != nil {
			b.remove(cid)
		}
		return err
	}

	hostPort := 0
	if usesHostNetwork(spec.Manifest) {
		p, err := freePort()
		if err != nil {
			return fail(fmt.Errorf("finding a free port: %w", err))
		}
		hostPort = p
	}
	p, err := makePlan(spec, b.dataDir, hostPort, b.nvidia)
	if err != nil {
		return fail(err)
	}
	image := p.create.Image

	t0 := time.Now()
	created, err := b.eng.ContainerCreate(ectx, p.create)
	if err != nil {
		if ectx.Err() != nil {
			// The engine may have made it before the call was abandoned.
			b.remove(p.create.Name)
		}
		switch {
		case cerrdefs.IsNotFound(err):
			return fail(fmt.Errorf("image %q not found on the engine (images are not pulled; build or load it first): %w", image, err))
		case cerrdefs.IsConflict(err):
			return fail(fmt.Errorf("container %s already exists (left by an earlier run? Recover removes it): %w", p.create.Name, err))
		}
		return fail(fmt.Errorf("creating container from image %q: %w", image, err))
	}
	cid := created.ID
	if err := abandon(cid); err != nil {
		return fail(err)
	}
	if cmd := spec.Manifest.Runtime.Command; len(cmd) > 0 {
		if err := b.checkProgram(ctx, cid, image, cmd[0]); err != nil {
			b.remove(cid)
			return fail(err)
		}
	}
	if err := abandon(cid); err != nil {
		return fail(err)
	}
	t1 := time.Now()
	if _, err := b.eng.ContainerStart(ectx, cid, client.ContainerStartOptions{}); err != nil {
		b.remove(cid)
		return fail(fmt.Errorf("starting container from image %q: %w", image, err))
	}
	if err := abandon(cid); err != nil {
		return fail(err)
	}
	addr := p.addr
	if addr == "" {
		insp, err := b.eng.ContainerInspect(ectx, cid, client.ContainerInspectOptions{})
		if err == nil {
			addr, err = publishedAddr(insp.Container, p.port)
		}
		if err != nil {
			b.remove(cid)
			return fail(err)
		}
	}
	t2 := time.Now()

	in := &inst{
		info: backend.Instance{
			ID:         spec.ID,
			Deployment: spec.Deployment,
			Revision:   spec.Revision,
			Addr:       addr,
			StartedAt:  t2,
			Phases:     []backend.Phase{{Name: "create", Duration: t1.Sub(t0)}, {Name: "start", Duration: t2.Sub(t1)}},
		},
		cid:      cid,
		done:     make(chan struct{}),
		memLimit: p.create.HostConfig.Memory,
	}
	if !b.track(in) {
		b.remove(cid)
		return fail(ErrClosed)
	}
	b.log.Info("container started", "instance", spec.ID, "deployment", spec.Deployment,
		"container", shortID(cid), "image", image, "addr", addr)
	return in.info, nil
}

// track registers an instance and starts its watcher; false after Close.
func (b *Backend) track(in *inst) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if old, ok := b.insts[in.info.ID]; ok {
		b.ended = slices.DeleteFunc(b.ended, func(id string) bool { return id == old.info.ID })
	}
	b.insts[in.info.ID] = in
	b.wg.Add(1)
	go b.watch(in)
	return true
}

// publishedAddr finds the host address the engine published port on.
func publishedAddr(c container.InspectResponse, port network.Port) (string, error) {
	if c.NetworkSettings != nil {
		for _, pb := range c.NetworkSettings.Ports[port] {
			if pb.HostPort == "" || pb.HostPort == "0" {
				continue
			}
			host := "127.0.0.1"
			if pb.HostIP.IsValid() && !pb.HostIP.IsUnspecified() {
				host = pb.HostIP.String()
			}
			return net.JoinHostPort(host, pb.HostPort), nil
		}
	}
	return "", fmt.Errorf("the engine published no host port for container port %s "+
		"(an engine started with --bridge=none cannot publish ports: set runtime.network: host)", port)
}

// watch waits for a container to end, then records how it ended, keeps its
// last log lines, removes it and tells the waiters. It returns early, with
// nothing recorded, when the backend is closed.
func (b *Backend) watch(in *inst) {
	defer b.wg.Done()
	backoff := 100 * time.Millisecond
	var code int64 = -1
	var lost error
	for {
		w := b.eng.ContainerWait(b.ctx, in.cid, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
		var werr error
		select {
		case r := <-w.Result:
			code = r.StatusCode
		case werr = <-w.Error:
		}
		if werr == nil {
			break
		}
		if b.ctx.Err() != nil {
			return
		}
		// The wait broke (the engine restarted, a connection dropped): look
		// at the container before waiting again.
		insp, err := b.eng.ContainerInspect(b.ctx, in.cid, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			lost = fmt.Errorf("container %s disappeared", shortID(in.cid))
			break
		}
		if err == nil && insp.Container.State != nil && !insp.Container.State.Running {
			break
		}
		b.log.Warn("waiting for container failed; retrying", "instance", in.info.ID, "err", werr)
		select {
		case <-time.After(backoff):
		case <-b.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	exit := backend.Exit{Code: int(code), At: time.Now()}
	if lost != nil {
		exit = backend.Exit{Code: -1, Err: lost, At: time.Now()}
	} else if insp, err := b.eng.ContainerInspect(ctx, in.cid, client.ContainerInspectOptions{}); err == nil && insp.Container.State != nil {
		exit = exitOf(*insp.Container.State, exit.At)
	}
	if !exit.OOM && exit.Signal == syscall.SIGKILL.String() && in.memLimit > 0 && !in.stopping.Load() && b.oomEvent(ctx, in) {
		exit.OOM = true
	}
	ring := &lineRing{max: keptLogLines}
	if lost == nil {
		if err := b.copyLogs(ctx, in.cid, keptLogLines, ring); err != nil {
			b.log.Debug("reading logs of ended container", "instance", in.info.ID, "err", err)
		}
	}
	b.remove(in.cid)
	b.log.Info("container ended", "instance", in.info.ID, "deployment", in.info.Deployment, "exit", exit.String())
	b.finish(in, exit, ring.Lines())
}

// lateOOMWait bounds how long the watcher waits for the engine's "oom"
// event of a memory-limited container killed by SIGKILL but not marked
// OOMKilled. Docker 20.10 marks the exit OOMKilled only when containerd's
// OOM event arrives before its exit event, which a loaded machine reorders;
// the "oom" event itself still comes, just late.
const lateOOMWait = time.Second

// oomEvent reports whether the engine logged an "oom" event for the
// container, waiting up to lateOOMWait for a late one.
func (b *Backend) oomEvent(ctx context.Context, in *inst) bool {
	ctx, cancel := context.WithTimeout(ctx, lateOOMWait+5*time.Second)
	defer cancel()
	ts := func(t time.Time) string { return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()) }
	res := b.eng.Events(ctx, client.EventsListOptions{
		Since:   ts(in.info.StartedAt.Add(-time.Minute)),
		Until:   ts(time.Now().Add(lateOOMWait)),
		Filters: client.Filters{}.Add("type", "container").Add("container", in.cid).Add("event", "oom"),
	})
	for {
		select {
		case m := <-res.Messages:
			if m.Action == "oom" {
				b.log.Debug("late oom event", "instance", in.info.ID)
				return true
			}
		case <-res.Err:
			return false
		}
	}
}

// finish records an instance's end and hands the exit to its waiters.
func (b *Backend) finish(in *inst, exit backend.Exit, logs [][]byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in.exit, in.logs = exit, logs
	// Waiters first: whoever sees done closed (Stop) may rely on the Exit
	// being delivered already.
	for _, ch := range in.waiters {
		ch <- exit
		close(ch)
	}
	in.waiters = nil
	close(in.done)
	b.ended = append(b.ended, in.info.ID)
	for len(b.ended) > keptEnded {
		if old, ok := b.insts[b.ended[0]]; ok && old.ended() {
			delete(b.insts, b.ended[0])
		}
		b.ended = b.ended[1:]
	}
}

// remove force-removes a container (by id or name), whatever state it is in.
func (b *Backend) remove(cid string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := b.eng.ContainerRemove(ctx, cid, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		b.log.Warn("removing container failed", "container", shortID(cid), "err", err)
	}
}

// Wait returns a channel that receives the instance's Exit once, then is
// closed. It does not block. After Close, instances that have not ended
// never send.
func (b *Backend) Wait(id string) (<-chan backend.Exit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, ok := b.insts[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", backend.ErrNotFound, id)
	}
	ch := make(chan backend.Exit, 1)
	if in.ended() {
		ch <- in.exit
		close(ch)
	} else {
		in.waiters = append(in.waiters, ch)
	}
	return ch, nil
}

// Stop asks the container to stop with its stop signal (SIGTERM unless the
// image says otherwise), kills it once grace has passed, and returns once it
// has ended and been removed, or when ctx is done. Stopping an instance that
// ended, or one the backend does not know, is not an error. The engine's own stop
// timeout counts whole seconds; tandem kills at grace itself, to the
// millisecond.
func (b *Backend) Stop(ctx context.Context, id string, grace time.Duration) error {
	b.mu.Lock()
	in, ok := b.insts[id]
	closed := b.closed
	b.mu.Unlock()
	if !ok || in.ended() {
		return nil
	}
	in.stopping.Store(true)
	if closed {
		return ErrClosed
	}
	grace = max(grace, 0)
	stopCtx, cancelStop := context.WithCancel(ctx)
	defer cancelStop()
	go func() {
		secs := int(math.Ceil(grace.Seconds()))
		_, err := b.eng.ContainerStop(stopCtx, in.cid, client.ContainerStopOptions{Timeout: &secs})
		if err != nil && stopCtx.Err() == nil && !cerrdefs.IsNotFound(err) {
			b.log.Debug("stop request failed", "instance", id, "err", err)
		}
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping %s: %w", id, ctx.Err())
	case <-timer.C:
	}
	b.log.Info("grace period over; killing container", "instance", id, "grace", grace)
	if _, err := b.eng.ContainerKill(ctx, in.cid, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil &&
		!cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		b.log.Warn("killing container failed", "instance", id, "err", err)
	}
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping %s: %w", id, ctx.Err())
	}
}

// List returns the running instances this backend tracks, oldest first.
func (b *Backend) List(ctx context.Context) ([]backend.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]backend.Instance, 0, len(b.insts))
	for _, in := range b.insts {
		if !in.ended() {
			out = append(out, in.info)
		}
	}
	slices.SortFunc(out, func(a, b backend.Instance) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

// Close stops tracking without stopping containers, so that a later
// backend with the same data directory can Recover them, and closes the
// engine connection. It waits for the watchers to return.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.starts.Wait()
	b.wg.Wait()
	return b.eng.Close()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func shortID(cid string) string {
	if len(cid) > 12 {
		return cid[:12]
	}
	return cid
}

// parseHostPort reads a port label.
func parseHostPort(s string) (netip.AddrPort, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", s)
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p)), nil
}
