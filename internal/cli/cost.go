package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/api"
	"tandem/internal/bench"
	"tandem/internal/cost"
	"tandem/internal/manifest"
	"tandem/internal/problem"
	"tandem/internal/recommend"
)

func init() { Register(costCmd) }

func costCmd() *cobra.Command {
	var since, tenantName string
	var out *Output
	cmd := &cobra.Command{
		Use:   "cost [NAME] [--since 24h] | cost --tenant NAME",
		Short: "Show what deployments used and cost, and what the other mode would have cost",
		Example: `  tandem cost
  tandem cost echo --since 7d
  tandem cost --since 24h -o json
  tandem cost --tenant acme`,
		Long: `Show what deployments used and cost, and what the other mode would have cost.

Instance time is split into starting, busy (at least one request in flight)
and idle (up, serving nothing). "cost" is what the deployment paid under its
own mode with the server's price table (tandem serve --prices); the "as"
columns price the same traffic as serverless and as dedicated. --since takes a
duration back from now (24h, 90m, 7d) or an RFC 3339 time; usage is kept per
minute.

--tenant NAME shows what a tenant's requests used and cost since it was
created, priced as serverless at each deployment's size, and its spend in the
current budget period, which its budget is checked against.`,
		ValidArgsFunction: onlyFirst(completeDeployments),
		Args:              cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tenantName != "" {
				if len(args) > 0 || cmd.Flags().Changed("since") {
					return usageErrorf("--tenant shows the tenant's usage since it was created: give no model and no --since")
				}
				ti, err := client(cmd).Tenant(cmd.Context(), tenantName)
				if err != nil {
					return err
				}
				if done, err := out.Write(cmd.OutOrStdout(), ti); done {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "Tenant:      %s\nBudget:      %s\n", ti.Name, budgetText(*ti))
				printUsage(w, ti)
				return nil
			}
			q := url.Values{"since": {since}}
			if len(args) == 1 {
				q.Set("model", args[0])
			}
			var rep cost.Report
			if err := getJSON(cmd, "/v1/cost?"+q.Encode(), &rep); err != nil {
				return err
			}
			if done, err := out.Write(cmd.OutOrStdout(), rep); done {
				return err
			}
			if len(args) == 1 && len(rep.Models) == 0 {
				return fmt.Errorf("no usage of %q since %s", args[0], rep.Since.Local().Format(time.DateTime))
			}
			return writeCost(cmd.OutOrStdout(), &rep)
		},
	}
	cmd.Flags().StringVar(&since, "since", "24h", "start: a duration back from now (24h, 90m, 7d) or an RFC 3339 time")
	cmd.Flags().StringVar(&tenantName, "tenant", "", "show this tenant's requests, busy time, spend and budget")
	cmd.RegisterFlagCompletionFunc("tenant", completeTenants)
	out = addOutput(cmd, false)
	return cmd
}

func writeCost(w io.Writer, rep *cost.Report) error {
	money := func(v float64) string { return recommend.FormatMoney(v, rep.Currency) }
	fmt.Fprintf(w, "from %s to %s\n\n", rep.Since.Local().Format(time.DateTime), rep.Until.Local().Format(time.DateTime))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tmode\trequests\tcold starts\tinstance-s\tstarting\tbusy\tidle\tcost\tper 1k\tidle cost\tas serverless\tas dedicated\t")
	for _, m := range rep.Models {
		u := m.Usage
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			m.Model, m.Mode, u.Requests, u.ColdStarts, bench.Seconds(u.Total().Seconds), bench.Seconds(u.Starting.Seconds),
			bench.Seconds(u.Busy.Seconds), bench.Seconds(u.Idle.Seconds),
			money(m.Cost), money(m.CostPer1K), money(m.CostIdle),
			money(m.CostAs[manifest.Serverless]), money(m.CostAs[manifest.Dedicated]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range rep.Models {
		if t := m.Tiers; t != nil {
			fmt.Fprintf(w, "%s tiers: floor (reserved) %s instance-s %s; burst (on demand) %s instance-s %s\n", m.Model,
				bench.Seconds(t.Floor.InstanceSeconds), money(t.Floor.Cost), bench.Seconds(t.Burst.InstanceSeconds), money(t.Burst.Cost))
		}
		for _, r := range m.Revisions {
			rev := r.Revision
			if rev == "" {
				rev = "first unit"
			}
			fmt.Fprintf(w, "%s revision %s: %d requests, %s instance-s, %s\n", m.Model, rev, r.Requests, bench.Seconds(r.Seconds), money(r.Cost))
		}
	}
	return nil
}

// getJSON reads a control API resource into out.
func getJSON(cmd *cobra.Command, path string, out any) error {
	c := client(cmd)
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, c.Base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach tandem's control API at %s (is `tandem serve` running? set --admin or TANDEM_ADMIN): %w", c.Base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		raw, _ := io.ReadAll(resp.Body)
		var eb struct {
			Error problem.Error `json:"error"`
		}
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
			eb.Error.Message = fmt.Sprintf("%s: %s", resp.Status, raw)
		}
		return &api.Error{Status: resp.StatusCode, Body: eb.Error}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
