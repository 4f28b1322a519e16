package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/gateway"
	"tandem/internal/server"
)

func serveCmd() *cobra.Command {
	cfg := server.Config{Limits: gateway.DefaultLimits}
	var logLevel string
	var sample float64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway, the control API and the autoscaler",
		Example: `  tandem serve
  tandem serve --listen 0.0.0.0:8080 --auth keys --data-dir /var/lib/tandem
  tandem serve --backend docker --log-level debug
  tandem serve --otlp-endpoint http://127.0.0.1:4318 --trace-sample 0.01`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			if cfg.MaxInstances < 1 {
				return fmt.Errorf("--max-instances must be at least 1, not %d", cfg.MaxInstances)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.GRPCRequired = cmd.Flags().Changed("grpc-listen")
			cfg.Version = Version
			cfg.AdminToken = server.TokenFromEnv()
			if cmd.Flags().Changed("trace-sample") {
				cfg.Tracing.Sample = &sample
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "gateway address")
	f.StringVar(&cfg.AdminListen, "admin-listen", "127.0.0.1:8081", "control API and /metrics address")
	f.StringVar(&cfg.GRPCListen, "grpc-listen", "127.0.0.1:8082", "Open Inference Protocol v2 gRPC address (empty: off)")
	f.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the control API's bearer token (or $TANDEM_ADMIN_TOKEN); without a token the control API listens on loopback only")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM) for the gateway, gRPC and control API listeners; with --tls-key")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key (PEM) for --tls-cert")
	f.StringVar(&cfg.DataDir, "data-dir", "./.tandem", "where deployments, logs and instance state live")
	f.StringVar(&cfg.Backend, "backend", "process", "default backend for manifests that name none")
	f.StringVar(&cfg.Auth, "auth", server.AuthNone, "gateway authentication: none, or keys (every request needs a tenant's API key; see tandem tenant, tandem key)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&cfg.Tick, "autoscale-interval", time.Second, "how often each deployment's autoscaler decides")
	f.IntVar(&cfg.MaxInstances, "max-instances", 256, "the most instances one deployment may have (bounds scaling.max)")
	f.StringVar(&cfg.Prices, "prices", "", "price table (YAML) for the cost meter; default: prices/default.yaml's values")
	f.StringVar(&cfg.Docker, "docker", "auto", "Docker backend: on, off, or auto (on when a Docker engine socket is found)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "Kubernetes backend: kubeconfig file (in a cluster: empty uses the pod's service account)")
	f.StringVar(&cfg.KubeNamespace, "kube-namespace", "tandem", "Kubernetes backend: namespace of the models' objects")
	f.BoolVar(&cfg.KubeHostNetwork, "kube-host-network", false, "Kubernetes backend: run model pods on the node's network")
	f.StringVar(&cfg.PeerAddr, "peer-addr", "", "Kubernetes backend: host:port where the other tandem processes reach this one's control API to report their traffic when it leads (default $POD_IP:<admin port> in a pod, else --admin-listen unless it is 0.0.0.0)")
	f.StringVar(&cfg.Tracing.Endpoint, "otlp-endpoint", "", "export request traces to this OpenTelemetry collector, e.g. http://127.0.0.1:4318 (default $OTEL_EXPORTER_OTLP_ENDPOINT; none: off); see docs/tracing.md")
	f.DurationVar(&cfg.JobsRetention, "jobs-retention", 24*time.Hour, "how long finished asynchronous jobs (and the dead-letter list) are kept")
	f.DurationVar(&cfg.JobsBackoff, "jobs-backoff", time.Second, "wait before an asynchronous job's first retry; each next one doubles it, up to 5m")
	f.StringVar(&cfg.JobsNATS, "jobs-nats", "", "keep asynchronous jobs on this JetStream server (nats://host:port, see tandem jetstream), shared by several tandem replicas, instead of jobs.db under --data-dir")
	f.StringVar(&cfg.JobsNATSTokenFile, "jobs-nats-token-file", "", "file holding the token of the --jobs-nats server")
	f.Float64Var(&sample, "trace-sample", 0, "fraction of requests traced, 0 to 1, unless the caller's traceparent decided (default $OTEL_TRACES_SAMPLER, else all)")
	return cmd
}
