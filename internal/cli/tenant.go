package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tandem/internal/api"
	"tandem/internal/recommend"
	"tandem/internal/tenant"
)

func init() { Register(tenantCmd); Register(keyCmd) }

func tenantCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Manage the gateway's tenants: the models each may call, its rate, concurrency and budget",
		Long: `Manage the gateway's tenants. With tandem serve --auth keys every request
must carry a tenant's API key (tandem key create), and is refused before any
model is woken when the tenant may not call the model (403), or is over its
rate, its concurrency or its budget (429).

--rate N/s (or N/m, N/h) is a token bucket of N requests refilled at N per
period: a tenant may send a burst of N at once, then N per period. Limits and
budgets are kept by each tandem process: behind several tandem replicas a
tenant may get up to that many times its rate.`,
	}
	cmd.AddCommand(tenantCreateCmd(), tenantUpdateCmd(), tenantLsCmd(), tenantStatusCmd(), tenantDeleteCmd())
	return cmd
}

// tenantFlags adds the settings' flags; request reads those given.
func tenantFlags(f *pflag.FlagSet) func(name string) api.TenantRequest {
	var models []string
	var rate, budget, period string
	var conc int
	f.StringSliceVar(&models, "models", nil, "models the tenant may call, comma-separated (none given: every model)")
	f.StringVar(&rate, "rate", "", `request rate: N/s, N/m or N/h, a burst of N then N per period ("" or 0: no limit)`)
	f.IntVar(&conc, "concurrency", 0, "most requests in flight at once (0: no limit)")
	f.StringVar(&budget, "budget", "", `budget in USD per --budget-period, such as 25 or 0.50 ("" or 0: no budget)`)
	f.StringVar(&period, "budget-period", "", `budget period, such as 30d or 12h ("": the tenant's lifetime)`)
	return func(name string) api.TenantRequest {
		req := api.TenantRequest{Name: name}
		if f.Changed("models") {
			m := models
			if m == nil {
				m = []string{}
			}
			req.Models = &m
		}
		if f.Changed("rate") {
			req.Rate = &rate
		}
		if f.Changed("concurrency") {
			req.Concurrency = &conc
		}
		if f.Changed("budget") {
			b := api.Amount(budget)
			req.Budget = &b
		}
		if f.Changed("budget-period") {
			req.BudgetPeriod = &period
		}
		return req
	}
}

func tenantCreateCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:   "create NAME [--models a,b] [--rate N/s|N/m] [--concurrency N] [--budget USD] [--budget-period 30d]",
		Short: "Create a tenant",
		Example: `  tandem tenant create acme --models a,b --rate 5/s --concurrency 8 --budget 25 --budget-period 30d
  tandem tenant create trial --rate 100/h --budget 1`,
		Args: cobra.ExactArgs(1),
	}
	request := tenantFlags(cmd.Flags())
	out = addOutput(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ti, err := client(cmd).CreateTenant(cmd.Context(), request(args[0]))
		if err != nil {
			return err
		}
		if done, err := out.Write(cmd.OutOrStdout(), ti); done {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "tenant %s created; make it a key with: tandem key create --tenant %s\n", ti.Name, ti.Name)
		return nil
	}
	return cmd
}

func tenantUpdateCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:   "update NAME [--models a,b] [--rate N/s|N/m] [--concurrency N] [--budget USD] [--budget-period 30d]",
		Short: "Change a tenant's settings (only the flags given; its usage and keys stay)",
		Example: `  tandem tenant update acme --rate 100/m
  tandem tenant update acme --rate "" --budget 50   # "" clears a limit`,
		ValidArgsFunction: onlyFirst(completeTenants),
		Args:              cobra.ExactArgs(1),
	}
	request := tenantFlags(cmd.Flags())
	out = addOutput(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req := request("")
		if req.Models == nil && req.Rate == nil && req.Concurrency == nil && req.Budget == nil && req.BudgetPeriod == nil {
			return usageErrorf("nothing to change: give --models, --rate, --concurrency, --budget or --budget-period")
		}
		ti, err := client(cmd).UpdateTenant(cmd.Context(), args[0], req)
		if err != nil {
			return err
		}
		if done, err := out.Write(cmd.OutOrStdout(), ti); done {
			return err
		}
		printTenant(cmd.OutOrStdout(), ti)
		return nil
	}
	return cmd
}

func tenantLsCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tenants with their limits and spend",
		Example: `  tandem tenant ls
  tandem tenant ls -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := client(cmd).Tenants(cmd.Context())
			if err != nil {
				return err
			}
			if done, err := out.Write(cmd.OutOrStdout(), list); done {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMODELS\tRATE\tCONCURRENCY\tBUDGET\tSPENT\tREQUESTS\tKEYS")
			for _, ti := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", ti.Name, models(ti.Models), orDash(ti.Rate),
					limit(ti.Concurrency), budgetText(ti), usd(ti.Usage.PeriodSpend), ti.Usage.Requests, ti.Keys)
			}
			return tw.Flush()
		},
	}
	out = addOutput(cmd, false)
	return cmd
}

func tenantStatusCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a tenant's settings, usage and spend",
		Example: `  tandem tenant status acme
  tandem tenant status acme -o json`,
		ValidArgsFunction: onlyFirst(completeTenants),
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ti, err := client(cmd).Tenant(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if done, err := out.Write(cmd.OutOrStdout(), ti); done {
				return err
			}
			printTenant(cmd.OutOrStdout(), ti)
			return nil
		},
	}
	out = addOutput(cmd, false)
	return cmd
}

func tenantDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a tenant and every key of it",
		Example:           `  tandem tenant delete acme`,
		ValidArgsFunction: onlyFirst(completeTenants),
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client(cmd).DeleteTenant(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tenant %s deleted, with its keys\n", args[0])
			return nil
		},
	}
}

func printTenant(w io.Writer, ti *api.TenantInfo) {
	rate := "no limit"
	if ti.Rate != "" {
		rate = fmt.Sprintf("%s (a burst of %d, then %s)", ti.Rate, ti.Tenant.Rate.N, ti.Rate)
	}
	fmt.Fprintf(w, "Name:        %s\nModels:      %s\nRate:        %s\nConcurrency: %s (%d in flight)\nBudget:      %s\n",
		ti.Name, models(ti.Models), rate, limit(ti.Concurrency), ti.InFlight, budgetText(*ti))
	printUsage(w, ti)
	fmt.Fprintf(w, "Keys:        %d\nCreated:     %s\n", ti.Keys, ti.CreatedAt.Local().Format(time.DateTime))
}

func printUsage(w io.Writer, ti *api.TenantInfo) {
	u := ti.Usage
	fmt.Fprintf(w, "Requests:    %d\nBusy:        %.3fs\nSpent:       %s\n", u.Requests, u.BusySeconds, usd(u.Spend))
	if ti.Budget > 0 || ti.BudgetPeriod != "" {
		fmt.Fprintf(w, "This period: %s of %s since %s\n", usd(u.PeriodSpend), budgetText(*ti), u.PeriodStart.Local().Format(time.DateTime))
	}
}

func models(m []string) string {
	if len(m) == 0 {
		return "all"
	}
	return strings.Join(m, ",")
}

func limit(n int) string {
	if n == 0 {
		return "no limit"
	}
	return fmt.Sprint(n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func budgetText(ti api.TenantInfo) string {
	if ti.Budget == 0 {
		return "none"
	}
	if ti.BudgetPeriod == "" {
		return usd(ti.Budget) + " in all"
	}
	return usd(ti.Budget) + " per " + period(ti.Tenant.BudgetPeriod)
}

// period writes whole days as days: 720h is 30d.
func period(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func usd(v float64) string { return recommend.FormatMoney(v, "USD") }

func keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage tenants' API keys for the gateway (tandem serve --auth keys)",
		Long: `Manage tenants' API keys. Clients send a key as Authorization: Bearer KEY
or X-API-Key: KEY (gRPC: the authorization metadata). tandem keeps only a
hash of each key: the key is shown once, when it is made.`,
	}
	cmd.AddCommand(keyCreateCmd(), keyLsCmd(), keyRevokeCmd())
	return cmd
}

func keyCreateCmd() *cobra.Command {
	var tenantName, expires string
	var out *Output
	cmd := &cobra.Command{
		Use:   "create --tenant NAME [--expires 90d]",
		Short: "Make an API key for a tenant; the key is printed once, as the last line",
		Example: `  tandem key create --tenant acme --expires 90d
  KEY=$(tandem key create --tenant acme | tail -1)
  curl -H "Authorization: Bearer $KEY" localhost:8080/models/a/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nk, err := client(cmd).CreateKey(cmd.Context(), api.KeyRequest{Tenant: tenantName, Expires: expires})
			if err != nil {
				return err
			}
			if done, err := out.Write(cmd.OutOrStdout(), nk); done {
				return err
			}
			w := cmd.OutOrStdout()
			exp := "never expires"
			if !nk.Expires.IsZero() {
				exp = "expires " + nk.Expires.Local().Format(time.DateTime)
			}
			fmt.Fprintf(w, "key %s for tenant %s (%s)\n", nk.ID, nk.Tenant, exp)
			fmt.Fprintln(w, "the key follows; it is shown only now (tandem keeps only its hash):")
			fmt.Fprintln(w, nk.Key)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenantName, "tenant", "", "the tenant the key identifies")
	cmd.RegisterFlagCompletionFunc("tenant", completeTenants)
	cmd.Flags().StringVar(&expires, "expires", "", `how long the key is valid, such as 90d or 12h ("": never expires)`)
	out = addOutput(cmd, false)
	cmd.MarkFlagRequired("tenant")
	return cmd
}

func keyLsCmd() *cobra.Command {
	var tenantName string
	var out *Output
	cmd := &cobra.Command{
		Use:     "ls [--tenant NAME]",
		Aliases: []string{"list"},
		Short:   "List API keys: ids, tenants, when made, expiring and last used (never the keys)",
		Example: `  tandem key ls
  tandem key ls --tenant acme -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := client(cmd).Keys(cmd.Context(), tenantName)
			if err != nil {
				return err
			}
			if done, err := out.Write(cmd.OutOrStdout(), keys); done {
				return err
			}
			printKeys(cmd.OutOrStdout(), keys)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenantName, "tenant", "", "only this tenant's keys")
	cmd.RegisterFlagCompletionFunc("tenant", completeTenants)
	out = addOutput(cmd, false)
	return cmd
}

func printKeys(w io.Writer, keys []tenant.KeyInfo) {
	when := func(t time.Time, zero string) string {
		if t.IsZero() {
			return zero
		}
		return t.Local().Format(time.DateTime)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tCREATED\tEXPIRES\tLAST USED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Tenant, when(k.CreatedAt, "-"), when(k.Expires, "never"), when(k.LastUsed, "never"))
	}
	tw.Flush()
}

func keyRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "revoke ID",
		Short:             "Revoke an API key: the gateway refuses it from the next request",
		Example:           `  tandem key revoke 0f1e2d3c4b5a6978`,
		ValidArgsFunction: onlyFirst(completeKeyIDs),
		Args:              cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client(cmd).RevokeKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
			return nil
		},
	}
}
