package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/controller"
)

// Revisions, traffic splits, promotion and rollback (docs/rollout.md).

func init() {
	Register(revisionsCmd)
	Register(rolloutCmd)
}

// splitFlags are deploy's options for the new revision's traffic.
type splitFlags struct {
	canary, shadow int
	tag, sticky    string
	routes         []string
}

func addSplitFlags(cmd *cobra.Command) *splitFlags {
	t := &splitFlags{}
	f := cmd.Flags()
	f.IntVar(&t.canary, "canary", -1, "send this percent of the requests to the new revision; the current one keeps the rest")
	f.StringVar(&t.tag, "tag", "", "name the new revision (reach it at /models/NAME@TAG/ or with X-Tandem-Revision: TAG); alone, it gets no untagged traffic")
	f.StringArrayVar(&t.routes, "route", nil, "send requests whose header has a value to the new revision (HEADER=VALUE) or to another one (HEADER=VALUE:REV); repeatable")
	f.IntVar(&t.shadow, "shadow", -1, "mirror this percent of the requests to the new revision; callers only see the current one's answers")
	f.StringVar(&t.sticky, "sticky-header", "", "split by a hash of this header's value, so one user stays on one revision")
	return t
}

// options returns the deploy options, nil for a plain deploy.
func (t *splitFlags) options(cmd *cobra.Command) (*controller.DeployOptions, error) {
	var o controller.DeployOptions
	set := false
	if cmd.Flags().Changed("canary") {
		o.Canary, set = &t.canary, true
	}
	if cmd.Flags().Changed("shadow") {
		o.Shadow, set = &t.shadow, true
	}
	if t.tag != "" {
		o.Tag, set = t.tag, true
	}
	if t.sticky != "" {
		o.StickyHeader, set = t.sticky, true
	}
	for _, r := range t.routes {
		hv, rev, _ := strings.Cut(r, ":")
		h, v, ok := strings.Cut(hv, "=")
		if !ok || h == "" {
			return nil, usageErrorf("--route %q: want HEADER=VALUE or HEADER=VALUE:REV", r)
		}
		o.Routes, set = append(o.Routes, controller.HeaderRoute{Header: h, Value: v, Revision: rev}), true
	}
	if !set {
		return nil, nil
	}
	return &o, nil
}

func revisionsCmd() *cobra.Command {
	var out *Output
	cmd := &cobra.Command{
		Use:               "revisions NAME",
		Short:             "List a model's revisions with their age, traffic share, instances and state",
		Example:           "  tandem revisions iris\n  tandem revisions iris -o json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			revs, err := client(cmd).Revisions(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), revs, func(w io.Writer, _ bool) error {
				printRevisions(w, revs)
				return nil
			})
		},
	}
	out = addOutput(cmd, false)
	return cmd
}

func printRevisions(w io.Writer, revs []controller.RevisionStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tAGE\tTRAFFIC\tTAGS\tREADY\tSTATE\tREQUESTS\t5XX\tP99")
	for _, r := range revs {
		share := fmt.Sprintf("%d%%", r.Percent)
		if r.Shadow > 0 {
			share += fmt.Sprintf(" (+%d%% shadow)", r.Shadow)
		}
		if r.Main {
			share += " main"
		}
		tags := strings.Join(append(append([]string{}, r.Tags...), r.Routes...), ",")
		if tags == "" {
			tags = "-"
		}
		state := r.State
		if r.Failed != "" {
			state = "failed: " + r.Failed
		}
		p99 := "-"
		if r.P99Ms > 0 {
			p99 = fmt.Sprintf("%.0fms", r.P99Ms)
		}
		age := "-"
		if !r.CreatedAt.IsZero() {
			age = time.Since(r.CreatedAt).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", r.Revision, age, share, tags, r.Ready, state, r.Requests, r.Errors, p99)
	}
	tw.Flush()
}

func rolloutCmd() *cobra.Command {
	var (
		out    *Output
		set    string
		tags   []string
		routes []string
		shadow string
		sticky string
	)
	cmd := &cobra.Command{
		Use:   "rollout NAME [--set REV=PERCENT,...] [--tag TAG=REV] [--route HEADER=VALUE:REV] [--shadow REV=PERCENT]",
		Short: "Change how a model's traffic is shared between its revisions",
		Long: `Change how a model's traffic is shared between its revisions. A revision is
named by its hash, a unique prefix of 4 characters or more, or a tag. Changes
take effect on new requests at once; revisions that lose all their traffic
drain and stop. Setting the split by hand stops a progressive rollout.`,
		Example: `  tandem rollout iris --set 3f2a=90,9c1b=10
  tandem rollout iris --tag canary=9c1b --route X-Variant=b:9c1b
  tandem rollout iris --shadow 9c1b=50
  tandem rollout status iris
  tandem rollout promote iris
  tandem rollout rollback iris`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ch controller.TrafficChange
			if set != "" {
				ch.Set = map[string]int{}
				for _, kv := range strings.Split(set, ",") {
					rev, pct, ok := strings.Cut(strings.TrimSpace(kv), "=")
					n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
					if !ok || rev == "" || err != nil {
						return usageErrorf("--set %q: want REV=PERCENT,...", kv)
					}
					ch.Set[rev] += n
				}
			}
			for _, t := range tags {
				tag, rev, ok := strings.Cut(t, "=")
				if !ok || tag == "" {
					return usageErrorf("--tag %q: want TAG=REV (TAG= removes the tag)", t)
				}
				if ch.Tags == nil {
					ch.Tags = map[string]string{}
				}
				ch.Tags[tag] = rev
			}
			for _, r := range routes {
				hv, rev, _ := strings.Cut(r, ":")
				h, v, ok := strings.Cut(hv, "=")
				if !ok || h == "" {
					return usageErrorf("--route %q: want HEADER=VALUE:REV (no :REV removes the route)", r)
				}
				ch.Routes = append(ch.Routes, controller.HeaderRoute{Header: h, Value: v, Revision: rev})
			}
			if shadow != "" {
				rev, pct, ok := strings.Cut(shadow, "=")
				n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
				if !ok || err != nil {
					return usageErrorf("--shadow %q: want REV=PERCENT (REV=0 stops it)", shadow)
				}
				ch.Shadow = &controller.ShadowTarget{Revision: rev, Percent: n}
			}
			ch.StickyHeader = sticky
			if ch.Set == nil && ch.Tags == nil && ch.Routes == nil && ch.Shadow == nil && sticky == "" {
				return usageErrorf("nothing to change: give --set, --tag, --route, --shadow or --sticky-header (or see tandem rollout status %s)", args[0])
			}
			ts, err := client(cmd).ChangeTraffic(cmd.Context(), args[0], ch)
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), ts, func(w io.Writer, _ bool) error {
				printTraffic(w, ts)
				return nil
			})
		},
	}
	out = addOutput(cmd, false)
	f := cmd.Flags()
	f.StringVar(&set, "set", "", "the split: REV=PERCENT,... summing to 100 (revisions not named get 0)")
	f.StringArrayVar(&tags, "tag", nil, "name a revision: TAG=REV (repeatable; TAG= removes it)")
	f.StringArrayVar(&routes, "route", nil, "send requests with a header value to a revision: HEADER=VALUE:REV (repeatable)")
	f.StringVar(&shadow, "shadow", "", "mirror a share of the requests to a revision: REV=PERCENT")
	f.StringVar(&sticky, "sticky-header", "", "split by a hash of this header's value (- removes it)")
	cmd.AddCommand(rolloutStatusCmd(), rolloutPromoteCmd(), rolloutRollbackCmd())
	return cmd
}

// trafficCmd is a rollout subcommand that calls the control API and prints
// the model's traffic it answers with.
func trafficCmd(c *cobra.Command, call func(cmd *cobra.Command, args []string) (*controller.TrafficStatus, error)) *cobra.Command {
	out := addOutput(c, false)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		ts, err := call(cmd, args)
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), ts, func(w io.Writer, _ bool) error {
			printTraffic(w, ts)
			return nil
		})
	}
	return c
}

func rolloutStatusCmd() *cobra.Command {
	return trafficCmd(&cobra.Command{
		Use:               "status NAME",
		Short:             "Show a model's split, tags, routes, shadow, progressive rollout steps and events",
		Example:           "  tandem rollout status iris\n  tandem rollout status iris -o json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
	}, func(cmd *cobra.Command, args []string) (*controller.TrafficStatus, error) {
		return client(cmd).Traffic(cmd.Context(), args[0])
	})
}

func rolloutPromoteCmd() *cobra.Command {
	return trafficCmd(&cobra.Command{
		Use:               "promote NAME [REV]",
		Short:             "Give a revision (default: the rollout's or the canary) all the traffic and make it the main one",
		Example:           "  tandem rollout promote iris\n  tandem rollout promote iris 9c1b",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: onlyFirst(completeDeployments),
	}, func(cmd *cobra.Command, args []string) (*controller.TrafficStatus, error) {
		rev := ""
		if len(args) == 2 {
			rev = args[1]
		}
		return client(cmd).Promote(cmd.Context(), args[0], rev)
	})
}

func rolloutRollbackCmd() *cobra.Command {
	return trafficCmd(&cobra.Command{
		Use:               "rollback NAME",
		Short:             "Send all traffic back to the main revision; the others drain and stop",
		Example:           "  tandem rollout rollback iris",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDeployments,
	}, func(cmd *cobra.Command, args []string) (*controller.TrafficStatus, error) {
		return client(cmd).Rollback(cmd.Context(), args[0])
	})
}

func printTraffic(w io.Writer, ts *controller.TrafficStatus) {
	fmt.Fprintf(w, "Model:     %s (main revision %s)\n", ts.Name, ts.Main)
	t := ts.Traffic
	if t.StickyHeader != "" {
		fmt.Fprintf(w, "Sticky:    by %s\n", t.StickyHeader)
	}
	for _, r := range t.Routes {
		fmt.Fprintf(w, "Route:     %s=%s -> %s\n", r.Header, r.Value, r.Revision)
	}
	if s := t.Shadow; s != nil {
		fmt.Fprintf(w, "Shadow:    %d%% mirrored to %s\n", s.Percent, s.Revision)
	}
	if ss, ok := ts.ShadowStats.([]any); ok {
		for _, s := range ss {
			if m, ok := s.(map[string]any); ok {
				p99 := "-"
				if ns, ok := m["p99"].(float64); ok && ns > 0 {
					p99 = time.Duration(ns).Round(time.Microsecond).String()
				}
				fmt.Fprintf(w, "  shadow %v: sent %v, matched %v, mismatched %v, errors %v, dropped %v, p99 %s\n",
					m["revision"], m["sent"], m["matched"], m["mismatched"], m["errors"], m["dropped"], p99)
			}
		}
	}
	fmt.Fprintln(w)
	printRevisions(w, ts.Running)
	if p := t.Rollout; p != nil {
		fmt.Fprintf(w, "\nRollout of %s (from %s): %s\n", p.Revision, p.From, p.State.String())
		for i, s := range p.Config.Steps {
			mark := " "
			if i < p.State.Step || p.State.Phase == "succeeded" {
				mark = "x"
			} else if i == p.State.Step && p.State.Phase == "progressing" {
				mark = ">"
			}
			fmt.Fprintf(w, "  [%s] step %d: %d%%\n", mark, i+1, s)
		}
		for _, iv := range p.State.History {
			fmt.Fprintf(w, "  %s  at %d%%: %d requests, %d 5xx (%.1f%%), %d cold, p99 %.0fms: %s\n",
				iv.At.UTC().Format("15:04:05"), iv.Weight, iv.Requests, iv.Errors, 100*iv.ErrorRate, iv.Cold, iv.P99Ms, iv.Verdict)
		}
	}
	if len(t.Events) > 0 {
		fmt.Fprintln(w, "\nEvents:")
		for _, e := range t.Events {
			fmt.Fprintf(w, "  %s  %s\n", e.At.UTC().Format("2006-01-02 15:04:05"), e.Message)
		}
	}
}
