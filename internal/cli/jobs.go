package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"tandem/internal/jobs"
)

func init() { Register(jobsCmd) }

func jobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List and inspect asynchronous invocations (jobs) and the dead-letter list",
		Long: `Asynchronous invocations are requests sent with Prefer: respond-async, to
POST /v1/async/NAME/..., or as Lambda Event invocations: tandem answers 202 with
a job id once the job is stored, runs it through the gateway, retries it on
failure, and keeps its result. Jobs that failed after their retries or their
maximum age are the dead-letter list (tandem jobs ls --failed). See docs/async.md.`,
	}
	cmd.AddCommand(jobsLsCmd(), jobsGetCmd())
	return cmd
}

func jobsLsCmd() *cobra.Command {
	var out *Output
	var failed bool
	var status, model string
	var limit int
	cmd := &cobra.Command{
		Use:     "ls [--failed | --status S] [--model NAME] [--limit N]",
		Aliases: []string{"list"},
		Short:   "List jobs, newest first",
		Example: `  tandem jobs ls
  tandem jobs ls --failed              # the dead-letter list
  tandem jobs ls --status queued --model iris -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if failed {
				if status != "" && status != string(jobs.Failed) {
					return usageErrorf("--failed and --status %s contradict each other", status)
				}
				status = string(jobs.Failed)
			}
			switch jobs.Status(status) {
			case "", jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed:
			default:
				return usageErrorf("--status %q: use queued, running, succeeded or failed", status)
			}
			if limit < 0 {
				return usageErrorf("--limit %d: give 0 for all, or a positive number", limit)
			}
			list, err := client(cmd).Jobs(cmd.Context(), status, model, limit)
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), list, func(w io.Writer, wide bool) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tMODEL\tSTATUS\tATTEMPTS\tCODE\tAGE\tREASON")
				for _, j := range list {
					code := "-"
					if j.Result != nil {
						code = fmt.Sprint(j.Result.Status)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.ID, j.Model, j.Status, j.Attempts, code,
						sinceText(j.CreatedAt), cell(j.Reason))
				}
				return tw.Flush()
			})
		},
	}
	out = addOutput(cmd, false)
	f := cmd.Flags()
	f.BoolVar(&failed, "failed", false, "only failed jobs: the dead-letter list")
	f.StringVar(&status, "status", "", "only jobs in this state: queued, running, succeeded or failed")
	f.StringVar(&model, "model", "", "only jobs of this deployment")
	f.IntVar(&limit, "limit", 100, "the newest this many (0: all)")
	cmd.RegisterFlagCompletionFunc("model", completeDeployments)
	return cmd
}

func jobsGetCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a job: its status, attempts and the answer of its last attempt",
		Example: `  tandem jobs get 187d0a3c5e2f41a09b3c7d21
  tandem jobs get 187d0a3c5e2f41a09b3c7d21 -o json | jq -r .result.body`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := client(cmd).Job(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), j, func(w io.Writer, _ bool) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id:\t%s\nmodel:\t%s\nstatus:\t%s\nattempts:\t%d\n", j.ID, j.Model, j.Status, j.Attempts)
				if j.Tenant != "" {
					fmt.Fprintf(tw, "tenant:\t%s\n", j.Tenant)
				}
				if j.Request != nil {
					fmt.Fprintf(tw, "request:\t%s %s\n", j.Request.Method, strings.TrimSuffix(j.Request.Path+"?"+j.Request.Query, "?"))
				}
				fmt.Fprintf(tw, "created:\t%s ago\n", sinceText(j.CreatedAt))
				if !j.NextAt.IsZero() {
					fmt.Fprintf(tw, "next attempt:\t%s\n", j.NextAt.Format("2006-01-02 15:04:05 MST"))
				}
				if j.Reason != "" {
					fmt.Fprintf(tw, "reason:\t%s\n", j.Reason)
				}
				if j.Destination != "" {
					fmt.Fprintf(tw, "destination:\t%s\n", j.Destination)
				}
				tw.Flush()
				if r := j.Result; r != nil {
					fmt.Fprintf(w, "answer: %d", r.Status)
					if r.IsBase64 {
						fmt.Fprint(w, " (body in base64)")
					}
					if r.Truncated {
						fmt.Fprint(w, " (body truncated)")
					}
					fmt.Fprintf(w, "\n%s\n", strings.TrimRight(r.Body, "\n"))
				}
				return nil
			})
		},
	}
	out = addOutput(cmd, false)
	return cmd
}
