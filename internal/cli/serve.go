package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"tandem/internal/api"
	"tandem/internal/backend"
	"tandem/internal/backend/docker"
	"tandem/internal/backend/kubernetes"
	"tandem/internal/backend/process"
	"tandem/internal/controller"
	"tandem/internal/cost"
	"tandem/internal/gateway"
	"tandem/internal/inference"
	"tandem/internal/manifest"
	"tandem/internal/metrics"
	"tandem/internal/store"
)

// Hooks let optional parts (ONNX runtime, v2 protocol, other backends)
// plug into `tandem serve` without the core importing them.
type Hooks struct {
	// Backends adds backends by name; called once at start.
	Backends []func(dataDir string, log *slog.Logger) (backend.Backend, error)
	// Configure adjusts the controller's config (Describe, PrepareSpec).
	Configure []func(cfg *controller.Config)
	// Mount adds routes to the gateway (and may start listeners); it gets
	// the controller and the metrics, and returns a stop function or nil.
	Mount []func(ctx context.Context, g *gateway.Gateway, c *controller.Controller, m *metrics.Metrics, log *slog.Logger) (func(), error)
}

// ServeHooks is filled by init functions of optional packages.
var ServeHooks Hooks

type serveOpts struct {
	listen, adminListen, grpcListen, dataDir, backend, logLevel, docker, prices string
	tick                                                                        time.Duration
	grpcExplicit                                                                bool
	kubeconfig, kubeNamespace                                                   string
	kubeHostNetwork                                                             bool
}

func serveCmd() *cobra.Command {
	var o serveOpts
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway, the control API and the autoscaler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.grpcExplicit = cmd.Flags().Changed("grpc-listen")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "gateway address")
	f.StringVar(&o.adminListen, "admin-listen", "127.0.0.1:8081", "control API and /metrics address")
	f.StringVar(&o.grpcListen, "grpc-listen", "127.0.0.1:8082", "Open Inference Protocol v2 gRPC address (empty: off)")
	f.StringVar(&o.dataDir, "data-dir", "./.tandem", "where deployments, logs and instance state live")
	f.StringVar(&o.backend, "backend", "process", "default backend for manifests that name none")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.tick, "autoscale-interval", time.Second, "how often each deployment's autoscaler decides")
	f.StringVar(&o.prices, "prices", "", "price table (YAML) for the cost meter; default: prices/default.yaml's values")
	f.StringVar(&o.docker, "docker", "auto", "Docker backend: on, off, or auto (on when a Docker engine socket is found)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubernetes backend: kubeconfig file (in a cluster: empty uses the pod's service account)")
	f.StringVar(&o.kubeNamespace, "kube-namespace", "tandem", "Kubernetes backend: namespace of the models' objects")
	f.BoolVar(&o.kubeHostNetwork, "kube-host-network", false, "Kubernetes backend: run model pods on the node's network")
	return cmd
}

func serve(ctx context.Context, o serveOpts) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	dataDir, _ := filepath.Abs(o.dataDir)
	st, err := store.Open(dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	prices := cost.DefaultPrices()
	if o.prices != "" {
		if prices, err = cost.LoadPrices(o.prices); err != nil {
			return fmt.Errorf("--prices: %w", err)
		}
	}
	meter, err := cost.Open(dataDir, prices, log, time.Now())
	if err != nil {
		return err
	}
	meterCtx, stopMeter := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() { defer close(meterDone); meter.Run(meterCtx, time.Second, 10*time.Second) }()
	// Runs after the controller has stopped every instance (and told the
	// meter), before st.Close.
	defer func() {
		stopMeter()
		<-meterDone
		if err := meter.Close(time.Now()); err != nil {
			log.Error("closing the cost meter", "err", err)
		}
	}()

	backends := map[string]backend.Backend{}
	pb, err := process.New(process.Config{DataDir: dataDir, Logger: log.With("component", "process")})
	if err != nil {
		return err
	}
	backends[pb.Name()] = pb
	if useDocker(o) {
		db, err := docker.New(docker.Config{DataDir: dataDir, Logger: log.With("component", "docker")})
		switch {
		case err == nil:
			backends[db.Name()] = db
		case o.docker == "on" || o.backend == manifest.BackendDocker:
			return fmt.Errorf("docker backend: %w (run scripts/docker.sh install start)", err)
		default:
			log.Warn("docker backend unavailable", "err", err)
		}
	}
	for _, mk := range ServeHooks.Backends {
		be, err := mk(dataDir, log)
		if err != nil {
			if be != nil && be.Name() == o.backend {
				return err
			}
			log.Warn("backend unavailable", "err", err)
			continue
		}
		if be != nil {
			backends[be.Name()] = be
		}
	}
	replicas := map[string]backend.ReplicaBackend{}
	if o.backend == manifest.BackendKubernetes || o.kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		klog.SetSlogLogger(log.With("component", "client-go"))
		kb, err := kubernetes.New(kubernetes.Config{Kubeconfig: o.kubeconfig, Namespace: o.kubeNamespace,
			HostNetwork: o.kubeHostNetwork, Logger: log.With("component", "kubernetes")})
		if err != nil {
			return fmt.Errorf("kubernetes backend: %w", err)
		}
		defer kb.Close()
		replicas[kb.Name()] = kb
	}
	_, inst := backends[o.backend]
	_, repl := replicas[o.backend]
	if !inst && !repl {
		return fmt.Errorf("--backend %s is not available here", o.backend)
	}
	self, _ := os.Executable()
	m := metrics.New()
	m.Registry.MustRegister(meter)
	cfg := controller.Config{
		Store: st, Backends: backends, ReplicaBackends: replicas, DefaultBackend: o.backend, Metrics: m,
		Logger: log, Tick: o.tick, SelfExe: self, Meter: meter,
		Describe: describeModel, PrepareSpec: prepareSpec(self),
	}
	for _, f := range ServeHooks.Configure {
		f(&cfg)
	}
	ctrl := controller.New(cfg)

	gl, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	al, err := net.Listen("tcp", o.adminListen)
	if err != nil {
		gl.Close()
		return fmt.Errorf("--admin-listen: %w", err)
	}
	if err := ctrl.Start(ctx); err != nil {
		return err
	}
	gw := gateway.New(ctrl, log)
	v2 := inference.NewService(v2Models{ctrl}, inference.Options{Registerer: m.Registry, ServerVersion: Version,
		Logger: log.With("component", "v2")})
	gw.Handle("/v2", v2.Handler())
	gw.Handle("/v2/", v2.Handler())
	var gl2 net.Listener
	if o.grpcListen != "" {
		gl2, err = net.Listen("tcp", o.grpcListen)
		switch {
		case err == nil:
			gsrv2 := v2.GRPCServer()
			go gsrv2.Serve(gl2)
			defer gsrv2.GracefulStop()
		case o.grpcExplicit:
			return fmt.Errorf("--grpc-listen: %w", err)
		default:
			// The default port is a convenience: a clash must not stop tandem.
			log.Warn("gRPC endpoint off: default --grpc-listen port is taken", "err", err)
			gl2 = nil
		}
	}
	var stops []func()
	for _, mount := range ServeHooks.Mount {
		stopFn, err := mount(ctx, gw, ctrl, m, log)
		if err != nil {
			return err
		}
		if stopFn != nil {
			stops = append(stops, stopFn)
		}
	}
	info := api.Info{Gateway: gl.Addr().String(), Version: Version}
	if gl2 != nil {
		info.GRPC = gl2.Addr().String()
	}
	gsrv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	admin := api.NewServer(ctrl, m, info, log)
	meter.Mount(admin.Handle)
	asrv := &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- gsrv.Serve(gl) }()
	go func() { errc <- asrv.Serve(al) }()
	log.Info("tandem serving", "gateway", gl.Addr().String(), "admin", al.Addr().String(), "grpc", info.GRPC,
		"data_dir", dataDir, "backends", strings.Join(append(keys(backends), keys(replicas)...), ","), "deployments", len(ctrl.Names()))

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("listener failed", "err", err)
	}
	log.Info("shutting down: stopping instances")
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gsrv.Shutdown(sctx)
	for _, s := range stops {
		s()
	}
	if serr := ctrl.Shutdown(sctx); serr != nil {
		log.Error("shutdown", "err", serr)
	}
	asrv.Shutdown(sctx)
	for _, be := range backends {
		be.Close()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func useDocker(o serveOpts) bool {
	switch {
	case o.docker == "on" || o.backend == manifest.BackendDocker:
		return true
	case o.docker == "off":
		return false
	}
	if os.Getenv("DOCKER_HOST") != "" {
		return true
	}
	_, err := os.Stat("/var/run/docker.sock")
	return err == nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
