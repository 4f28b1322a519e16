// Package backend defines the contract every place that runs instances
// implements: local processes, Docker containers and Kubernetes.
//
// The contract is small (Nomad's task driver, made smaller): start an
// instance from a spec, wait for it to exit, stop it with a grace period,
// and recover the instances an earlier tandem process left running.
// Readiness is not the backend's business: the controller probes the
// address a backend reports, the same way for every backend.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"tandem/internal/manifest"
)

// Labels every backend attaches to what it starts, so that a later tandem
// process can find, adopt or remove it.
const (
	LabelManaged    = "tandem.managed"
	LabelDeployment = "tandem.deployment"
	LabelRevision   = "tandem.revision"
	LabelInstance   = "tandem.instance"
)

// Spec is what to start.
type Spec struct {
	// ID names the instance; unique across deployments. Chosen by the caller.
	ID string
	// Deployment is the manifest's name.
	Deployment string
	// Revision is the manifest's hash; instances of one revision are interchangeable.
	Revision string
	// Manifest is the full, validated manifest with defaults set. Read only.
	Manifest *manifest.Manifest
	// Env is added to the manifest's runtime.env (tandem's own variables).
	Env map[string]string
	// Mounts are host files or folders the instance must see (container
	// backends bind them; the process backend sees the host already).
	Mounts []Mount
	// Annotations are kept by replica backends beside the platform objects
	// (tandem's deployment record, shared with other tandem processes).
	Annotations map[string]string
}

// Mount is a host path made visible inside an instance.
type Mount struct {
	Source   string // absolute host path
	Target   string // path inside the instance
	ReadOnly bool
}

// Instance is a started instance as a backend reports it.
type Instance struct {
	ID         string `json:"id"`
	Deployment string `json:"deployment"`
	Revision   string `json:"revision"`
	// Addr is host:port where the instance serves HTTP, reachable from tandem.
	Addr      string    `json:"addr"`
	StartedAt time.Time `json:"started_at"`
	// Phases holds how long each step of Start took, in order (for example
	// "exec" for a process, "create" and "start" for a container).
	Phases []Phase `json:"phases,omitempty"`
	// Containment says what holds all of the instance's processes, so that
	// stopping it ends them all: "cgroup" or "process-group" (the process
	// backend; a daemon that calls setsid leaves a process group). Empty
	// for backends whose engine contains instances (containers, pods).
	Containment string `json:"containment,omitempty"`
}

// Phase is one timed step of starting an instance.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
}

// Exit says how an instance ended.
type Exit struct {
	// Code is the exit status, or -1 when the instance was killed by a signal.
	Code int `json:"code"`
	// Signal names the signal that killed it, if any.
	Signal string `json:"signal,omitempty"`
	// OOM is true when the instance was killed for exceeding its memory limit.
	OOM bool `json:"oom,omitempty"`
	// Err is set when the backend lost track of the instance.
	Err error     `json:"-"`
	At  time.Time `json:"at"`
	// Reason, when set, says why tandem ended the instance (a Lambda
	// function that failed its init or overran its deadline); String puts
	// it first.
	Reason string `json:"reason,omitempty"`
}

func (e Exit) String() string {
	if e.Reason != "" {
		base := e
		base.Reason = ""
		return e.Reason + " (" + base.String() + ")"
	}
	switch {
	case e.OOM:
		return "killed: out of memory (exceeded resources.memory)"
	case e.Err != nil:
		return "lost: " + e.Err.Error()
	case e.Signal != "":
		return "killed by signal " + e.Signal
	default:
		return fmt.Sprintf("exited with code %d", e.Code)
	}
}

// Backend runs instances. All methods are safe to call concurrently.
type Backend interface {
	// Name is the backend's name as written in a manifest ("process").
	Name() string
	// Start starts an instance and returns once it has been started (not
	// once it is ready). It honours ctx while starting; once Start returns,
	// the instance runs until Stop or until it exits by itself.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Wait returns a channel that receives exactly one Exit when the
	// instance ends, for any reason, then is closed. It does not block.
	// It fails with ErrNotFound for an unknown id.
	Wait(id string) (<-chan Exit, error)
	// Stop asks the instance to end (SIGTERM or the engine's equivalent),
	// and kills it once grace has passed. It blocks until the instance has
	// ended or ctx is done. Stopping an instance that already ended is not
	// an error.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// List returns the instances this backend is tracking.
	List(ctx context.Context) ([]Instance, error)
	// Recover finds instances left running by an earlier tandem process with
	// the same data directory, starts tracking them (Wait and Stop work on
	// them afterwards) and returns them. The caller adopts or stops each.
	Recover(ctx context.Context) ([]Instance, error)
	// Close stops tracking without stopping instances (so that a restart
	// can adopt them). Use Stop first to end them.
	Close() error
}

// LogReader is implemented by backends that keep instance output.
type LogReader interface {
	// Logs writes the last tail lines (all when tail <= 0) of every instance
	// of a deployment, oldest instance first, each line prefixed with the
	// instance id.
	Logs(ctx context.Context, deployment string, tail int, w io.Writer) error
}

// LogFollower is implemented by backends that can stream instance output
// as it is written (tandem logs -f).
type LogFollower interface {
	// FollowLogs writes what LogReader.Logs writes, then each line the
	// deployment's instances write afterwards, instances started later
	// included, calling flush (never nil) after each batch so that the lines
	// reach a remote reader. It blocks until ctx ends and then returns nil;
	// it returns early, with nil, when writing to w fails. Safe to call
	// concurrently with everything else, and by many followers at once.
	FollowLogs(ctx context.Context, deployment string, tail int, w io.Writer, flush func()) error
}

// Checker is implemented by backends that cannot honour every manifest
// field. The controller calls Check when a manifest is deployed, so that a
// field the backend would ignore is refused at deploy instead of silently
// having no effect. Check returns nil or a *manifest.Error listing every
// field it cannot honour, each Problem's message naming the backend.
type Checker interface {
	Check(m *manifest.Manifest) error
}

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("instance not found")
	// ErrStartFailed wraps every failure to start an instance.
	ErrStartFailed = errors.New("instance failed to start")
)

// ReplicaBackend is implemented by platforms that run the replicas
// themselves (Kubernetes): tandem decides how many, the platform starts,
// restarts and stops them, and reports which are ready. The controller
// uses it instead of Backend's per-instance calls. All methods are safe to
// call concurrently.
type ReplicaBackend interface {
	// Name is the backend's name as written in a manifest ("kubernetes").
	Name() string
	// Apply creates or updates the platform objects for a deployment's
	// revision, leaving the replica count as it is (new objects start at 0).
	Apply(ctx context.Context, spec Spec) error
	// Scale sets the replica count. It does not wait for replicas.
	Scale(ctx context.Context, deployment string, replicas int) error
	// Replicas returns the replica count the platform is asked for now
	// (-1 when the deployment has no objects).
	Replicas(ctx context.Context, deployment string) (int, error)
	// Watch sends the ready endpoints of a deployment (Addr = ip:port, ID =
	// pod name) each time they change, the current set first, until ctx is
	// done. It never calls the platform per request: it follows a watch.
	Watch(ctx context.Context, deployment string) (<-chan []Instance, error)
	// Delete removes a deployment's objects.
	Delete(ctx context.Context, deployment string) error
	// Close releases the backend's resources.
	Close() error
}

// Catalog is implemented by replica backends that keep each deployment's
// Spec.Annotations on the platform, so that several tandem processes
// sharing it see the same deployments.
type Catalog interface {
	// Annotation returns, for every deployment tandem manages there, the
	// value of the named annotation ("" when absent).
	Annotation(ctx context.Context, key string) (map[string]string, error)
}

// Leader is implemented by backends shared by several tandem processes:
// only the leader changes replica counts (others may still wake a
// deployment from zero for a waiting request).
type Leader interface {
	// IsLeader reports whether this process holds the lease now.
	IsLeader() bool
}

// LeaderLocator is implemented by Leader backends whose processes publish
// where they can be reached (their peer address), so that followers can
// report their traffic to the leader (internal/peerstats).
type LeaderLocator interface {
	Leader
	// LeaderAddr returns the leader's peer address (host:port), "" when no
	// leader is known or it published none. It does not block; the answer
	// may lag a change of leader by the platform's retry period.
	LeaderAddr() string
}
