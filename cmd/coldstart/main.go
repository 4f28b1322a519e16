// Command coldstart measures what tandem adds to a cold start on the
// process backend (tandem issue 2, "Benchmarks").
//
// It times two things, alternating them round by round so that a busy
// moment of a shared machine hits both alike:
//
//   - the instance's own exec-to-ready time: exec the model program with a
//     free PORT and poll its health path as fast as possible (a busy loop of
//     connect and GET; -poll puts a pause between tries), from just before
//     exec to the first 200;
//   - the first answer through tandem from zero: `tandem serve` (started
//     here, with a short autoscale interval) runs a serverless deployment of
//     the same program with a 1 s idle timeout; each round waits until the
//     deployment's status shows no instance at all, then times one GET
//     through the gateway on an open connection, from sending it to having
//     read the whole answer, and checks X-Tandem-Cold-Start: true.
//
// The overhead is the difference of the medians. It also scrapes the admin
// /metrics before and after the rounds and prints the mean of each phase of
// tandem_instance_start_phase_seconds (and of the queue wait), so that the
// overhead can be placed.
//
//	coldstart -tandem bin/tandem -model bin/fakemodel -n 20
//
// bench/coldstart.sh builds the programs and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coldstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Tandem, "tandem", "", "the tandem binary to measure (required)")
	fs.StringVar(&cfg.Model, "model", "", "the instance program, such as bin/fakemodel (required); it must serve HTTP on $PORT")
	fs.StringVar(&cfg.Health, "health", "/health", "the program's readiness path")
	fs.StringVar(&cfg.Path, "path", "/pid", "the path requested through the gateway")
	fs.DurationVar(&cfg.Poll, "poll", 0, "pause between readiness polls of the program alone (0: a busy loop, which on a small busy machine takes CPU from the starting program)")
	fs.IntVar(&cfg.Rounds, "n", 20, "rounds (one exec-to-ready run and one cold request each)")
	fs.DurationVar(&cfg.Tick, "autoscale-interval", 100*time.Millisecond, "tandem serve --autoscale-interval")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", time.Second, "the deployment's scaling.idle_timeout")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "where tandem's data folder and logs go (default: a new temporary folder, removed at the end)")
	target := fs.Duration("target", 5*time.Millisecond, "the overhead to compare against (-functions: the first answer with a template, default 50ms)")
	examples := fs.String("functions", "", "time the seeds' Python examples under this examples folder instead (iris Lambda handler and Flask app, with and without runtime.template); -model is not used")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *examples != "" && cfg.Tandem != "" && cfg.Rounds >= 1 {
		cfg.Progress = stderr
		if !isSet(fs, "target") {
			*target = 50 * time.Millisecond
		}
		res, err := MeasureFunctions(ctx, cfg, *examples)
		if err != nil {
			fmt.Fprintln(stderr, "coldstart:", err)
			return 1
		}
		res.Print(stdout, *target)
		return 0
	}
	if cfg.Tandem == "" || cfg.Model == "" || cfg.Rounds < 1 {
		fmt.Fprintln(stderr, "coldstart: -tandem and -model are required, and -n must be at least 1")
		fs.Usage()
		return 2
	}
	cfg.Progress = stderr
	res, err := Measure(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "coldstart:", err)
		return 1
	}
	res.Print(stdout, *target)
	return 0
}

// isSet reports whether the flag name was given.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
