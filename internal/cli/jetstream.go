package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"tandem/internal/jetstream"
)

func jetstreamCmd() *cobra.Command {
	var listen, dir, tokenFile string
	var maxStore int64
	cmd := &cobra.Command{
		Use:   "jetstream",
		Short: "Run the shared job queue (an embedded NATS JetStream server) for several tandem replicas",
		Long: `Runs a NATS server with JetStream on, holding the async jobs of tandem
replicas started with --jobs-nats, so that a job accepted by one replica is
run by another when the first is lost (docs/async.md). On any address but
loopback it needs --token-file; clients give the same token.`,
		Example: `  tandem jetstream --listen 127.0.0.1:4222 --store-dir /var/lib/tandem-jetstream
  tandem jetstream --listen 0.0.0.0:4222 --store-dir /data --token-file /etc/tandem/jetstream/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			token := ""
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("reading --token-file: %w", err)
				}
				if token = strings.TrimSpace(string(b)); token == "" {
					return fmt.Errorf("--token-file %s is empty", tokenFile)
				}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			s, err := jetstream.Start(jetstream.Config{Listen: listen, StoreDir: dir, Token: token, MaxStore: maxStore, Logger: log})
			if err != nil {
				return err
			}
			log.Info("jetstream serving", "url", s.URL(), "store", dir)
			<-cmd.Context().Done()
			s.Shutdown()
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "address for NATS clients")
	cmd.Flags().StringVar(&dir, "store-dir", "", "folder that keeps the streams (required)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the token clients must give (required off loopback)")
	cmd.Flags().Int64Var(&maxStore, "max-store", 1<<30, "most bytes kept on disk")
	cmd.MarkFlagRequired("store-dir")
	return cmd
}
