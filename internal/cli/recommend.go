package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/bench"
	"tandem/internal/recommend"
)

func init() { Register(recommendCmd) }

func recommendCmd() *cobra.Command {
	var o trafficFlags
	var slo, jsonOut, backendName, timingsFrom string
	var coldStart, serviceTime time.Duration
	var coldStarts, requests int
	var noBreakEven bool
	cmd := &cobra.Command{
		Use:   "recommend -f MANIFEST (--trace FILE | --pattern P --rate R --duration D) [--slo p99=300ms]",
		Short: "Simulate the traffic under each mode and recommend the cheapest that meets the latency objective",
		Long: `Simulate the traffic under each mode and recommend the cheapest that meets the latency objective.

The trace is replayed through tandem's own autoscaler (the decision code the
live controller runs) and activator semantics in simulated time: fast, with no
instances running. The model's cold start and service times are measured first
on a tandem serve of its own (this binary; five cold starts, less the slowest, and 20 warm
requests per path), unless --cold-start and --service-time give them. The
answer is each mode's latency and cost, the cheapest mode that meets --slo, and
the steady request rate at which serverless and dedicated cost the same.

--autoscale-interval should be the interval the server runs with (tandem
serve's default is 1s).`,
		Example: `  tandem recommend -f model.yaml --pattern sporadic --rate 0.05 --duration 1h --slo p99=300ms
  tandem recommend -f model.yaml --trace requests.csv --cold-start 2s --service-time 40ms
  tandem recommend -f model.yaml --trace requests.csv --timings-from report.json --json -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, tr, _, modes, prices, target, err := o.load(cmd)
			if err != nil {
				return err
			}
			objectives, err := recommend.ParseSLO(slo)
			if err != nil {
				return err
			}
			var tm *recommend.Timings
			switch {
			case timingsFrom != "":
				f, err := os.Open(timingsFrom)
				if err != nil {
					return err
				}
				var rep bench.Report
				err = json.NewDecoder(f).Decode(&rep)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: not a bench report (tandem bench --json): %w", timingsFrom, err)
				}
				if tm, err = bench.TimingsFrom(&rep); err != nil {
					return fmt.Errorf("%s: %w", timingsFrom, err)
				}
			case cmd.Flags().Changed("service-time"):
				tm = &recommend.Timings{ColdStart: coldStart, Service: map[string][]time.Duration{"": {serviceTime}}}
			default:
				self, err := os.Executable()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "measuring %s: %d cold starts, %d warm requests per path...\n", m.Name, coldStarts, requests)
				mc := bench.MeasureConfig{
					Binary: self, Tick: o.tick, Manifest: m, ManifestPath: o.file, Target: target, Trace: tr,
					ColdStarts: coldStarts, Requests: requests,
				}
				if backendName != "" {
					mc.ServerArgs = []string{"--backend", backendName}
				}
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				if tm, err = bench.Measure(ctx, mc); err != nil {
					return err
				}
				if cmd.Flags().Changed("cold-start") {
					tm.ColdStart = coldStart
				}
			}
			rec, err := recommend.Recommend(recommend.Input{
				Manifest: m, Trace: tr, Timings: *tm, Prices: prices, SLO: objectives, Modes: modes,
				Tick: o.tick, End: o.duration, Seed: o.seed, NoBreakEven: noBreakEven,
			})
			if err != nil {
				return err
			}
			if jsonOut != "" {
				if err := writeFile(jsonOut, cmd, func(f *os.File) error { return printJSON(f, rec) }); err != nil {
					return err
				}
				if jsonOut == "-" {
					return nil
				}
			}
			return writeRecommendation(cmd.OutOrStdout(), rec)
		},
	}
	f := cmd.Flags()
	o.register(f, "the autoscaling interval to simulate (the server's --autoscale-interval)")
	f.StringVar(&slo, "slo", "", "latency objectives, such as p99=300ms or p50=20ms,p99=300ms (p50, p95, p99, max)")
	f.StringVar(&jsonOut, "json", "", "write the recommendation as JSON to FILE (- for standard output only)")
	f.DurationVar(&coldStart, "cold-start", 0, "the model's cold start (decision to ready) instead of measuring it")
	f.DurationVar(&serviceTime, "service-time", 0, "the model's warm latency instead of measuring it (skips measuring)")
	f.IntVar(&coldStarts, "measure-cold-starts", 5, "cold starts to time when measuring (their mean, less the slowest, is used)")
	f.IntVar(&requests, "measure-requests", 20, "warm requests per path to time when measuring")
	f.BoolVar(&noBreakEven, "no-break-even", false, "skip the search for the break-even rate")
	f.StringVar(&timingsFrom, "timings-from", "", "take the model's timings from a tandem bench --json report instead of measuring")
	f.StringVar(&backendName, "backend", "", "the measuring server's default backend")
	return cmd
}

func writeRecommendation(w io.Writer, rec *recommend.Recommendation) error {
	money := func(v float64) string { return recommend.FormatMoney(v, rec.Currency) }
	var service []time.Duration
	for _, s := range rec.Timings.Service {
		service = append(service, s...)
	}
	var mean time.Duration
	for _, d := range service {
		mean += d
	}
	if len(service) > 0 {
		mean /= time.Duration(len(service))
	}
	fmt.Fprintf(w, "%d requests over %s; model: cold start %s, service time %s on average, %s more seen by clients\n\n",
		rec.Requests, rec.Duration.Round(time.Millisecond), rec.Timings.ColdStart.Round(100*time.Microsecond),
		mean.Round(10*time.Microsecond), rec.Timings.Overhead.Round(10*time.Microsecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\terrors\tp50\tp99\tmax\tcold starts\tinstance-s\tbusy\tidle\tcost\tper 1k\tSLO\t")
	for _, r := range rec.Modes {
		verdict := "met"
		if rec.SLO == "" {
			verdict = "-"
		} else if !r.MeetsSLO {
			verdict = "missed: " + strings.Join(r.Misses, ", ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Mode, r.Requests, r.Errors, fmtMillis(r.Latency.P50), fmtMillis(r.Latency.P99), fmtMillis(r.Latency.Max), r.ColdStarts,
			bench.Seconds(r.Usage.Total().Seconds), bench.Seconds(r.Usage.Busy.Seconds), bench.Seconds(r.Usage.Idle.Seconds), money(r.Cost), money(r.CostPer1K), verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if rec.Best != "" {
		fmt.Fprintf(w, "Recommendation: %s. %s.\n", rec.Best, capitalize(rec.Reason))
	} else {
		fmt.Fprintf(w, "No mode meets the objective: %s.\n", rec.Reason)
	}
	if be := rec.BreakEven; be != nil {
		if be.Rate > 0 {
			fmt.Fprintf(w, "Break-even: at steady traffic, %s is cheaper below %.3g requests a second, %s above.\n", be.Below, be.Rate, be.Above)
		} else {
			fmt.Fprintf(w, "Break-even: none between %.3g and %.3g requests a second; %s is cheaper throughout.\n", be.MinRate, be.MaxRate, be.Below)
		}
	}
	return nil
}

func fmtMillis(v float64) string {
	return time.Duration(v * float64(time.Millisecond)).Round(10 * time.Microsecond).String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
