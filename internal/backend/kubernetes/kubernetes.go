package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"tandem/internal/backend"
)

// Defaults for Config.
const (
	DefaultNamespace     = "tandem"
	DefaultLeaseName     = "tandem-leader"
	DefaultLeaseDuration = 15 * time.Second
)

// Guards: the controller drives replicas through ReplicaBackend and asks
// Leader who may change them.
var (
	_ backend.ReplicaBackend = (*Backend)(nil)
	_ backend.Catalog        = (*Backend)(nil)
	_ backend.Leader         = (*Backend)(nil)
	_ backend.LeaderLocator  = (*Backend)(nil)
)

// ErrNotManaged is returned when an object with a deployment's name exists
// but was not made by tandem; tandem neither changes nor deletes it.
var ErrNotManaged = errors.New("object exists but is not managed by tandem")

// Config configures a Backend. The zero value runs in a cluster, in the
// namespace "tandem".
type Config struct {
	// Kubeconfig is a kubeconfig file; empty means the in-cluster service
	// account (or $KUBECONFIG when not in a cluster).
	Kubeconfig string
	// Namespace holds the models' objects and the lease (default "tandem").
	Namespace string
	// Identity names this process as a lease holder (default hostname-pid).
	Identity string
	// LeaseName is the coordination.k8s.io Lease the tandem processes of
	// one cluster contend for (default "tandem-leader").
	LeaseName string
	// LeaseDuration is how long a lease lasts without renewal, so how long
	// the others wait after a leader dies before taking over (default 15s).
	LeaseDuration time.Duration
	// PeerAddr is where the other tandem processes reach this one
	// (host:port of its admin listener, for example POD_IP:8081). The
	// lease holder publishes it on the Lease (AnnotationPeerAddr) so that
	// followers can report their traffic to it (internal/peerstats).
	// Empty: this process, when it leads, receives no reports.
	PeerAddr string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// HostNetwork runs model pods in the node's network namespace. It is
	// meant for single-node test clusters without a pod network; programs
	// then listen on the node's port (runtime.port, else one derived from
	// the deployment's name) and only one replica per node can run.
	HostNetwork bool
	// ImagePullPolicy defaults to IfNotPresent, so that images imported
	// into the node (hack/local-cluster.sh load) are used as they are.
	ImagePullPolicy corev1.PullPolicy
}

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.LeaseName == "" {
		c.LeaseName = DefaultLeaseName
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	return c
}

// Backend runs deployments as Kubernetes Deployments. It follows pods with
// one informer and contends for a Lease from New until Close.
type Backend struct {
	cfg    Config
	client k8s.Interface
	log    *slog.Logger
	pods   *podWatcher

	leader atomic.Bool
	// lease is the holder and its peer address as the lease was last read
	// or written (by the contending goroutine); nil before the first read.
	lease atomic.Pointer[leaseView]
	// release gives the lease up on Close; tests turn it off to play a
	// tandem that dies without a word.
	release bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  sync.Once
}

// New connects to the cluster cfg names and starts following its pods and
// contending for the lease. It does not wait for either.
func New(cfg Config) (*Backend, error) {
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	// Scaling from zero is on a request's path: no client-side throttling.
	rc.QPS, rc.Burst = 100, 200
	rc.UserAgent = "tandem"
	client, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return NewWithClient(client, cfg), nil
}

// NewWithClient is New with a ready client (a fake clientset in unit tests).
func NewWithClient(client k8s.Interface, cfg Config) *Backend {
	return newBackend(client, cfg, true)
}

func newBackend(client k8s.Interface, cfg Config, release bool) *Backend {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	b := &Backend{
		cfg:     cfg,
		client:  client,
		log:     cfg.Logger.With("component", "kubernetes", "namespace", cfg.Namespace),
		cancel:  cancel,
		release: release,
	}
	b.pods = newPodWatcher(ctx, client, cfg.Namespace, cfg.HostNetwork, b.log)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.pods.run(ctx)
	}()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.contend(ctx)
	}()
	return b
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	rc, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		if env := os.Getenv("KUBECONFIG"); env != "" {
			return clientcmd.BuildConfigFromFlags("", env)
		}
	}
	return rc, err
}

// Name is "kubernetes".
func (b *Backend) Name() string { return "kubernetes" }

// Namespace is where the backend keeps its objects.
func (b *Backend) Namespace() string { return b.cfg.Namespace }

// Identity is this process's name as a lease holder.
func (b *Backend) Identity() string { return b.cfg.Identity }

// IsLeader reports whether this process holds the lease now.
func (b *Backend) IsLeader() bool { return b.leader.Load() }

// LeaderAddr returns the peer address the lease holder published, "" when
// the lease has no holder, the holder published none, or the lease was
// not read yet. A follower reads the lease once per retry period (2 s by
// default), so the answer may be that old. It does not block.
func (b *Backend) LeaderAddr() string {
	if v := b.lease.Load(); v != nil {
		return v.addr
	}
	return ""
}

// closeWait bounds how long Close waits to give the lease up (an API
// server that does not answer must not hang tandem's shutdown).
const closeWait = 5 * time.Second

// Close stops following pods and gives the lease up (so that another
// tandem takes over at once). It leaves every Deployment as it is, for a
// restart to adopt. It blocks until the lease is released, or closeWait.
func (b *Backend) Close() error {
	b.closed.Do(func() {
		b.leader.Store(false)
		b.cancel()
		done := make(chan struct{})
		go func() {
			b.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeWait):
			b.log.Warn("closing: lease not released in time; it expires by itself", "after", closeWait)
		}
		b.leader.Store(false)
	})
	return nil
}
