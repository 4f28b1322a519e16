package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() { Register(versionCmd) }

// VersionInfo is what `tandem version -o json` prints.
type VersionInfo struct {
	Client ClientVersion `json:"client"`
	// Server is the control API's answer; nil with --client or when the
	// server could not be reached (ServerError then says why).
	Server      *ServerVersion `json:"server,omitempty"`
	ServerError string         `json:"server_error,omitempty"`
}

// ClientVersion describes this binary.
type ClientVersion struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// ServerVersion describes the server the control API address reaches.
type ServerVersion struct {
	Version string `json:"version"`
	Address string `json:"address"`
}

func versionCmd() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client's version and, when it is reachable, the server's",
		Long: `Show the client's version and, when it is reachable, the server's (from the
control API's /v1/info). A server that cannot be reached is reported, not an
error: the command still exits 0 with the client's version.`,
		Example: `  tandem version
  tandem version --client
  tandem version -o json`,
		Args: cobra.NoArgs,
	}
	out := addOutput(cmd, false)
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only the client's version (do not ask the server)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		v := VersionInfo{Client: clientVersion()}
		if !clientOnly {
			c := client(cmd)
			if info, err := c.Info(cmd.Context()); err != nil {
				v.ServerError = err.Error()
			} else {
				v.Server = &ServerVersion{Version: info.Version, Address: c.Base}
			}
		}
		if v.ServerError != "" && out.Format() != "" {
			fmt.Fprintln(cmd.ErrOrStderr(), "warning: server:", v.ServerError)
		}
		return out.Print(cmd.OutOrStdout(), v, func(w io.Writer, _ bool) error {
			c := v.Client
			commit := ""
			if c.Commit != "" {
				commit = ", commit " + c.Commit
			}
			fmt.Fprintf(w, "Client: %s (%s%s, %s)\n", c.Version, c.GoVersion, commit, c.Platform)
			switch {
			case v.Server != nil:
				fmt.Fprintf(w, "Server: %s (%s)\n", v.Server.Version, v.Server.Address)
			case v.ServerError != "":
				fmt.Fprintf(w, "Server: not reachable: %s\n", v.ServerError)
			}
			return nil
		})
	}
	return cmd
}

func clientVersion() ClientVersion {
	v := ClientVersion{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
				if len(v.Commit) > 12 {
					v.Commit = v.Commit[:12]
				}
			}
		}
	}
	return v
}
