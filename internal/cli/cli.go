// Package cli is tandem's command line: `tandem serve` runs the server;
// the other commands talk to its control API.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"tandem/internal/api"
)

// Version is set at build time with -ldflags "-X tandem/internal/cli.Version=...".
var Version = "dev"

// Execute runs the command line and returns the exit code: 2 for a usage
// error (with a pointer to --help), 1 for a runtime error (see ExitCode).
// An interrupt cancels the command's context (logs -f then ends cleanly);
// a second one kills as usual, for commands that do not watch it.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	root := NewRoot()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	code := ExitCode(err)
	if code == ExitUsage && cmd != nil {
		fmt.Fprintf(os.Stderr, "See '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// Extra commands mounted under the root (for example `tandem runtime`).
var extra []func() *cobra.Command

// Register adds a command constructor; packages call it from init.
func Register(f func() *cobra.Command) { extra = append(extra, f) }

// NewRoot builds the command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "tandem",
		Short:         "Serve models serverless, dedicated or both, on processes, Docker or Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.PersistentFlags().String("admin", envOr("TANDEM_ADMIN", "127.0.0.1:8081"), "control API address (env TANDEM_ADMIN)")
	addClientFlags(root.PersistentFlags())
	root.AddCommand(serveCmd(), deployCmd(), lsCmd(), statusCmd(), deleteCmd(), logsCmd(), invokeCmd(), runtimeCmd(), jetstreamCmd())
	for _, f := range extra {
		root.AddCommand(f())
	}
	markRunErrors(root)
	return root
}

func client(cmd *cobra.Command) *api.Client {
	return adminClient(cmd)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
