// Package server is tandem's composition root: it builds the store, the
// cost meter, the backends, the controller, the gateway with its request
// pipeline and protocol adapters, and the control API, and runs them with
// explicit lifecycles. Start order: store, meter, backends, controller,
// listeners; stop order is the reverse, so that every instance is stopped
// (and metered) before the meter and the store close.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"tandem/internal/api"
	"tandem/internal/backend"
	"tandem/internal/backend/docker"
	"tandem/internal/backend/kubernetes"
	"tandem/internal/backend/process"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/dashboard"
	"tandem/internal/gateway"
	"tandem/internal/inference"
	"tandem/internal/jetstream"
	"tandem/internal/jobs"
	"tandem/internal/lambda"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/peerstats"
	"tandem/internal/runtime/onnx"
	"tandem/internal/runtime/python"
	"tandem/internal/shadow"
	"tandem/internal/store"
	"tandem/internal/tenant"
	"tandem/internal/tracing"
)

// Config is what `tandem serve` is told. The zero value of an optional
// field means its default.
type Config struct {
	Listen, AdminListen string
	// GRPCListen is the v2 gRPC address ("" = off). When GRPCRequired is
	// false, a taken address only warns (the default port is a convenience).
	GRPCListen   string
	GRPCRequired bool
	DataDir      string
	// Backend is the default backend for manifests that name none.
	Backend string
	// Docker is on, off or auto.
	Docker                    string
	Kubeconfig, KubeNamespace string
	KubeHostNetwork           bool
	// PeerAddr is where the other tandem processes sharing the Kubernetes
	// cluster reach this one's control API, to report their traffic when
	// it leads (host:port). "" means $POD_IP with the admin listener's
	// port in a pod, else the admin listener's address when it names one.
	PeerAddr string
	// Prices is a price table file; "" uses the built-in table.
	Prices string
	// Tick is how often each deployment's autoscaler decides.
	Tick time.Duration
	// MaxInstances bounds scaling.max on this server.
	MaxInstances int
	// Auth is the gateway's authentication: AuthNone or AuthKeys (every
	// request needs a tenant's API key).
	Auth string
	// AdminToken is the control API's bearer token; "" means none, and
	// then the control API must listen on loopback. AdminTokenFile, when
	// set, is a file holding it instead (see docs/security.md).
	AdminToken, AdminTokenFile string
	// TLSCert and TLSKey (PEM files), when set, make the gateway, gRPC and
	// control API listeners serve TLS.
	TLSCert, TLSKey string
	// Limits bound what clients may send to both listeners.
	Limits gateway.Limits
	// JobsRetention is how long finished asynchronous jobs are kept (0 =
	// jobs.DefaultRetention); JobsBackoff is the wait before a job's first
	// retry (0 = jobs.DefaultBackoff).
	JobsRetention, JobsBackoff time.Duration
	// JobsNATS, when set, keeps the jobs on this JetStream server
	// (nats://host:port, `tandem jetstream`) shared with the other tandem
	// replicas, instead of jobs.db; JobsNATSTokenFile holds its token.
	JobsNATS, JobsNATSTokenFile string
	// Tracing says where request spans go (--otlp-endpoint, OTEL_*); off
	// when it names no endpoint.
	Tracing tracing.Config
	Version string
	Logger  *slog.Logger
}

// Run serves until ctx is done or a listener fails, then stops everything
// it started, in reverse order.
func Run(ctx context.Context, cfg Config) (err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	sec, err := openSecurity(cfg, log)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	dataDir, _ := filepath.Abs(cfg.DataDir)
	var stack stopStack
	defer stack.stop()

	st, err := store.Open(dataDir)
	if err != nil {
		return err
	}
	stack.push(func() { st.Close() })
	tracer, err := openTracing(ctx, cfg, log, &stack)
	if err != nil {
		return err
	}
	audit, err := openAudit(dataDir, &stack)
	if err != nil {
		return err
	}

	meter, err := openMeter(dataDir, cfg.Prices, log, &stack)
	if err != nil {
		return err
	}
	tenants, err := openTenants(st, meter.Prices(), log, &stack)
	if err != nil {
		return err
	}
	// The control API's listener opens before the backends: the
	// kubernetes backend publishes its address to the other tandems.
	al, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("--admin-listen: %w", err)
	}
	stack.push(func() { al.Close() })
	cfg.PeerAddr = peerAddr(cfg.PeerAddr, al.Addr())

	// Templates (Python instances forked from a warm process) end with a
	// revision no longer deployed; the controller says which are.
	var ctrlRef atomic.Pointer[controller.Controller]
	tpls := python.TemplateConfig{DataDir: dataDir, Logger: log, Meter: meter, Live: func(name, rev string) bool {
		c := ctrlRef.Load()
		if c == nil {
			return true
		}
		d, ok := c.Lookup(name)
		return ok && d.Manifest().Hash() == rev
	}}
	backends, replicas, templates, err := openBackends(cfg, dataDir, log, &stack, tpls)
	if err != nil {
		return err
	}
	shareTenants(replicas, tenants, TenantCatalogInterval, log, &stack)
	peers := openPeerStats(ctx, replicas, tenants, sec, cfg.Tick, log, &stack)
	self, _ := os.Executable()
	pyRT, err := openPython(dataDir)
	if err != nil {
		return err
	}
	m := metrics.New()
	m.Registry.MustRegister(meter)
	m.Registry.MustRegister(templates)
	mirror := shadow.New(shadow.Config{}, m.Registry) // shadow traffic's workers
	stack.push(mirror.Close)
	ctrl := controller.New(controller.Config{
		Store: st, Backends: backends, ReplicaBackends: replicas, DefaultBackend: cfg.Backend, Metrics: m,
		Logger: log, Tick: cfg.Tick, Meter: meter, MaxInstances: cfg.MaxInstances,
		Runtimes: []controller.Runtime{onnx.Runtime{Self: self}, lambda.Runtime{Handler: pyRT}, pyRT}, Peers: peers.controller(),
		OnDelete: mirror.Forget,
	})
	ctrlRef.Store(ctrl)

	gl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	stack.push(func() { gl.Close() })
	var grpcL net.Listener
	if cfg.GRPCListen != "" {
		grpcL, err = net.Listen("tcp", cfg.GRPCListen)
		switch {
		case err == nil:
			stack.push(func() { grpcL.Close() })
		case cfg.GRPCRequired:
			return fmt.Errorf("--grpc-listen: %w", err)
		default:
			log.Warn("gRPC endpoint off: default --grpc-listen port is taken", "err", err)
			grpcL = nil
		}
	}

	gl, al, grpcL = sec.listener(gl, "http/1.1"), sec.listener(al, "http/1.1"), sec.listener(grpcL, "h2")
	info := api.Info{Gateway: gl.Addr().String(), Version: cfg.Version, TLS: sec.tls != nil}
	if grpcL != nil {
		info.GRPC = grpcL.Addr().String()
	}
	admin := api.NewServer(ctrl, m, info, log)
	meter.Mount(admin.Handle)
	dashboard.Start(ctx, dashboard.Config{Deployments: ctrl, Costs: meter, Metrics: m.Registry, Logger: log}).Mount(admin.Handle) // /ui
	admin.MountTenants(tenants)
	if peers != nil {
		admin.Handle("POST "+peerstats.Path, peers.Collector)
	}
	asrv := gateway.NewHTTPServer(api.Protect(admin, api.Access{Token: sec.token, Audit: audit, Logger: log,
		Quiet: []string{peerstats.Path}}), cfg.Limits)
	// The control API closes after the instances have stopped.
	stack.push(func() { shutdownHTTP(asrv) })

	if err := ctrl.Start(ctx); err != nil {
		return err
	}
	// The controller stops every instance (and tells the meter) before the
	// backends, the meter and the store close.
	stack.push(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := ctrl.Shutdown(sctx); err != nil {
			log.Error("shutdown", "err", err)
		}
	})
	stack.push(func() { log.Info("shutting down: stopping instances") })

	// The gateway: one pipeline, three doors (pass-through, v2 REST, v2 gRPC).
	gw := gateway.New(ctrl, log)
	gw.SetMirror(mirror)
	admin.SetShadowStats(func(model string) any { return mirror.Stats(model) })
	switch cfg.Auth {
	case AuthKeys:
		gw.Use(tenant.NewStage(tenants, m.Registry))
	case AuthNone, "":
		if !isLoopback(gl.Addr()) {
			log.Warn("THE GATEWAY IS OPEN TO ANYONE WHO CAN REACH IT: --listen is not a loopback address and --auth is none; "+
				"create tenants and keys (tandem tenant create, tandem key create) and start with --auth keys", "listen", gl.Addr().String())
		}
	default:
		return fmt.Errorf("--auth %q: use none or keys", cfg.Auth)
	}
	v2 := inference.NewService(gw.V2Models(), inference.Options{Registerer: m.Registry, ServerVersion: cfg.Version,
		Logger: log.With("component", "v2"), Front: gw})
	gw.Handle("/v2", v2.Handler())
	gw.Handle("/v2/", v2.Handler())
	gw.MountOpenAI(m.Registry) // /v1/: the OpenAI-compatible door
	jobRunner, err := openJobs(cfg, dataDir, ctrl, gw, m.Registry, log, &stack)
	if err != nil {
		return err
	}
	jobRunner.Mount(admin.Handle)
	gw.MountInvoke(gateway.InvokeConfig{Async: jobRunner}) // /2015-03-31/functions/: the Lambda Invoke API; Event invocations are jobs
	gsrv := gateway.NewHTTPServer(tracer.Handler(gw), cfg.Limits)

	errc := make(chan error, 3)
	if grpcL != nil {
		gs := v2.GRPCServer(tracer.GRPCOptions()...)
		go func() { errc <- gs.Serve(grpcL) }()
		stack.push(gs.GracefulStop)
	}
	go func() { errc <- gsrv.Serve(gl) }()
	go func() { errc <- asrv.Serve(al) }()
	stack.push(func() { shutdownHTTP(gsrv) }) // first: no new requests

	names := append(slices.Sorted(mapsKeys(backends)), slices.Sorted(mapsKeys(replicas))...)
	log.Info("tandem serving", "gateway", info.Gateway, "admin", al.Addr().String(), "grpc", info.GRPC,
		"tls", info.TLS, "admin_auth", sec.adminAuth(), "data_dir", dataDir, "backends", strings.Join(names, ","), "deployments", len(ctrl.Names()))
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		log.Error("listener failed", "err", err)
		return err
	}
}

// openJobs opens the asynchronous jobs' store and mounts the async doors
// (docs/async.md). Jobs run through the gateway itself, so every stage,
// queue and meter applies; they stop before the controller stops the
// instances, and what was running then runs again at the next start.
func openJobs(cfg Config, dataDir string, ctrl *controller.Controller, gw *gateway.Gateway, reg prometheus.Registerer, log *slog.Logger, stack *stopStack) (*jobs.Manager, error) {
	var queue *jetstream.Queue
	if cfg.JobsNATS != "" {
		token := ""
		if cfg.JobsNATSTokenFile != "" {
			b, err := os.ReadFile(cfg.JobsNATSTokenFile)
			if err != nil {
				return nil, fmt.Errorf("--jobs-nats-token-file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q, err := jetstream.Open(ctx, jetstream.QueueConfig{URL: cfg.JobsNATS, Token: token, Retention: cfg.JobsRetention})
		if err != nil {
			return nil, fmt.Errorf("--jobs-nats: %w", err)
		}
		queue = q
		stack.push(q.Close)
		log.Info("jobs are kept on a shared JetStream queue", "url", cfg.JobsNATS)
	}
	jm, err := jobs.Open(jobs.Config{
		DataDir: dataDir, Queue: queue, Identify: gw.Identify, Retention: cfg.JobsRetention, Backoff: cfg.JobsBackoff, Logger: log, Registerer: reg,
		Lookup: func(model string) (*manifest.Manifest, bool) {
			d, ok := ctrl.Lookup(model)
			if !ok {
				return nil, false
			}
			return d.Manifest(), true
		},
	})
	if err != nil {
		return nil, err
	}
	gw.MountJobs(jm)
	jm.Start(gw)
	stack.push(func() {
		if err := jm.Close(); err != nil {
			log.Error("closing the jobs' store", "err", err)
		}
	})
	return jm, nil
}

// TenantCatalogInterval is how often each tandem process rereads the
// shared tenant catalog: a tenant or key changed through one replica
// reaches the others within about this (the deployments' catalog's
// interval too).
const TenantCatalogInterval = 2 * time.Second

// Gateway authentication modes.
const (
	AuthNone = "none"
	AuthKeys = "keys"
)

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func openTenants(st *store.Store, prices *cost.Prices, log *slog.Logger, stack *stopStack) (*tenant.Registry, error) {
	reg, err := tenant.Open(st, prices, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); reg.Run(ctx, 10*time.Second) }()
	stack.push(func() { cancel(); <-done })
	return reg, nil
}

// openTracing starts exporting request spans when cfg asks for it; they
// are flushed after the listeners have closed. A nil Tracer is off.
func openTracing(ctx context.Context, cfg Config, log *slog.Logger, stack *stopStack) (*tracing.Tracer, error) {
	tc := cfg.Tracing
	tc.Version = cfg.Version
	t, err := tracing.New(ctx, tc)
	if err != nil || t == nil {
		return nil, err
	}
	log.Info("tracing on: exporting request spans over OTLP", "endpoint", tc.Endpoint)
	stack.push(func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracing.ShutdownTimeout)
		defer cancel()
		if err := t.Shutdown(sctx); err != nil {
			log.Warn("tracing: the last spans were not exported", "err", err)
		}
	})
	return t, nil
}

func shutdownHTTP(s *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.Shutdown(ctx)
}

func openMeter(dataDir, pricesFile string, log *slog.Logger, stack *stopStack) (*cost.Meter, error) {
	prices := cost.DefaultPrices()
	if pricesFile != "" {
		var err error
		if prices, err = cost.LoadPrices(pricesFile); err != nil {
			return nil, fmt.Errorf("--prices: %w", err)
		}
	}
	meter, err := cost.Open(dataDir, prices, log, time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); meter.Run(ctx, time.Second, 10*time.Second) }()
	stack.push(func() {
		cancel()
		<-done
		if err := meter.Close(time.Now()); err != nil {
			log.Error("closing the cost meter", "err", err)
		}
	})
	return meter, nil
}

func openBackends(cfg Config, dataDir string, log *slog.Logger, stack *stopStack, tcfg python.TemplateConfig) (map[string]backend.Backend, map[string]backend.ReplicaBackend, *python.Templates, error) {
	backends := map[string]backend.Backend{}
	pb, err := process.New(process.Config{DataDir: dataDir, Logger: log.With("component", "process")})
	if err != nil {
		return nil, nil, nil, err
	}
	// Instances of a manifest with runtime.template are forked, the rest
	// started by the process backend.
	tb := python.Wrap(pb, tcfg)
	// Function instances (runtime.lambda), forked or not, get their
	// Runtime API from this process.
	fb := lambda.Wrap(tb, lambda.Config{Dir: filepath.Join(dataDir, "lambda"), Logger: log.With("component", "lambda")})
	backends[pb.Name()] = fb
	stack.push(func() { fb.Close() })
	if useDocker(cfg) {
		db, err := docker.New(docker.Config{DataDir: dataDir, Logger: log.With("component", "docker")})
		switch {
		case err == nil:
			backends[db.Name()] = db
			stack.push(func() { db.Close() })
		case cfg.Docker == "on" || cfg.Backend == manifest.BackendDocker:
			return nil, nil, nil, fmt.Errorf("docker backend: %w (run scripts/docker.sh install start)", err)
		default:
			log.Warn("docker backend unavailable", "err", err)
		}
	}
	replicas := map[string]backend.ReplicaBackend{}
	if cfg.Backend == manifest.BackendKubernetes || cfg.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		klog.SetSlogLogger(log.With("component", "client-go"))
		kb, err := kubernetes.New(kubernetes.Config{Kubeconfig: cfg.Kubeconfig, Namespace: cfg.KubeNamespace,
			HostNetwork: cfg.KubeHostNetwork, PeerAddr: cfg.PeerAddr, Logger: log.With("component", "kubernetes")})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kubernetes backend: %w", err)
		}
		replicas[kb.Name()] = kb
		stack.push(func() { kb.Close() })
	}
	_, inst := backends[cfg.Backend]
	_, repl := replicas[cfg.Backend]
	if !inst && !repl {
		return nil, nil, nil, fmt.Errorf("--backend %s is not available here", cfg.Backend)
	}
	return backends, replicas, tb, nil
}

func useDocker(cfg Config) bool {
	switch {
	case cfg.Docker == "on" || cfg.Backend == manifest.BackendDocker:
		return true
	case cfg.Docker == "off":
		return false
	}
	if os.Getenv("DOCKER_HOST") != "" {
		return true
	}
	_, err := os.Stat("/var/run/docker.sock")
	return err == nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// stopStack runs stop functions in the reverse order of push.
type stopStack []func()

func (s *stopStack) push(f func()) { *s = append(*s, f) }

func (s *stopStack) stop() {
	for i := len(*s) - 1; i >= 0; i-- {
		(*s)[i]()
	}
	*s = nil
}

// openPython writes tandem's Python bootstrap under the data folder.
func openPython(dataDir string) (python.Runtime, error) {
	path, err := python.Install(dataDir)
	if err != nil {
		return python.Runtime{}, err
	}
	return python.Runtime{Bootstrap: path, Cache: filepath.Join(dataDir, "python", "pycache")}, nil
}
