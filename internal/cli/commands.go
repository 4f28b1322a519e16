package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/controller"
)

func deployCmd() *cobra.Command {
	var file string
	var out *Output
	var tf *splitFlags
	cmd := &cobra.Command{
		Use:   "deploy -f FILE",
		Short: "Create or update a deployment from a manifest",
		Example: `  tandem deploy -f examples/echo.yaml
  cat model.yaml | tandem deploy -f -
  tandem deploy -f model.yaml -o json
  tandem deploy -f model-v2.yaml --canary 20
  tandem deploy -f model-v2.yaml --tag candidate --route X-Variant=b`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			base := ""
			if file == "-" {
				data, err = io.ReadAll(os.Stdin)
				base, _ = os.Getwd()
			} else {
				data, err = os.ReadFile(file)
				if abs, aerr := filepath.Abs(file); aerr == nil {
					base = filepath.Dir(abs)
				}
			}
			if err != nil {
				return err
			}
			opts, err := tf.options(cmd)
			if err != nil {
				return err
			}
			res, err := client(cmd).DeployWith(cmd.Context(), string(data), base, opts)
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), res, func(w io.Writer, _ bool) error {
				if res.Revision != "" && res.Revision != res.Status.Revision {
					_, err := fmt.Fprintf(w, "%s %s: revision %s beside the main revision %s (%s, %s backend; see tandem rollout status %s)\n",
						res.Status.Name, res.Result, res.Revision, res.Status.Revision, res.Status.Mode, res.Status.Backend, res.Status.Name)
					return err
				}
				_, err := fmt.Fprintf(w, "%s %s (revision %s, %s, %s backend)\n",
					res.Status.Name, res.Result, res.Status.Revision, res.Status.Mode, res.Status.Backend)
				return err
			})
		},
	}
	out = addOutput(cmd, false)
	tf = addSplitFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest file (YAML), or - for standard input")
	cmd.MarkFlagFilename("file", "yaml", "yml")
	cmd.MarkFlagRequired("file")
	return cmd
}

func lsCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List deployments",
		Example: `  tandem ls
  tandem ls -o wide
  tandem ls -o json | jq -r '.[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := client(cmd).List(cmd.Context())
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), list, func(w io.Writer, wide bool) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				head := "NAME\tMODE\tBACKEND\tREADY\tDESIRED\tIN-FLIGHT\tQUEUED\tRESTARTS"
				if wide {
					head += "\tSTARTING\tDRAINING\tREVISION\tAGE\tLAST ERROR"
				}
				fmt.Fprintln(tw, head)
				for _, s := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d", s.Name, s.Mode, s.Backend, s.Ready, s.Desired, s.InFlight, s.Queued, s.Restarts)
					if wide {
						fmt.Fprintf(tw, "\t%d\t%d\t%s\t%s\t%s", s.Starting, s.Draining, s.Revision, sinceText(s.CreatedAt), cell(s.LastError))
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			})
		},
	}
	out = addOutput(cmd, true)
	return cmd
}

func statusCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a deployment's instances, scaling state and last error",
		Example: `  tandem status echo
  tandem status echo -o wide
  tandem status echo -o yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := client(cmd).Status(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), s, func(w io.Writer, wide bool) error {
				printStatus(w, s, wide)
				return nil
			})
		},
	}
	out = addOutput(cmd, true)
	return cmd
}

// printStatus describes a deployment; wide adds the instances' revision,
// readiness and containment.
func printStatus(w io.Writer, s *controller.Status, wide bool) {
	fmt.Fprintf(w, "Name:      %s\nMode:      %s\nBackend:   %s\nRevision:  %s\n", s.Name, s.Mode, s.Backend, s.Revision)
	fmt.Fprintf(w, "Instances: %d ready, %d starting, %d draining (desired %d)\n", s.Ready, s.Starting, s.Draining, s.Desired)
	fmt.Fprintf(w, "Requests:  %d in flight, %d queued\n", s.InFlight, s.Queued)
	if s.Reason != "" {
		panic := ""
		if s.Panic {
			panic = " [panic]"
		}
		fmt.Fprintf(w, "Scaling:   %s%s\n", s.Reason, panic)
	}
	printPrewarm(w, s.Prewarm)
	fmt.Fprintf(w, "Restarts:  %d\n", s.Restarts)
	if s.LastError != "" {
		at := ""
		if s.LastErrorAt != nil {
			at = " (" + time.Since(*s.LastErrorAt).Round(time.Second).String() + " ago)"
		}
		fmt.Fprintf(w, "Last error: %s%s\n", s.LastError, at)
	}
	if len(s.Instances) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		head := "\nINSTANCE\tSTATE\tADDR\tIN-FLIGHT\tAGE"
		if wide {
			head += "\tREVISION\tREADY AFTER\tCONTAINMENT"
		}
		fmt.Fprintln(tw, head)
		for _, in := range s.Instances {
			age := "-"
			if in.StartedAt != nil {
				age = time.Since(*in.StartedAt).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s", in.ID, in.State, in.Addr, in.InFlight, age)
			if wide {
				ready := "-"
				if in.StartedAt != nil && in.ReadyAt != nil {
					ready = in.ReadyAt.Sub(*in.StartedAt).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "\t%s\t%s\t%s", in.Revision, ready, cell(in.Containment))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
}

func deleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Stop every instance of a deployment and remove it",
		Example:           "  tandem delete echo",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client(cmd).Delete(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", args[0])
			return nil
		},
	}
}

func logsCmd() *cobra.Command {
	var tail int
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show the output of a deployment's instances",
		Long: `Show the output of a deployment's instances, each line prefixed with its
instance's id. With -f the command keeps printing what instances write
(instances started later included) until it is interrupted or the deployment
is deleted.`,
		Example: `  tandem logs echo
  tandem logs echo --tail 20
  tandem logs -f echo`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow {
				return client(cmd).FollowLogs(cmd.Context(), args[0], tail, cmd.OutOrStdout())
			}
			return client(cmd).Logs(cmd.Context(), args[0], tail, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVarP(&tail, "tail", "n", 200, "lines per instance (0 for all)")
	// -n is kubectl's --namespace; kubectl's --tail has no short form.
	cmd.Flags().Lookup("tail").ShorthandDeprecated = "use --tail (-n will mean --namespace, as in kubectl and tandem export)"
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until interrupted or the deployment is deleted")
	return cmd
}

func invokeCmd() *cobra.Command {
	var data, method, gw string
	var headers []string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "invoke NAME [PATH]",
		Short: "Call a model through the gateway",
		Long:  "Call a model through the gateway. --data takes JSON inline or @file (@- for standard input).",
		Example: `  tandem invoke echo /echo
  tandem invoke echo /predict -d '{"x": [1, 2]}'
  tandem invoke echo /predict -d @request.json -H 'X-Trace: 1' -v`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/"
			if len(args) == 2 {
				path = "/" + strings.TrimLeft(args[1], "/")
			}
			var body io.Reader
			if data != "" {
				b, err := readData(data)
				if err != nil {
					return err
				}
				body = bytes.NewReader(b)
				if method == "" {
					method = http.MethodPost
				}
			}
			if method == "" {
				method = http.MethodGet
			}
			if gw == "" {
				info, err := client(cmd).Info(cmd.Context())
				if err != nil {
					return err
				}
				gw = info.Gateway
				if info.TLS {
					gw = "https://" + gw
				}
			}
			if !strings.Contains(gw, "://") {
				gw = "http://" + gw
			}
			req, err := http.NewRequestWithContext(cmd.Context(), method, strings.TrimRight(gw, "/")+"/models/"+args[0]+path, body)
			if err != nil {
				return err
			}
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return usageErrorf("--header %q: want Name: value", h)
				}
				req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			start := time.Now()
			resp, err := gatewayClient(cmd).Do(req)
			if err != nil {
				return fmt.Errorf("cannot reach the gateway at %s: %w", gw, err)
			}
			defer resp.Body.Close()
			if verbose {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s in %s (cold start: %s)\n", resp.Status, time.Since(start).Round(time.Microsecond), resp.Header.Get("X-Tandem-Cold-Start"))
			}
			if _, err := io.Copy(cmd.OutOrStdout(), resp.Body); err != nil {
				return err
			}
			if resp.StatusCode >= 400 {
				return fmt.Errorf("%s", resp.Status)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&data, "data", "d", "", "request body: JSON, @file or @-")
	f.StringVarP(&method, "method", "X", "", "HTTP method (default GET, or POST with --data)")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra header, Name: value")
	f.StringVar(&gw, "gateway", os.Getenv("TANDEM_GATEWAY"), "gateway address (env TANDEM_GATEWAY; default: asked from the control API)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print status, time and cold start to stderr")
	return cmd
}

func readData(s string) ([]byte, error) {
	if s == "@-" {
		return io.ReadAll(os.Stdin)
	}
	if strings.HasPrefix(s, "@") {
		return os.ReadFile(s[1:])
	}
	return []byte(s), nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
