package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"tandem/internal/loadgen"
	"tandem/internal/recommend"
)

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for the terminal.
func WriteTable(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "model %s, %s: %d requests over %s\n\n", r.Model, r.Pattern, r.Requests,
		time.Duration(r.Duration*float64(time.Second)).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\terrors\tp50\tp95\tp99\tmax\tcold starts\tcold p50\tinstance-s\tbusy\tidle\tcost\tper 1k\tidle cost\t")
	for _, m := range r.Modes {
		coldP50 := "-"
		if m.ColdStarts > 0 {
			coldP50 = fmtMS(m.ColdLatency.P50)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			m.Mode, m.Requests, m.Errors, fmtMS(m.Latency.P50), fmtMS(m.Latency.P95), fmtMS(m.Latency.P99), fmtMS(m.Latency.Max),
			m.ColdStarts, coldP50, Seconds(m.InstanceSeconds), Seconds(m.ByState.Busy), Seconds(m.ByState.Idle),
			money(m.CostTotal, r.Currency), money(m.CostPer1K, r.Currency), money(m.CostIdle, r.Currency))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range r.Modes {
		for _, e := range m.ErrorSamples {
			fmt.Fprintf(w, "%s error: %s\n", m.Mode, e)
		}
	}
	return nil
}

// Seconds writes instance-seconds with the precision their size needs:
// 1234, 12.3, 0.042.
func Seconds(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func money(v float64, currency string) string { return recommend.FormatMoney(v, currency) }

// fmtMS writes milliseconds as a short duration: 2.13ms, 412ms, 1.2s.
func fmtMS(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}

// bar shows a mode's progress: on a terminal a progress bar
// (schollz/progressbar) redrawn from the load generator's counters;
// elsewhere a line at the start and one at the end.
type bar struct {
	w     io.Writer
	pb    *progressbar.ProgressBar
	done  chan struct{}
	wg    sync.WaitGroup
	label string
	p     *loadgen.Progress
	start time.Time
}

func startBar(w io.Writer, label string, total int, d time.Duration, p *loadgen.Progress) *bar {
	b := &bar{w: w, done: make(chan struct{}), label: label, p: p, start: time.Now()}
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(w, "%s: sending %d requests over %s\n", label, total, d)
		return b
	}
	b.pb = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetWidth(30),
		progressbar.OptionSetDescription(fmt.Sprintf("%-10s", label)), progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("requests"), progressbar.OptionShowIts(), progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			b.update()
			select {
			case <-b.done:
				return
			case <-t.C:
			}
		}
	}()
	return b
}

// update moves the bar to the generator's counters; the errors so far go
// in its description.
func (b *bar) update() {
	if e := b.p.Errors.Load(); e > 0 {
		b.pb.Describe(fmt.Sprintf("%-10s %d errors", b.label, e))
	}
	b.pb.Set64(b.p.Done.Load())
}

func (b *bar) stop() {
	if b.w == nil {
		return
	}
	close(b.done)
	b.wg.Wait()
	if b.pb != nil {
		b.update()
		b.pb.Exit() // the bar stays as it is, even short of its total
		fmt.Fprintln(b.w)
		return
	}
	fmt.Fprintf(b.w, "%s: %d requests answered, %d errors, in %s\n", b.label, b.p.Done.Load(), b.p.Errors.Load(), time.Since(b.start).Round(time.Millisecond))
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
