package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
)

// fakeEngine is an in-memory engine that records calls. Containers "run"
// until a test ends them (exit) or Stop/Kill does.
type fakeEngine struct {
	mu         sync.Mutex
	images     map[string]bool
	containers map[string]*fakeContainer
	calls      []string
	next       int
	nvidia     bool
	// noPublish makes started containers publish no port (--bridge=none).
	noPublish bool
	// startErr fails every ContainerStart.
	startErr error
	// ignoreStop makes ContainerStop leave containers running (SIGTERM ignored).
	ignoreStop bool
	infoErr    error
	// files are the paths every image holds, for ContainerStatPath.
	files map[string]bool
	// oomEvents are the containers with an "oom" event.
	oomEvents map[string]bool
	// onCreate runs at the start of every ContainerCreate. When ctx is done
	// by then, the call fails with ctx's error, and the engine, as the real
	// one does with a request the client gave up on, still makes the
	// container: late, after the next ContainerRemove (or when a test
	// looks).
	onCreate  func(ctx context.Context)
	abandoned []*fakeContainer
}

type fakeContainer struct {
	id      string
	opts    client.ContainerCreateOptions
	state   container.ContainerState
	code    int
	oom     bool
	logs    bytes.Buffer // multiplexed, as the engine sends it
	exited  chan struct{}
	removed bool
}

func newFakeEngine(images ...string) *fakeEngine {
	f := &fakeEngine{images: map[string]bool{}, containers: map[string]*fakeContainer{}}
	for _, im := range images {
		f.images[im] = true
	}
	return f
}

func (f *fakeEngine) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls made so far, such as "create tandem-x-a".
func (f *fakeEngine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeEngine) get(id string) (*fakeContainer, error) {
	c, ok := f.containers[id]
	if !ok || c.removed {
		return nil, cerrdefs.ErrNotFound.WithMessage("No such container: " + id)
	}
	return c, nil
}

// exit ends a running container with code (and the OOM mark).
func (f *fakeEngine) exit(id string, code int, oom bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exitLocked(f.containers[id], code, oom)
}

func (f *fakeEngine) exitLocked(c *fakeContainer, code int, oom bool) {
	if c.state != container.StateRunning {
		return
	}
	c.state, c.code, c.oom = container.StateExited, code, oom
	close(c.exited)
}

// log appends a line to a container's stdout (stream 1) or stderr (2).
func (f *fakeEngine) log(id string, stream byte, line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	hdr := make([]byte, 8)
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(line)))
	c.logs.Write(hdr)
	c.logs.WriteString(line)
}

// landAbandoned makes the containers of abandoned creates. Called with f.mu held.
func (f *fakeEngine) landAbandoned() {
	for _, c := range f.abandoned {
		f.containers[c.id] = c
	}
	f.abandoned = nil
}

// byName finds a container by its name.
func (f *fakeEngine) byName(name string) *fakeContainer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.landAbandoned()
	for _, c := range f.containers {
		if c.opts.Name == name && !c.removed {
			return c
		}
	}
	return nil
}

// add puts a container in the engine as an earlier tandem would have left it.
func (f *fakeEngine) add(labels map[string]string, state container.ContainerState) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	id := fmt.Sprintf("c%063d", f.next)
	c := &fakeContainer{id: id, state: state, exited: make(chan struct{}),
		opts: client.ContainerCreateOptions{Config: &container.Config{Labels: labels}, HostConfig: &container.HostConfig{NetworkMode: "host"}}}
	if state != container.StateRunning {
		close(c.exited)
	}
	f.containers[id] = c
	return id
}

func (f *fakeEngine) Info(ctx context.Context, _ client.InfoOptions) (client.SystemInfoResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.infoErr != nil {
		return client.SystemInfoResult{}, f.infoErr
	}
	info := system.Info{ServerVersion: "fake", Runtimes: map[string]system.RuntimeWithStatus{"runc": {}}}
	if f.nvidia {
		info.Runtimes["nvidia"] = system.RuntimeWithStatus{}
	}
	return client.SystemInfoResult{Info: info}, nil
}

func (f *fakeEngine) ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (res client.ContainerCreateResult, err error) {
	if f.onCreate != nil {
		f.onCreate(ctx)
		if ctx.Err() != nil {
			defer func() {
				if err == nil {
					c := f.containers[res.ID]
					delete(f.containers, res.ID)
					f.abandoned = append(f.abandoned, c)
				}
				res, err = client.ContainerCreateResult{}, ctx.Err()
			}()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create %s", opts.Name)
	if !f.images[opts.Image] {
		return client.ContainerCreateResult{}, cerrdefs.ErrNotFound.WithMessage("No such image: " + opts.Image)
	}
	for _, c := range f.containers {
		if c.opts.Name == opts.Name && !c.removed {
			return client.ContainerCreateResult{}, cerrdefs.ErrConflict.WithMessage("name in use")
		}
	}
	f.next++
	id := fmt.Sprintf("c%063d", f.next)
	f.containers[id] = &fakeContainer{id: id, opts: opts, state: container.StateCreated, exited: make(chan struct{})}
	return client.ContainerCreateResult{ID: id}, nil
}

func (f *fakeEngine) ContainerStart(ctx context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start %s", id[:4])
	c, err := f.get(id)
	if err != nil {
		return client.ContainerStartResult{}, err
	}
	if f.startErr != nil {
		return client.ContainerStartResult{}, f.startErr
	}
	c.state = container.StateRunning
	return client.ContainerStartResult{}, nil
}

func (f *fakeEngine) ContainerWait(ctx context.Context, id string, _ client.ContainerWaitOptions) client.ContainerWaitResult {
	res := make(chan container.WaitResponse, 1)
	errc := make(chan error, 1)
	f.mu.Lock()
	c, err := f.get(id)
	f.mu.Unlock()
	if err != nil {
		errc <- err
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	go func() {
		select {
		case <-c.exited:
			f.mu.Lock()
			res <- container.WaitResponse{StatusCode: int64(c.code)}
			f.mu.Unlock()
		case <-ctx.Done():
			errc <- ctx.Err()
		}
	}()
	return client.ContainerWaitResult{Result: res, Error: errc}
}

func (f *fakeEngine) ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop %s t=%d", id[:4], *opts.Timeout)
	c, err := f.get(id)
	if err != nil {
		return client.ContainerStopResult{}, err
	}
	if !f.ignoreStop {
		f.exitLocked(c, 128+15, false)
	}
	return client.ContainerStopResult{}, nil
}

func (f *fakeEngine) ContainerKill(ctx context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("kill %s %s", id[:4], opts.Signal)
	c, err := f.get(id)
	if err != nil {
		return client.ContainerKillResult{}, err
	}
	if c.state != container.StateRunning {
		return client.ContainerKillResult{}, cerrdefs.ErrConflict.WithMessage("container is not running")
	}
	f.exitLocked(c, 128+9, false)
	return client.ContainerKillResult{}, nil
}

func (f *fakeEngine) ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remove %s", id[:4])
	defer f.landAbandoned()
	c, err := f.get(id)
	if err != nil {
		return client.ContainerRemoveResult{}, err
	}
	if c.state == container.StateRunning && !opts.Force {
		return client.ContainerRemoveResult{}, cerrdefs.ErrConflict.WithMessage("container is running")
	}
	f.exitLocked(c, 128+9, false)
	c.removed = true
	return client.ContainerRemoveResult{}, nil
}

func (f *fakeEngine) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(id)
	if err != nil {
		return client.ContainerInspectResult{}, err
	}
	ports := network.PortMap{}
	if !f.noPublish && c.opts.HostConfig != nil {
		for p, bs := range c.opts.HostConfig.PortBindings {
			for _, b := range bs {
				ports[p] = append(ports[p], network.PortBinding{HostIP: b.HostIP, HostPort: "49153"})
			}
		}
	}
	if f.noPublish {
		ports = nil
	}
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.id,
		State: &container.State{Status: c.state, Running: c.state == container.StateRunning,
			ExitCode: c.code, OOMKilled: c.oom, StartedAt: "2025-01-02T03:04:05.000000006Z"},
		Config:          c.opts.Config,
		NetworkSettings: &container.NetworkSettings{Ports: ports},
	}}, nil
}

func (f *fakeEngine) ContainerStatPath(ctx context.Context, id string, opts client.ContainerStatPathOptions) (client.ContainerStatPathResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stat %s", opts.Path)
	if _, err := f.get(id); err != nil {
		return client.ContainerStatPathResult{}, err
	}
	if !f.files[opts.Path] {
		return client.ContainerStatPathResult{}, cerrdefs.ErrNotFound.WithMessage("Could not find the file " + opts.Path)
	}
	return client.ContainerStatPathResult{Stat: container.PathStat{Name: opts.Path}}, nil
}

func (f *fakeEngine) ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, c := range f.containers {
		if c.removed || (!opts.All && c.state != container.StateRunning) {
			continue
		}
		match := true
		for want := range opts.Filters["label"] {
			k, v, _ := strings.Cut(want, "=")
			if c.opts.Config.Labels[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, container.Summary{ID: c.id, Labels: c.opts.Config.Labels, State: c.state})
		}
	}
	return client.ContainerListResult{Items: out}, nil
}

func (f *fakeEngine) ContainerLogs(ctx context.Context, id string, opts client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(id)
	if err != nil {
		return nil, err
	}
	if !opts.Follow {
		return io.NopCloser(bytes.NewReader(bytes.Clone(c.logs.Bytes()))), nil
	}
	// Follow: what is written until the container ends or ctx does.
	pr, pw := io.Pipe()
	go func() {
		off := 0
		for {
			f.mu.Lock()
			more := bytes.Clone(c.logs.Bytes()[off:])
			off += len(more)
			running := c.state == container.StateRunning
			f.mu.Unlock()
			if len(more) > 0 {
				if _, err := pw.Write(more); err != nil {
					return
				}
			}
			if !running && len(more) == 0 {
				pw.Close()
				return
			}
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return pr, nil
}

func (f *fakeEngine) Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("events")
	var pending []events.Message
	for cid := range opts.Filters["container"] {
		if f.oomEvents[cid] {
			pending = append(pending, events.Message{Type: events.ContainerEventType, Action: "oom", Actor: events.Actor{ID: cid}})
		}
	}
	msgs := make(chan events.Message)
	errs := make(chan error, 1)
	go func() {
		// The stream ends at its "until", after the events it holds.
		for _, m := range pending {
			select {
			case msgs <- m:
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
		errs <- io.EOF
	}()
	return client.EventsResult{Messages: msgs, Err: errs}
}

func (f *fakeEngine) Close() error { return nil }

var _ engine = (*fakeEngine)(nil)

// loopback is 127.0.0.1 for port bindings in tests.
var loopback = netip.MustParseAddr("127.0.0.1")
