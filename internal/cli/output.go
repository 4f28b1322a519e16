package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Output formats of -o/--output. The empty format is the human one (a
// table or a description).
const (
	formatJSON = "json"
	formatYAML = "yaml"
	formatWide = "wide"
)

// Output is a command's -o/--output flag: how to print the resource it got.
// JSON is the control API's JSON as it came; YAML is the same data (field
// names kept, as kubectl does); wide is the table with more columns.
//
// A command gets one with addOutput and prints through Print:
//
//	out := addOutput(cmd, true)
//	cmd.RunE = func(...) error {
//		list, err := ...
//		return out.Print(cmd.OutOrStdout(), list, func(w io.Writer, wide bool) error { ... })
//	}
type Output struct {
	format formatValue
	json   bool // the deprecated --json
}

// addOutput gives cmd -o/--output (json, yaml, and wide when the command's
// table has more columns to show) and keeps its old --json as a deprecated
// alias of -o json, for scripts written before -o.
func addOutput(cmd *cobra.Command, wide bool) *Output {
	o := &Output{format: formatValue{allowed: []string{formatJSON, formatYAML}}}
	if wide {
		o.format.allowed = append(o.format.allowed, formatWide)
	}
	f := cmd.Flags()
	f.VarP(&o.format, "output", "o", "output format: "+strings.Join(o.format.allowed, ", ")+" (default: a table for people)")
	f.BoolVar(&o.json, "json", false, "print JSON")
	f.MarkDeprecated("json", "use -o json")
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(o.format.allowed, cobra.ShellCompDirectiveNoFileComp))
	return o
}

// Format is the format asked for: json, yaml, wide, or "" for the default.
func (o *Output) Format() string {
	if o.format.value == "" && o.json {
		return formatJSON
	}
	return o.format.value
}

// Print writes v as JSON or YAML when one was asked for; otherwise it calls
// table, which writes the human form (wide: -o wide was asked for).
func (o *Output) Print(w io.Writer, v any, table func(w io.Writer, wide bool) error) error {
	switch o.Format() {
	case formatJSON:
		return printJSON(w, v)
	case formatYAML:
		return printYAML(w, v)
	default:
		return table(w, o.Format() == formatWide)
	}
}

// Write writes v as JSON or YAML and reports true when one of them was
// asked for; for the human formats it writes nothing and reports false.
// Commands whose human form needs more than v use it before drawing:
//
//	if done, err := out.Write(cmd.OutOrStdout(), v); done {
//		return err
//	}
func (o *Output) Write(w io.Writer, v any) (bool, error) {
	switch o.Format() {
	case formatJSON, formatYAML:
		return true, o.Print(w, v, nil)
	}
	return false, nil
}

// printYAML writes v as YAML by way of its JSON, so that the field names and
// omissions are the API's (sigs.k8s.io/yaml, as kubectl does).
func printYAML(w io.Writer, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// formatValue is a flag value that refuses formats the command does not
// print, while the flags are parsed: `-o xml` is a usage error (exit 2)
// reported before anything is asked of the server.
type formatValue struct {
	value   string
	allowed []string
}

func (f *formatValue) String() string { return f.value }
func (f *formatValue) Type() string   { return "format" }

func (f *formatValue) Set(s string) error {
	if !slices.Contains(f.allowed, s) {
		return fmt.Errorf("want one of %s", strings.Join(f.allowed, ", "))
	}
	f.value = s
	return nil
}

// cell is s as one table cell: its first line, "-" when empty.
func cell(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if s = strings.TrimSpace(s); s == "" {
		return "-"
	}
	return s
}

// sinceText is how long ago t was, to the second ("-" for the zero time).
func sinceText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}
