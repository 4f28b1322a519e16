package lambda

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Config configures Wrap.
type Config struct {
	// Dir keeps a marker per running function instance, so that a later
	// tandem process knows which instances it recovers are functions (and
	// stops them: their Runtime API died with this process). Required.
	Dir string
	// Region is AWS_REGION of the functions and part of their ARN;
	// default "us-east-1".
	Region string
	Logger *slog.Logger
}

// Backend serves the Lambda Runtime API to the function instances of an
// instance backend (the process backend). See Wrap.
type Backend struct {
	inner backend.Backend
	cfg   Config
	log   *slog.Logger

	mu     sync.Mutex
	fns    map[string]*fnInstance
	closed bool
}

// fnInstance is a function instance the decorator tracks, until a minute
// after it ended (so that a late Wait still gets its Exit).
type fnInstance struct {
	f       *function
	done    chan struct{} // closed once exit is set
	exit    backend.Exit
	waiters []chan backend.Exit
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Checker     = (*Backend)(nil)
	_ backend.LogReader   = (*Backend)(nil)
	_ backend.LogFollower = (*Backend)(nil)
)

// Wrap returns inner with the Lambda Runtime API added: for a spec whose
// manifest has runtime.lambda, Start opens two loopback listeners in this
// process, the instance's Runtime API (its address in
// AWS_LAMBDA_RUNTIME_API) and its ingress (the instance's address, which
// turns each request into an event), then starts the program the spec
// names (a controller.Runtime put it in runtime.command) through inner.
// Other specs pass straight through. Wait, Stop and List see the function
// instance as one; Recover stops the function instances an earlier tandem
// left running instead of returning them.
func Wrap(inner backend.Backend, cfg Config) *Backend {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Backend{inner: inner, cfg: cfg, log: cfg.Logger, fns: map[string]*fnInstance{}}
}

// Name is inner's name: function instances run on it.
func (b *Backend) Name() string { return b.inner.Name() }

// ARN returns the function ARN of a deployment, as the Runtime API and the
// Invoke API name it.
func ARN(region, name string) string {
	return "arn:aws:lambda:" + region + ":" + AccountID + ":function:" + name
}

// Start starts a function instance (see Wrap), or passes spec to inner.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Instance, error) {
	m := spec.Manifest
	if m == nil || m.Runtime.Lambda == nil {
		return b.inner.Start(ctx, spec)
	}
	if len(m.Runtime.Command) == 0 {
		return backend.Instance{}, fmt.Errorf("%w: %s: runtime.lambda has no program to run (runtime.lambda.command, or a runtime for runtime.lambda.handler)", backend.ErrStartFailed, spec.ID)
	}
	if err := os.MkdirAll(b.cfg.Dir, 0o755); err != nil {
		return backend.Instance{}, fmt.Errorf("%w: %s: %v", backend.ErrStartFailed, spec.ID, err)
	}
	fi := &fnInstance{done: make(chan struct{})}
	t0 := time.Now()
	f, err := newFunction(spec.ID, m.Name, ARN(b.cfg.Region, m.Name), m.Runtime.Lambda.Event, m.Timeouts.Request.D(),
		b.log.With("instance", spec.ID), func(string) {
			go b.inner.Stop(context.Background(), spec.ID, 0)
		})
	if err != nil {
		return backend.Instance{}, fmt.Errorf("%w: %s: %v", backend.ErrStartFailed, spec.ID, err)
	}
	fi.f = f
	spec.Env = b.environ(spec, f)
	marker := b.marker(spec.ID)
	if err := os.WriteFile(marker, []byte(spec.Deployment+"\n"), 0o644); err != nil {
		f.exited("the function could not be recorded")
		return backend.Instance{}, fmt.Errorf("%w: %s: recording the function instance: %v", backend.ErrStartFailed, spec.ID, err)
	}
	listen := time.Since(t0)
	inst, err := b.inner.Start(ctx, spec)
	if err != nil {
		f.exited("the function did not start")
		os.Remove(marker)
		return inst, err
	}
	exitCh, err := b.inner.Wait(spec.ID)
	if err != nil {
		b.inner.Stop(context.Background(), spec.ID, 0)
		f.exited("the function was lost")
		os.Remove(marker)
		return backend.Instance{}, fmt.Errorf("%w: %s: %v", backend.ErrStartFailed, spec.ID, err)
	}
	b.mu.Lock()
	b.fns[spec.ID] = fi
	b.mu.Unlock()
	go b.watch(spec.ID, fi, exitCh, marker)
	inst.Addr = f.ingressAddr()
	inst.Phases = append([]backend.Phase{{Name: "runtime-api", Duration: listen}}, inst.Phases...)
	return inst, nil
}

// environ is the instance's tandem variables plus the Lambda ones. A
// variable the manifest's runtime.env sets wins, except the Runtime API's
// address.
func (b *Backend) environ(spec backend.Spec, f *function) map[string]string {
	m := spec.Manifest
	env := maps.Clone(spec.Env)
	if env == nil {
		env = map[string]string{}
	}
	set := func(k, v string) {
		if _, ok := m.Runtime.Env[k]; !ok {
			env[k] = v
		}
	}
	mem := int64(128) // Lambda's default, when no limit is set
	if m.Resources.Memory > 0 {
		mem = max(int64(m.Resources.Memory)>>20, 1)
	}
	handler := m.Runtime.Lambda.Handler
	if handler == "" && len(m.Runtime.Lambda.Command) > 0 {
		handler = m.Runtime.Lambda.Command[0]
	}
	set("AWS_LAMBDA_FUNCTION_NAME", m.Name)
	set("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
	set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", strconv.FormatInt(mem, 10))
	set("AWS_LAMBDA_FUNCTION_TIMEOUT", strconv.Itoa(max(int(m.Timeouts.Request.D()/time.Second), 1)))
	set("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/"+m.Name)
	set("AWS_LAMBDA_LOG_STREAM_NAME", spec.ID)
	set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
	set("AWS_REGION", b.cfg.Region)
	set("AWS_DEFAULT_REGION", b.cfg.Region)
	set("AWS_EXECUTION_ENV", "AWS_Lambda_tandem")
	set("_HANDLER", handler)
	if m.Runtime.Workdir != "" {
		set("LAMBDA_TASK_ROOT", m.Runtime.Workdir)
	}
	env["AWS_LAMBDA_RUNTIME_API"] = f.apiAddr()
	return env
}

func (b *Backend) marker(id string) string { return filepath.Join(b.cfg.Dir, id) }

// watch waits for a function instance's exit, ends its function and
// passes the Exit on, with the reason tandem stopped it, if it did.
func (b *Backend) watch(id string, fi *fnInstance, exitCh <-chan backend.Exit, marker string) {
	e, ok := <-exitCh
	if !ok {
		e = backend.Exit{Code: -1, Err: fmt.Errorf("backend stopped tracking it"), At: time.Now()}
	}
	b.mu.Lock()
	if b.closed {
		// The backend closed, not the instance: its process may run on,
		// and the next tandem's Recover needs the marker to stop it.
		marker = ""
	}
	b.mu.Unlock()
	e.Reason = fi.f.stopReason()
	why := e.String()
	if e.Reason == "" {
		why = "the function " + why
	}
	fi.f.exited(why)
	if marker != "" {
		os.Remove(marker)
	}
	b.mu.Lock()
	fi.exit = e
	close(fi.done)
	for _, w := range fi.waiters {
		w <- e
		close(w)
	}
	fi.waiters = nil
	b.mu.Unlock()
	time.AfterFunc(time.Minute, func() {
		b.mu.Lock()
		if b.fns[id] == fi {
			delete(b.fns, id)
		}
		b.mu.Unlock()
	})
}

// Wait returns a channel that receives the instance's Exit (see
// backend.Backend).
func (b *Backend) Wait(id string) (<-chan backend.Exit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fi, ok := b.fns[id]
	if !ok {
		return b.inner.Wait(id)
	}
	ch := make(chan backend.Exit, 1)
	select {
	case <-fi.done:
		ch <- fi.exit
		close(ch)
	default:
		fi.waiters = append(fi.waiters, ch)
	}
	return ch, nil
}

// Stop stops the instance through inner; a function's listeners close
// when its exit is observed.
func (b *Backend) Stop(ctx context.Context, id string, grace time.Duration) error {
	return b.inner.Stop(ctx, id, grace)
}

// List returns inner's instances, a function instance at its ingress
// address.
func (b *Backend) List(ctx context.Context) ([]backend.Instance, error) {
	insts, err := b.inner.List(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range insts {
		if fi, ok := b.fns[insts[i].ID]; ok {
			insts[i].Addr = fi.f.ingressAddr()
		}
	}
	return insts, err
}

// Recover returns the instances inner recovers, less the function
// instances: their Runtime API was in the tandem process that ended, so
// they are stopped.
func (b *Backend) Recover(ctx context.Context) ([]backend.Instance, error) {
	insts, err := b.inner.Recover(ctx)
	out := insts[:0]
	for _, in := range insts {
		if _, serr := os.Stat(b.marker(in.ID)); serr != nil {
			out = append(out, in)
			continue
		}
		b.log.Info("stopping a function instance left by an earlier tandem: its Runtime API is gone", "instance", in.ID, "deployment", in.Deployment)
		if serr := b.inner.Stop(ctx, in.ID, 0); serr != nil {
			b.log.Warn("stopping a function instance", "instance", in.ID, "err", serr)
			continue
		}
		os.Remove(b.marker(in.ID))
	}
	// Markers of instances that are gone.
	if ents, rerr := os.ReadDir(b.cfg.Dir); rerr == nil {
		for _, e := range ents {
			if _, werr := b.inner.Wait(e.Name()); werr != nil {
				os.Remove(b.marker(e.Name()))
			}
		}
	}
	return out, err
}

// Close closes inner and every function's listeners (the instances keep
// running until the next tandem stops them).
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	err := b.inner.Close()
	b.mu.Lock()
	fis := make([]*fnInstance, 0, len(b.fns))
	for _, fi := range b.fns {
		fis = append(fis, fi)
	}
	b.mu.Unlock()
	for _, fi := range fis {
		fi.f.exited("the function lost its Runtime API: tandem stopped")
	}
	return err
}

// Check passes to inner's, if it has one.
func (b *Backend) Check(m *manifest.Manifest) error {
	if ck, ok := b.inner.(backend.Checker); ok {
		return ck.Check(m)
	}
	return nil
}

// Logs passes to inner's, if it has them.
func (b *Backend) Logs(ctx context.Context, deployment string, tail int, w io.Writer) error {
	if lr, ok := b.inner.(backend.LogReader); ok {
		return lr.Logs(ctx, deployment, tail, w)
	}
	return fmt.Errorf("backend %s keeps no logs", b.inner.Name())
}

// FollowLogs passes to inner's, if it has them.
func (b *Backend) FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error {
	if lf, ok := b.inner.(backend.LogFollower); ok {
		return lf.FollowLogs(ctx, deployment, tail, w, flush)
	}
	return fmt.Errorf("backend %s cannot follow logs", b.inner.Name())
}
