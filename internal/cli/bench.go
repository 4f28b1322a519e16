package cli

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tandem/internal/bench"
	"tandem/internal/cost"
	"tandem/internal/loadgen"
	"tandem/internal/manifest"
	"tandem/internal/trace"
)

func init() { Register(benchCmd) }

// trafficFlags are the flags bench and recommend share: the manifest, the
// traffic and what each request carries.
type trafficFlags struct {
	file, pattern, traceFile, modes, prices string
	rate                                    float64
	duration, tick                          time.Duration
	seed                                    uint64
	path, data, method                      string
	headers                                 []string
}

func (o *trafficFlags) register(f *pflag.FlagSet, tickHelp string) {
	f.StringVarP(&o.file, "file", "f", "", "manifest file (YAML)")
	cobra.MarkFlagFilename(f, "file", "yaml", "yml")
	f.StringVar(&o.pattern, "pattern", "", "traffic: constant, steps, burst, sporadic, sine or trace (default trace with --trace, else constant)")
	f.StringVar(&o.traceFile, "trace", "", "trace file: CSV of seconds[,path[,payload]], one request a line")
	f.Float64Var(&o.rate, "rate", 1, "requests a second, on average")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "how long the pattern lasts (a trace: its own length, or this if longer)")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the random patterns (sporadic, sine)")
	f.StringVar(&o.modes, "modes", "serverless,dedicated", "modes to compare, in order")
	f.StringVar(&o.prices, "prices", "", "price table (YAML); default: prices/default.yaml's values")
	f.StringVar(&o.path, "path", "/", "path to call on the model (a trace line may give its own)")
	f.StringVarP(&o.data, "data", "d", "", "request body: JSON, @file or @- (a trace line may give its own)")
	f.StringVarP(&o.method, "method", "X", "", "HTTP method (default GET, or POST with a body)")
	f.StringArrayVarP(&o.headers, "header", "H", nil, "extra header, Name: value")
	f.DurationVar(&o.tick, "autoscale-interval", time.Second, tickHelp)
}

// load reads the manifest, the traffic, the modes, the prices and the
// request template; spec describes the traffic for reports.
func (o *trafficFlags) load(cmd *cobra.Command) (m *manifest.Manifest, tr *trace.Trace, spec string, modes []manifest.Mode, prices *cost.Prices, target loadgen.Target, err error) {
	if o.file == "" {
		err = usageErrorf("-f MANIFEST is required")
		return
	}
	if m, err = manifest.Load(o.file); err != nil {
		return
	}
	pat := loadgen.Pattern(o.pattern)
	switch {
	case o.pattern == "" && o.traceFile != "":
		pat = loadgen.Trace
	case o.pattern == "":
		pat = loadgen.Constant
	default:
		if pat, err = loadgen.ParsePattern(o.pattern); err != nil {
			return
		}
	}
	if pat == loadgen.Trace {
		if o.traceFile == "" {
			err = usageErrorf("--pattern trace needs --trace FILE")
			return
		}
		if tr, err = trace.Load(o.traceFile); err != nil {
			return
		}
		if tr.Len() == 0 {
			err = fmt.Errorf("%s: no requests", o.traceFile)
			return
		}
		spec = "trace " + filepath.Base(o.traceFile)
		if !cmd.Flags().Changed("duration") {
			o.duration = 0
		}
	} else {
		if o.traceFile != "" {
			err = usageErrorf("--trace is for --pattern trace (got --pattern %s)", pat)
			return
		}
		s := loadgen.Spec{Pattern: pat, Rate: o.rate, Duration: o.duration, Seed: o.seed}
		if tr, err = loadgen.Generate(s); err != nil {
			return
		}
		spec = fmt.Sprintf("%s %g/s for %s", pat, o.rate, o.duration)
		if pat == loadgen.Sporadic || pat == loadgen.Sine {
			spec += fmt.Sprintf(" (seed %d)", o.seed)
		}
		if tr.Len() == 0 {
			err = usageErrorf("%s gives no requests: raise --rate or --duration", spec)
			return
		}
	}
	for _, s := range strings.Split(o.modes, ",") {
		mode := manifest.Mode(strings.TrimSpace(s))
		if mode != manifest.Serverless && mode != manifest.Dedicated && mode != manifest.Hybrid {
			err = usageErrorf("--modes: %q is not a mode (serverless, dedicated, hybrid)", s)
			return
		}
		modes = append(modes, mode)
	}
	prices = cost.DefaultPrices()
	if o.prices != "" {
		if prices, err = cost.LoadPrices(o.prices); err != nil {
			return
		}
	}
	target = loadgen.Target{Path: "/" + strings.TrimLeft(o.path, "/"), Method: o.method, Header: http.Header{}}
	if o.data != "" {
		if target.Body, err = readData(o.data); err != nil {
			return
		}
		target.Header.Set("Content-Type", "application/json")
	}
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			err = usageErrorf("--header %q: want Name: value", h)
			return
		}
		target.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return
}

func benchCmd() *cobra.Command {
	var o trafficFlags
	var jsonOut, htmlOut, saveTrace, backendName string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "bench -f MANIFEST [--pattern P --rate R --duration D | --trace FILE] [--modes serverless,dedicated]",
		Short: "Run a model under each mode on the same traffic and compare latency and cost",
		Long: `Run a model under each mode on the same traffic and compare latency and cost.

Each mode gets a tandem serve of its own (this binary, on free loopback ports,
with a fresh data directory). The manifest is deployed in that mode (serverless
with scaling.min 0, dedicated with at least 1), the traffic is sent open loop
through the gateway (requests leave on schedule whether or not earlier ones
returned), and instance time and cost come from the server's cost meter.

Patterns: constant (evenly spaced), steps (rate/4 up to rate in four steps),
burst (each quarter's requests in its first tenth), sporadic (Poisson arrivals:
long idle gaps at low rates), sine (a day compressed into --duration), trace
(a CSV file of seconds[,path[,payload]]).`,
		Example: `  tandem bench -f model.yaml --pattern sporadic --rate 0.05 --duration 3m
  tandem bench -f model.yaml --trace requests.csv --json report.json --html report.html
  tandem bench -f model.yaml --pattern burst --rate 20 --dry-run --save-trace burst.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, tr, spec, modes, prices, target, err := o.load(cmd)
			if err != nil {
				return err
			}
			if saveTrace != "" {
				if err := tr.Save(saveTrace); err != nil {
					return err
				}
			}
			if dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d requests over %s, modes %s\n", spec, tr.Len(), max(o.duration, tr.Duration()), o.modes)
				return nil
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := bench.Config{
				Binary: self, Manifest: m, ManifestPath: o.file, Modes: modes, Trace: tr, Pattern: spec,
				Duration: o.duration, Target: target, Prices: prices, Tick: o.tick, Progress: cmd.ErrOrStderr(),
			}
			if backendName != "" {
				cfg.ServerArgs = []string{"--backend", backendName}
			}
			// Ctrl-C stops the servers bench started (they run in process
			// groups of their own) before bench exits.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, cfg)
			if rep != nil && len(rep.Modes) > 0 {
				fmt.Fprintln(cmd.OutOrStdout())
				if werr := bench.WriteTable(cmd.OutOrStdout(), rep); werr != nil && err == nil {
					err = werr
				}
			}
			if err != nil {
				return err
			}
			if jsonOut != "" {
				if err := writeFile(jsonOut, cmd, func(f *os.File) error { return bench.WriteJSON(f, rep) }); err != nil {
					return err
				}
			}
			if htmlOut != "" {
				if err := writeFile(htmlOut, cmd, func(f *os.File) error { return bench.WriteHTML(f, rep) }); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	o.register(f, "the servers' --autoscale-interval")
	f.StringVar(&jsonOut, "json", "", "write the report as JSON to FILE (- for standard output)")
	f.StringVar(&htmlOut, "html", "", "write a self-contained HTML report with charts to FILE")
	f.StringVar(&saveTrace, "save-trace", "", "write the requests sent as a trace file (for tandem recommend --trace)")
	f.StringVar(&backendName, "backend", "", "the servers' default backend (--backend of tandem serve)")
	f.BoolVar(&dryRun, "dry-run", false, "only say what would be sent (and write --save-trace)")
	return cmd
}

// writeFile writes to path, or to standard output for "-".
func writeFile(path string, cmd *cobra.Command, write func(f *os.File) error) error {
	if path == "-" {
		return write(os.Stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
